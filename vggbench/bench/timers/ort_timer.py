"""A bare onnxruntime InferenceSession, timed with time.perf_counter: what `vggbench run --cross-check` holds an
onnxruntime row against. No vggbench here (run it with `python -I`): onnxruntime and numpy only.

    python -I ort_timer.py MODEL.onnx --batch 8 --image-size 224 [--threads 2] [--optimization all]
        [--no-nchwc] [--no-nhwc]
        [--device cpu|cuda:0] [--provider cpu|cuda|tensorrt] [--warmup 1] [--warmup-time 1] [--time 3]

Prints one JSON line: images_per_s (batch / median), median_ms, iterations, timed_s, the onnxruntime version and
the session's providers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
          "all": "ORT_ENABLE_ALL"}
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--image-size", type=int, required=True)
    parser.add_argument("--threads", type=int, help="intra-op threads [default: onnxruntime's]")
    parser.add_argument("--optimization", choices=list(LEVELS), default="all")
    parser.add_argument("--execution-mode", choices=["sequential", "parallel"], default="sequential")
    parser.add_argument("--no-spinning", action="store_true", help="intra-op threads do not spin between calls")
    parser.add_argument("--no-memory-arena", action="store_true", help="no CPU memory arena")
    parser.add_argument("--no-nchwc", action="store_true", help="CPU: no NCHWc layout for fp32 convolutions")
    parser.add_argument("--no-nhwc", action="store_true", help="CPU: no NHWC layout for int8 convolutions")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--provider", choices=list(PROVIDERS), default="cpu")
    parser.add_argument("--cudnn-conv-algo-search", default="EXHAUSTIVE")
    parser.add_argument("--tf32", action="store_true", help="CUDA: TF32 convolutions and matmuls")
    parser.add_argument("--cuda-graph", action="store_true", help="CUDA: capture the session as a CUDA graph")
    parser.add_argument("--fp16", action="store_true", help="TensorRT provider: fp16 engine")
    parser.add_argument("--trt-optimization-level", type=int, default=3, choices=range(6),
                        help="TensorRT provider: the builder's optimisation level")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--warmup-time", type=float, default=1.0)
    parser.add_argument("--time", type=float, default=3.0)
    parser.add_argument("--min-iters", type=int, default=5)
    parser.add_argument("--max-iters", type=int, default=1000)
    return parser.parse_args(argv)


def providers(args) -> list:
    index = int(args.device.partition(":")[2] or 0)
    cuda = {"device_id": index, "cudnn_conv_algo_search": args.cudnn_conv_algo_search, "use_tf32": int(args.tf32)}
    if args.cuda_graph:
        cuda["enable_cuda_graph"] = 1
    if args.provider == "cuda":
        return [(PROVIDERS["cuda"], cuda)]
    if args.provider == "tensorrt":
        return [(PROVIDERS["tensorrt"], {"device_id": index, "trt_fp16_enable": args.fp16,
                                         "trt_builder_optimization_level": args.trt_optimization_level}),
                (PROVIDERS["cuda"], {"device_id": index})]
    return [PROVIDERS["cpu"]]


def session(args) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[args.optimization])
    options.execution_mode = getattr(ort.ExecutionMode, f"ORT_{args.execution_mode.upper()}")
    options.enable_cpu_mem_arena = not args.no_memory_arena
    options.add_session_config_entry("session.intra_op.allow_spinning", "0" if args.no_spinning else "1")
    disabled = ["NchwcTransformer"] * args.no_nchwc + ["NhwcTransformer"] * args.no_nhwc
    if disabled:  # the layout rewrites of optimisation level all, by their graph transformers' names
        options.add_session_config_entry("optimization.disable_specified_optimizers", ";".join(disabled))
    if args.threads:
        options.intra_op_num_threads = args.threads
    made = ort.InferenceSession(args.model, options, providers=providers(args))
    if made.get_providers()[0] != PROVIDERS[args.provider]:  # onnxruntime falls back to the CPU without a word
        sys.exit(f"error: onnxruntime could not start {PROVIDERS[args.provider]} (it runs "
                 f"{', '.join(made.get_providers())})")
    return made


def call(made: ort.InferenceSession, args):
    """The call to time: the session's run on one batch; on a GPU with the input and output bound on the device,
    so that no copy is timed."""
    inp, out = made.get_inputs()[0], made.get_outputs()[0]
    x = np.random.default_rng(0).standard_normal((args.batch, 3, args.image_size, args.image_size))
    x = x.astype(DTYPES[inp.type])
    if args.provider == "cpu":
        return lambda: made.run([out.name], {inp.name: x})
    index = int(args.device.partition(":")[2] or 0)
    value = ort.OrtValue.ortvalue_from_numpy(x, "cuda", index)
    binding = made.io_binding()
    binding.bind_ortvalue_input(inp.name, value)
    run_options = None
    if args.cuda_graph:  # a graph replays fixed addresses: the output gets its own buffer
        shape = [args.batch, *out.shape[1:]]
        output = ort.OrtValue.ortvalue_from_shape_and_type(shape, x.dtype.type, "cuda", index)
        binding.bind_ortvalue_output(out.name, output)
        run_options = ort.RunOptions()
        run_options.add_run_config_entry("gpu_graph_id", str(args.batch))
    else:
        binding.bind_output(out.name, "cuda", index)
    return lambda: made.run_with_iobinding(binding, run_options)


def time_calls(step, args) -> list[float]:
    """The deploy script's timing loop (a first call, warm-up, then calls timed one by one), loaded by path: both
    scripts run alone under `python -I`, where a sibling cannot be imported by name."""
    spec = importlib.util.spec_from_file_location("deploy_run", Path(__file__).with_name("deploy_run.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.time_calls(step, args)


def main(argv=None) -> None:
    args = arguments(argv)
    made = session(args)
    samples = time_calls(call(made, args), args)
    median = statistics.median(samples)
    print(json.dumps({"images_per_s": args.batch / median, "median_ms": median * 1e3, "iterations": len(samples),
                      "timed_s": sum(samples), "onnxruntime": ort.__version__, "providers": made.get_providers()}))


if __name__ == "__main__":
    main()
