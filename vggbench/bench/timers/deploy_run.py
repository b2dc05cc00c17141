"""The script of a `vggbench deploy` folder: loads the artifact with its runtime alone (onnxruntime, openvino or
torch; no vggbench), checks the file's sha256, compares its outputs on the reference inputs with the reference
outputs within the precision's tolerance, and times it.

    python run.py [--time 3] [--warmup-time 1] [--min-iters 5] [--max-iters 1000] [--out result.json]

Prints one JSON line: passed, max_abs, cosine, top-1 agreement, images_per_s (batch / median call), median_ms,
the row's images/s it was deployed from, the runtime's version and whether vggbench was imported. Exit 1 when the
sha256 or the outputs do not match, or the artifact is refused (safe_load.py, vggbench's own gate: nothing that
could run code when loaded is opened); 2 on a bad option.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


MAX_SECONDS, MAX_CALLS = 3600.0, 10**6  # bounds on what is asked, so that no value makes the timing endless


def _bounded(kind, low, high):
    def parse(text: str):
        value = kind(text)
        if not (isinstance(value, int) or math.isfinite(value)) or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in [{low:g}, {high:g}], got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its message
    return parse


def arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=_bounded(int, 0, MAX_CALLS), default=1)
    parser.add_argument("--warmup-time", type=_bounded(float, 0, MAX_SECONDS), default=1.0)
    parser.add_argument("--time", type=_bounded(float, 0, MAX_SECONDS), default=3.0)
    parser.add_argument("--min-iters", type=_bounded(int, 1, MAX_CALLS), default=5)
    parser.add_argument("--max-iters", type=_bounded(int, 1, MAX_CALLS), default=1000)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.min_iters > args.max_iters:
        parser.error(f"--min-iters {args.min_iters} is more than --max-iters {args.max_iters}")
    return args


def inspect(config: dict) -> Path:
    """The artifact's path once every file of it is a plain file of this folder with its deployed sha256 and the
    main file passes vggbench's gate (safe_load.py beside this script): a ValueError saying why not otherwise."""
    files = config["artifact"]["files"]
    names = [entry["file"] for entry in files]
    if config["artifact"]["file"] not in names:
        raise ValueError(f"config.json's artifact {config['artifact']['file']!r} is not one of its files")
    spec = importlib.util.spec_from_file_location("vggbench_deploy_gate", HERE / "safe_load.py")
    if spec is None or not (HERE / "safe_load.py").is_file():
        raise ValueError("safe_load.py is missing: the artifact cannot be checked before it is loaded")
    gate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gate)
    for entry in files:  # the main file and its external data, if any
        path = HERE / entry["file"]
        try:
            gate.check_regular_file(path, HERE)
        except gate.ArtifactError as e:
            raise ValueError(str(e)) from None
        found = sha256(path)
        if found != entry["sha256"]:
            raise ValueError(f"{entry['file']} has sha256 {found}, not the deployed {entry['sha256']}")
    path = HERE / config["artifact"]["file"]
    check = {".pt2": gate.check_pt2, ".ts": gate.check_torchscript}.get(path.suffix)
    try:
        if check is not None:
            check(path)
    except gate.ArtifactError as e:
        raise ValueError(str(e)) from None
    return path


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def onnxruntime_call(config: dict, path: Path, x: np.ndarray):
    import onnxruntime as ort

    runtime = config["runtime_config"]
    options = ort.SessionOptions()
    enums = {"graph_optimization_level": ort.GraphOptimizationLevel, "execution_mode": ort.ExecutionMode}
    for name, value in runtime["session_options"].items():
        setattr(options, name, getattr(enums[name], value) if name in enums else value)
    for key, value in runtime["session_config"].items():
        options.add_session_config_entry(key, value)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name, output = session.get_inputs()[0].name, session.get_outputs()[0].name
    return (lambda: session.run([output], {name: x})[0]), f"onnxruntime {ort.__version__}"


def openvino_call(config: dict, path: Path, x: np.ndarray):
    import openvino as ov

    runtime = config["runtime_config"]
    core = ov.Core()
    model = core.read_model(str(path))
    throughput = runtime["throughput"]
    if runtime["static_batch"]:  # compiled for the batch fixed (THROUGHPUT: one image a request)
        model.reshape({0: [1 if throughput else x.shape[0], *x.shape[1:]]})
    compiled = core.compile_model(model, "CPU", runtime["compile_config"])
    version = f"openvino {ov.__version__}"
    if not throughput:
        request = compiled.create_infer_request()
        return (lambda: np.array(request.infer({0: x}, share_inputs=True)[0])), version
    queue = ov.AsyncInferQueue(compiled, runtime["requests"] or int(compiled.get_property(
        "OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
    classes = [d.get_length() for d in list(compiled.outputs[0].get_partial_shape())[1:]]  # the batch may be dynamic
    out = np.empty((x.shape[0], *classes), np.float32)

    def done(request, index: int) -> None:
        out[index] = request.get_output_tensor(0).data[0]

    queue.set_callback(done)

    def call():
        for i in range(x.shape[0]):
            queue.start_async({0: x[i:i + 1]}, i, share_inputs=True)
        queue.wait_all()
        return out.copy()

    return call, version


def torch_call(config: dict, path: Path, x: np.ndarray):
    import torch

    runtime = config["runtime_config"]
    if runtime.get("threads"):
        torch.set_num_threads(runtime["threads"])
    if path.suffix == ".pt2":  # exported in eval mode: the graph has no train/eval switch
        module = torch.export.load(str(path)).module()
    else:  # TorchScript: code and tensors of its own format, no pickled Python objects
        module = torch.jit.load(str(path), map_location="cpu").eval()
    tensor = torch.from_numpy(x)
    if runtime["memory_format"] == "channels_last":
        tensor = tensor.contiguous(memory_format=torch.channels_last)

    def call():
        with torch.inference_mode():
            return module(tensor).float().numpy()

    return call, f"torch {torch.__version__}"


CALLS = {"onnxruntime": onnxruntime_call, "openvino": openvino_call, "torch": torch_call}


def compare(expected: np.ndarray, got: np.ndarray, tolerance: dict) -> dict:
    """What vggbench's parity check judges (vggbench.parity.metrics.compare): every logit within atol + rtol x
    |reference| (atol: range_atol x the reference's largest magnitude), the worst image's cosine, and where the
    precision is judged by classes (int8) the top-1 agreement."""
    ref, out = expected.astype(np.float64), got.astype(np.float64)
    diff = np.abs(out - ref)
    cosine = float(np.min(np.sum(ref * out, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1))))
    agreement = float(np.mean(ref.argmax(1) == out.argmax(1)))
    reasons = []
    if not np.isfinite(out).all():
        reasons.append("output has NaN/Inf")
    if tolerance["range_atol"] is not None:
        atol = tolerance["range_atol"] * float(np.abs(ref).max())
        if not bool((diff <= atol + tolerance["rtol"] * np.abs(ref)).all()):
            reasons.append(f"max abs diff {diff.max():.3g} exceeds atol {atol:.3g} + rtol {tolerance['rtol']:g} x |ref|")
    if not cosine >= tolerance["min_cosine"]:
        reasons.append(f"cosine {cosine:.6f} < {tolerance['min_cosine']}")
    if tolerance["min_top1"] is not None and not agreement >= tolerance["min_top1"]:
        reasons.append(f"top-1 agreement {agreement:.1%} < {tolerance['min_top1']:.0%}")
    return {"passed": not reasons, "reason": "; ".join(reasons) or "ok", "max_abs": float(diff.max()),
            "cosine": cosine, "top1_agreement": agreement}


def time_calls(step, args) -> list[float]:
    """A first call, warm-up (at least --warmup calls and --warmup-time seconds), then calls timed one by one until
    --time seconds and --min-iters calls are done, at most --max-iters. (The cross-check's bare onnxruntime timer
    times with this too.)"""
    step()
    start, warm = time.perf_counter(), 0
    while warm < args.warmup or time.perf_counter() - start < args.warmup_time:
        step()
        warm += 1
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < args.max_iters and (len(samples) < args.min_iters or time.perf_counter() - start < args.time):
        t0 = time.perf_counter()
        step()
        samples.append(time.perf_counter() - t0)
    return samples


def refused(reason: str) -> int:
    print(json.dumps({"passed": False, "reason": reason}))
    return 1


def main(argv=None) -> int:
    args = arguments(argv)
    try:
        config = json.loads((HERE / "config.json").read_text(encoding="utf-8"))
        if config.get("runtime") not in CALLS:
            return refused(f"config.json names the runtime {config.get('runtime')!r}, not one of {', '.join(CALLS)}")
        path = inspect(config)
        x = np.load(HERE / "input.npy", allow_pickle=False)
        expected = np.load(HERE / "expected.npy", allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError) as e:  # a file missing, swapped or edited: said, not raised
        return refused(f"this deploy folder cannot be run: {type(e).__name__}: {e}")
    call, version = CALLS[config["runtime"]](config, path, x)
    got = call()
    if got.shape != expected.shape:
        return refused(f"the outputs have shape {list(got.shape)}, the references {list(expected.shape)}")
    result = compare(expected, got, config["tolerance"])
    samples = time_calls(call, args)
    median = statistics.median(samples)
    result |= {"images_per_s": x.shape[0] / median, "median_ms": median * 1e3, "iterations": len(samples),
               "measured_images_per_s": config["measured"]["images_per_s"], "runtime": version,
               "batch_size": int(x.shape[0]), "vggbench_imported": "vggbench" in sys.modules}
    text = json.dumps(result)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
