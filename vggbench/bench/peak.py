"""The ceilings that `peak_pct` and `theoretical_pct` divide by, per device and precision.

Measured ceiling: the best rate seen on that device and precision in the run: several GEMM shapes timed before
the cases (square, and a tall one shaped like a convolution's im2col product), and every row of the run itself.
A backend whose convolution kernels beat torch's GEMM raises the ceiling instead of showing more than 100%, so
`peak_pct` is at most 100 by construction. Theoretical ceiling, where known: the datasheet figure of the GPU
(dense, no sparsity) or, on an x86 CPU, cores x clock x FLOPs per cycle of the widest instructions it has
(AVX-512 / AVX2 FMA, AVX512-BF16, AMX), for the physical cores the run's threads use.
"""

from __future__ import annotations

import functools
import re
import time
from pathlib import Path

import torch

from ..core.device import Device
from ..core.timing import make_timer

# the dtype a precision's matmuls run in; int8 and fp8 (quantised runtimes) have no torch GEMM to compare with
PEAK_DTYPES = {"fp32": torch.float32, "amp": torch.float16, "bf16": torch.bfloat16, "fp16": torch.float16}
MAX_SIZE = {"cpu": 4096, "cuda": 8192}
MIN_CALL_S = 0.08  # grow the matrices until one matmul takes this long (or MAX_SIZE)


def _rate(timer, m: int, k: int, n: int, dtype, device: torch.device, generator, reps: int) -> float:
    a = torch.randn(m, k, generator=generator, device=device, dtype=dtype)
    b = torch.randn(k, n, generator=generator, device=device, dtype=dtype)
    matmul = functools.partial(torch.mm, a, b)
    matmul()  # the first call at a shape pays for kernel selection
    best = min(timer.time_ms(matmul)[1] for _ in range(reps)) / 1e3
    return 2 * m * k * n / best / 1e9


def measure_peak(device: Device, precision: str, reps: int = 3, min_call_s: float = MIN_CALL_S,
                 max_size: int | None = None) -> dict | None:
    """GFLOP/s of torch GEMMs on `device` in `precision`'s dtype, best of `reps` calls per shape after a warm-up
    call: the square n x n x n with n doubled from 256 until one call takes `min_call_s` (so a slow dtype stays
    quick to measure), the square of half that size, and a tall (8n x n/4) @ (n/4 x n), shaped like a
    convolution as im2col GEMM. `gflops_per_s` is the best of them. None for a precision without a torch GEMM."""
    dtype = PEAK_DTYPES.get(precision)
    if dtype is None:
        return None
    where = device.torch
    max_size = max_size or MAX_SIZE[device.kind]
    timer = make_timer(device, lambda: torch.cuda.synchronize(where) if device.is_cuda else None)
    generator = torch.Generator(where).manual_seed(0)  # not the global RNG
    n = 256
    while True:
        a, b = (torch.randn(n, n, generator=generator, device=where, dtype=dtype) for _ in range(2))
        matmul = functools.partial(torch.mm, a, b)
        matmul()  # the first call at a size pays for library start-up and kernel selection
        if timer.time_ms(matmul)[1] / 1e3 >= min_call_s or n >= max_size:
            break
        n *= 2
    del a, b
    started = time.perf_counter()
    shapes = [(n, n, n), (max(n // 2, 1),) * 3, (8 * n, max(n // 4, 1), n)]
    rates = [{"m": m, "k": k, "n": nn, "gflops_per_s": _rate(timer, m, k, nn, dtype, where, generator, reps)}
             for m, k, nn in shapes]
    best = max(rates, key=lambda r: r["gflops_per_s"])
    return {"device": str(device), "precision": precision, "dtype": str(dtype).removeprefix("torch."), "n": n,
            "reps": reps, "threads": torch.get_num_threads(), "gflops_per_s": best["gflops_per_s"],
            "shape": f"{best['m']}x{best['k']}x{best['n']}", "shapes": rates,
            "seconds": round(time.perf_counter() - started, 3)}


# --- theoretical ceilings ------------------------------------------------------------------------------------

# Dense tensor-core (and fp32 CUDA-core) TFLOP/s from NVIDIA's datasheets, without sparsity; "fp16" and "bf16"
# with fp32 accumulation. Matched against torch.cuda.get_device_name in this order.
GPU_TFLOPS: tuple[tuple[str, str, dict[str, float]], ...] = (
    (r"H100.*PCIe", "NVIDIA H100 PCIe datasheet",
     {"fp32": 51.2, "tf32": 378.0, "fp16": 756.0, "bf16": 756.0, "fp8": 1513.0, "int8": 1513.0}),
    (r"H100(?!.*NVL)", "NVIDIA H100 SXM datasheet",
     {"fp32": 66.9, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4, "fp8": 1978.9, "int8": 1978.9}),
    (r"H200", "NVIDIA H200 SXM datasheet",
     {"fp32": 66.9, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4, "fp8": 1978.9, "int8": 1978.9}),
    (r"A100", "NVIDIA A100 datasheet",
     {"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "bf16": 312.0, "int8": 624.0}),
    (r"\bL4\b", "NVIDIA L4 datasheet",
     {"fp32": 30.3, "tf32": 60.0, "fp16": 121.0, "bf16": 121.0, "fp8": 242.5, "int8": 242.5}),
    (r"RTX 4090", "NVIDIA Ada (RTX 4090) whitepaper",
     {"fp32": 82.6, "tf32": 82.6, "fp16": 165.2, "bf16": 165.2, "fp8": 330.3, "int8": 660.6}),
)
# the number format a precision's heavy layers compute in
COMPUTE_DTYPE = {"fp32": "fp32", "amp": "fp16", "fp16": "fp16", "bf16": "bf16", "int8": "int8", "fp8": "fp8"}


def gpu_theoretical(name: str, precision: str, tf32: bool = False) -> dict | None:
    """The datasheet's dense rate of a known GPU for a precision (fp32 with TF32 allowed: the TF32 rate)."""
    dtype = "tf32" if precision == "fp32" and tf32 else COMPUTE_DTYPE.get(precision)
    for pattern, source, table in GPU_TFLOPS:
        if re.search(pattern, name) and dtype in table:
            return {"gflops_per_s": table[dtype] * 1e3, "source": f"{source}: {table[dtype]:g} dense {dtype} TFLOP/s"}
    return None


def cpu_flops_per_cycle(flags: set[str], vendor: str, family: int | None) -> dict[str, tuple[int, str]]:
    """FLOPs per cycle per core for each compute dtype, from the CPU's instruction set: dtype -> (FLOPs, what).

    fp32 FMA: two pipes of 16 lanes (AVX-512; AMD before Zen 5 runs 512-bit FMAs as two 256-bit halves, so 32),
    or of 8 lanes (AVX2). bf16: AVX512-BF16 dot products do two multiply-adds per fp32 lane (2x fp32); AMX's
    tile unit 1024 bf16 and 2048 int8 operations. int8: VNNI dot products, 4x fp32."""
    found: dict[str, tuple[int, str]] = {}
    if "avx512f" in flags:
        full_width = vendor != "AuthenticAMD" or (family or 0) >= 0x1A  # Zen 5 and later: full 512-bit pipes
        fp32 = (64, "AVX-512, 2 FMA pipes x 16 fp32") if full_width else (32, "AVX-512 on 256-bit FMA pipes (Zen 4)")
    elif "avx2" in flags and "fma" in flags:
        fp32 = (32, "AVX2, 2 FMA pipes x 8 fp32")
    else:
        return found
    found["fp32"] = fp32
    if "amx_bf16" in flags:
        found["bf16"] = (1024, "AMX bf16 tiles")
    elif "avx512_bf16" in flags:
        found["bf16"] = (2 * fp32[0], "AVX512-BF16 dot products")
    if "amx_fp16" in flags:
        found["fp16"] = (1024, "AMX fp16 tiles")
    elif "avx512_fp16" in flags:
        found["fp16"] = (2 * fp32[0], "AVX512-FP16")
    if "amx_int8" in flags:
        found["int8"] = (2048, "AMX int8 tiles")
    elif "avx512_vnni" in flags or "avx_vnni" in flags:
        found["int8"] = (4 * fp32[0], "VNNI int8 dot products")
    return found


def read_cpuinfo(text: str | None = None) -> dict:
    """vendor, family, flags and the highest 'cpu MHz' of /proc/cpuinfo (or of `text`)."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {}
    fields: dict = {"flags": set(), "mhz": None, "vendor": None, "family": None}
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "flags":
            fields["flags"] = set(value.split())
        elif key == "vendor_id":
            fields["vendor"] = value
        elif key == "cpu family" and value.isdigit():
            fields["family"] = int(value)
        elif key == "cpu MHz" and re.fullmatch(r"\d+(\.\d*)?", value):
            fields["mhz"] = max(fields["mhz"] or 0.0, float(value))
    return fields


def cpu_theoretical(precision: str, threads: int, cpuinfo: dict | None = None, max_mhz: float | None = None,
                    physical_cores: int | None = None) -> dict | None:
    """cores x clock x FLOPs per cycle for the run's threads (at most one per physical core counts), or None
    where the instruction set or the clock is unknown. max_mhz: the highest clock (psutil's, when it knows it;
    else /proc/cpuinfo's current one, recorded as such)."""
    import psutil

    info = read_cpuinfo() if cpuinfo is None else cpuinfo
    per_cycle = cpu_flops_per_cycle(info.get("flags") or set(), info.get("vendor") or "", info.get("family"))
    dtype = COMPUTE_DTYPE.get(precision)
    if dtype not in per_cycle:
        return None
    if max_mhz is None:
        freq = psutil.cpu_freq()
        max_mhz = freq.max if freq and freq.max else None
        clock_source = "psutil's maximum clock"
    else:
        clock_source = "the given clock"
    if not max_mhz:
        max_mhz, clock_source = info.get("mhz"), "/proc/cpuinfo's clock (boost may exceed it)"
    if not max_mhz:
        return None
    cores = min(threads, physical_cores or psutil.cpu_count(logical=False) or threads)
    flops, what = per_cycle[dtype]
    rate = cores * max_mhz * 1e6 * flops / 1e9
    return {"gflops_per_s": rate, "source": f"{cores} cores x {max_mhz / 1e3:.2f} GHz ({clock_source}) x {flops} "
                                            f"{dtype} FLOPs/cycle ({what})"}


def theoretical_peak(device: Device, precision: str, threads: int, tf32: bool = False) -> dict | None:
    """The theoretical ceiling of a device and precision where it is known: {gflops_per_s, source}."""
    if device.is_cuda:
        return gpu_theoretical(torch.cuda.get_device_name(device.index or 0), precision, tf32)
    return cpu_theoretical(precision, threads)


# --- the ceilings of a run --------------------------------------------------------------------------------------

class Ceilings:
    """The measured ceiling of each (device, precision): the best GEMM, raised by every row as it is recorded (so
    a row's share of it is at most 100%), and the theoretical ceiling where known."""

    def __init__(self, gemm: list[dict], theoretical: dict[tuple[str, str], dict | None]) -> None:
        self.measured: dict[tuple[str, str], tuple[float, str]] = {
            (p["device"], p["precision"]): (p["gflops_per_s"], f"GEMM {p.get('shape', 'square')}") for p in gemm}
        self.gemm = {key: rate for key, (rate, _) in self.measured.items()}
        self.theoretical = theoretical
        # the best rate the hardware itself ran (GEMMs and rows that compute every FLOP they are credited with): a
        # theoretical ceiling below it is wrong, e.g. a VM's /proc/cpuinfo clock under the boost the CPU runs at
        # (2026-12-06, AMD EPYC Zen 4: onnxruntime at 214 GFLOP/s against 2 x 2.60 GHz x 32 = 166)
        self.hardware: dict[tuple[str, str], tuple[float, str]] = dict(self.measured)

    def see(self, device: str, precision: str, gflops_per_s: float | None, what: str,
            hardware_rate: bool = True) -> None:
        """Raise the measured ceiling to a row's rate when it beats everything seen so far. hardware_rate=False:
        an effective rate (see row_fields), which cannot show the theoretical ceiling wrong."""
        if gflops_per_s is None:
            return
        for seen, counts in ((self.measured, True), (self.hardware, hardware_rate)):
            best = seen.get((device, precision))
            if counts and (best is None or gflops_per_s > best[0]):
                seen[device, precision] = (gflops_per_s, what)

    def _theory(self, device: str, precision: str) -> tuple[dict, str | None]:
        """The theoretical ceiling, and why it is set aside (None: it stands)."""
        theory = self.theoretical.get((device, precision)) or {}
        rate, what = self.hardware.get((device, precision), (None, ""))
        if theory.get("gflops_per_s") and rate is not None and rate > theory["gflops_per_s"]:
            return theory, (f"{what} ran at {rate:.1f} GFLOP/s, above it: the clock or FLOPs per cycle it assumes "
                            f"are below what the CPU ran (boost)")
        return theory, None

    def row_fields(self, device: str, precision: str, gflops_per_s: float | None, hardware_rate: bool = True) -> dict:
        """A row's denominators and shares: peak_gflops_per_s/peak_pct (measured), gemm_gflops_per_s,
        theoretical_gflops_per_s/theoretical_pct. hardware_rate=False: the row's rate is effective (a backend
        that computes fewer FLOPs than it is credited with, such as Winograd), so it has no theoretical_pct."""
        measured = self.measured.get((device, precision), (None, ""))[0]
        theoretical, set_aside = self._theory(device, precision)
        theory = None if set_aside else theoretical.get("gflops_per_s")

        def pct(denominator):
            return gflops_per_s / denominator * 100 if gflops_per_s is not None and denominator else None

        return {"peak_gflops_per_s": measured, "peak_pct": pct(measured),
                "gemm_gflops_per_s": self.gemm.get((device, precision)),
                "theoretical_gflops_per_s": theory, "theoretical_pct": pct(theory) if hardware_rate else None}

    def to_list(self) -> list[dict]:
        """What the results' environment records: each ceiling with where it came from."""
        keys = list(dict.fromkeys([*self.measured, *(k for k, v in self.theoretical.items() if v)]))
        rows = []
        for device, precision in keys:
            measured, source = self.measured.get((device, precision), (None, None))
            theory, set_aside = self._theory(device, precision)
            rows.append({"device": device, "precision": precision, "measured_gflops_per_s": measured,
                         "measured_source": source, "theoretical_gflops_per_s": theory.get("gflops_per_s"),
                         "theoretical_source": theory.get("source")})
            if set_aside:  # the estimate stays on record, but no row is given a share of it
                rows[-1]["theoretical_set_aside"] = set_aside
        return rows
