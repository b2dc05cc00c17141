"""torch.utils.benchmark.Timer on one of a row's torch paths, in a fresh process: what `vggbench run
--cross-check` holds eager, compile, torchscript, pt2 and winograd rows against. Prints one JSON line.

    python -I torch_timer.py --artifact torchscript|pt2 --path FILE COMMON
        the exported file as torch loads it (torch.jit.load, torch.export.load); no vggbench in the process
    python -m vggbench.bench.timers.torch_timer --build eager|compile|winograd --model NAME --model-settings JSON
        [--dense-size N] [--compile-mode MODE] [--compile-freezing] [--plan PLAN] COMMON
        the model rebuilt by vggbench's load_model from the row's settings (its dense form, its Winograd layers),
        then run by torch itself (winograd: by vggbench's runner, the only one there is, with the row's tuned
        --plan, as its notes give it, rather than one tuned again here)
    COMMON: --batch B --image-size N --device cpu --precision fp32 --memory-format contiguous --threads T
        [--tf32] [--cudnn-benchmark on|off] [--warmup 1] [--warmup-time 1] [--time 3] [--min-iters 5]

A first call (compile and winograd tune there), warm-up calls, then Timer.blocked_autorange for --time seconds,
and more of its blocks until --min-iters calls are timed; images_per_s is the batch over the blocks' median.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import time

import torch
from torch.utils import benchmark

# precision -> (autocast dtype, weight and input dtype), as vggbench runs them
PRECISIONS = {"fp32": (None, torch.float32), "amp": (torch.float16, torch.float32),
              "bf16": (torch.bfloat16, torch.float32), "fp16": (None, torch.float16)}
MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--artifact", choices=("torchscript", "pt2"))
    what.add_argument("--build", choices=("eager", "compile", "winograd"))
    parser.add_argument("--path", help="--artifact: the exported file")
    parser.add_argument("--model", help="--build: the model's name")
    parser.add_argument("--model-settings", default="{}", help="--build: vggbench ModelSettings as JSON")
    parser.add_argument("--dense-size", type=int, help="--build: the dense form made at this size")
    parser.add_argument("--compile-mode")
    parser.add_argument("--compile-freezing", action="store_true")
    parser.add_argument("--plan", help="--build winograd: the row's tuned plan (its notes)")
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--image-size", type=int, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=list(PRECISIONS), default="fp32")
    parser.add_argument("--memory-format", choices=list(MEMORY_FORMATS), default="contiguous")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--tf32", action="store_true")
    parser.add_argument("--cudnn-benchmark", choices=("on", "off"))
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--warmup-time", type=float, default=1.0)
    parser.add_argument("--time", type=float, default=3.0)
    parser.add_argument("--min-iters", type=int, default=1, help="at least this many calls timed")
    args = parser.parse_args(argv)
    if (args.artifact and not args.path) or (args.build and not args.model):
        parser.error("--artifact needs --path, --build needs --model")
    return args


def artifact_module(args) -> torch.nn.Module:
    if args.artifact == "torchscript":
        return torch.jit.load(args.path, map_location=args.device)
    return torch.export.load(args.path).module()


def built_module(args) -> torch.nn.Module:
    from vggbench.core.settings import from_mapping
    from vggbench.zoo.settings import ModelSettings

    module = from_mapping(ModelSettings, json.loads(args.model_settings), "--model-settings").load(args.model).module
    if args.dense_size:
        from vggbench.zoo.dense import dense_model

        module = dense_model(module, args.dense_size)
    return module.eval()


def step(args):
    """The call to time, on one batch already on the device."""
    autocast, dtype = PRECISIONS[args.precision]
    memory_format = MEMORY_FORMATS[args.memory_format]
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=torch.Generator().manual_seed(0))
    x = x.to(args.device, dtype).contiguous(memory_format=memory_format)
    if args.build == "winograd":
        from vggbench.backends import make_runner, resolve_target

        runner = make_runner(resolve_target("winograd", args.device, args.precision, args.memory_format),
                             built_module(args))
        if args.plan:
            runner.follow(tuple(x.shape), args.plan)
        return lambda: runner.run(x)
    if args.artifact:
        module = artifact_module(args).to(args.device).to(memory_format=memory_format)
    else:
        module = built_module(args).to(args.device, dtype).to(memory_format=memory_format)
        if args.build == "compile":
            module = torch.compile(module, mode=args.compile_mode, dynamic=False,
                                   options={"freezing": True} if args.compile_freezing else None)
    kind = torch.device(args.device).type

    def call():
        with torch.inference_mode(), (torch.autocast(kind, dtype=autocast) if autocast
                                      else contextlib.nullcontext()):
            return module(x)

    return call


def usage_since(before, after, calls: int) -> dict:
    """Over `calls` calls (the timed ones and Timer's calibration), as a row records them: page faults a call and
    the kernel's share of the CPU time, every thread of the process (vggbench.core.allocator.Usage, which this
    file cannot import under -I)."""
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    faults = after.ru_minflt - before.ru_minflt + after.ru_majflt - before.ru_majflt
    return {"faults_per_call": faults / max(calls, 1),
            "kernel_pct": system / (user + system) * 100 if user + system > 0 else None}


def main(argv=None) -> None:
    args = arguments(argv)
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
        if args.cudnn_benchmark:
            torch.backends.cudnn.benchmark = args.cudnn_benchmark == "on"
    call = step(args)
    call()  # compile and winograd's tuning happen here
    start, warm = time.perf_counter(), 0
    while warm < args.warmup or time.perf_counter() - start < args.warmup_time:
        call()
        warm += 1
    calls = [0]  # every call from here on, Timer's calibration included: what the usage is divided by

    def counted():
        calls[0] += 1
        return call()

    timer = benchmark.Timer(stmt="call()", globals={"call": counted}, num_threads=args.threads)
    before = resource.getrusage(resource.RUSAGE_SELF)
    m = timer.blocked_autorange(min_run_time=args.time)
    number, blocks = m.number_per_run, list(m.raw_times)
    # a slow call leaves few blocks in --time (VGG16 at batch 8: two or three in 3 s): the count is a budget too
    while number * len(blocks) < args.min_iters:
        blocks += timer.timeit(number).raw_times
    used = usage_since(before, resource.getrusage(resource.RUSAGE_SELF), calls[0])
    median = statistics.median(blocks) / number
    print(json.dumps({"images_per_s": args.batch / median, "median_ms": median * 1e3,
                      "iterations": number * len(blocks), "timed_s": sum(blocks), **used,
                      "torch": torch.__version__, "timer": "torch.utils.benchmark.Timer.blocked_autorange"}))


if __name__ == "__main__":
    main()
