"""The machine's measured ceiling: the rate of one large square matmul on a device and dtype.

`peak_pct` in the results is a model's GFLOP/s as a share of this number. It is a measured rate under
this run's thread count and numeric flags (TF32 on CUDA), not a datasheet figure; a backend with better
kernels than torch's GEMM can exceed 100%.
"""

from __future__ import annotations

import functools
import time

import torch

from ..core.device import parse_device
from ..core.timing import make_timer

# the dtype a precision's matmuls run in; int8 (onnxruntime quantised) has no torch GEMM to compare with
PEAK_DTYPES = {"fp32": torch.float32, "amp": torch.float16, "bf16": torch.bfloat16, "fp16": torch.float16}
MAX_SIZE = {"cpu": 4096, "cuda": 8192}
MIN_CALL_S = 0.08  # grow the matrices until one matmul takes this long (or MAX_SIZE)


def measure_peak(device: str, precision: str, reps: int = 3, min_call_s: float = MIN_CALL_S,
                 max_size: int | None = None) -> dict | None:
    """GFLOP/s of an n x n x n matmul (2 n^3 FLOPs), best of `reps` after warm-up calls; n doubles from
    256 until one call takes `min_call_s`, so a slow dtype (fp16 on most CPUs) stays quick to measure.
    None for a precision without a torch GEMM (int8)."""
    dtype = PEAK_DTYPES.get(precision)
    if dtype is None:
        return None
    cuda = parse_device(device).is_cuda
    max_size = max_size or MAX_SIZE["cuda" if cuda else "cpu"]
    timer = make_timer(device, lambda: torch.cuda.synchronize(device) if cuda else None)
    generator = torch.Generator(device).manual_seed(0)  # not the global RNG
    n = 256
    while True:
        a, b = (torch.randn(n, n, generator=generator, device=device, dtype=dtype) for _ in range(2))
        matmul = functools.partial(torch.mm, a, b)
        matmul()  # the first call at a size pays for library start-up and kernel selection
        if timer.time_ms(matmul)[1] / 1e3 >= min_call_s or n >= max_size:
            break
        n *= 2
    started = time.perf_counter()
    best = min(timer.time_ms(matmul)[1] for _ in range(reps)) / 1e3
    return {"device": device, "precision": precision, "dtype": str(dtype).removeprefix("torch."), "n": n,
            "reps": reps, "threads": torch.get_num_threads(), "gflops_per_s": 2 * n**3 / best / 1e9,
            "seconds": round(time.perf_counter() - started, 3)}
