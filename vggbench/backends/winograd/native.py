"""The winograd backend's C++ kernels (kernels/winograd.cpp), compiled on first use with the machine's C++
compiler.

The transform matrices reach the kernels as a header generated from matrices.py for each build. The
library is built for this CPU (-march=native) and cached under `$VGGBENCH_CACHE/kernels` (default
`~/.cache/vggbench/kernels`), keyed by the source, that header, the compiler, the flags and the CPU, with its
size and sha256 recorded beside it (checked before each load: a damaged file is rebuilt), and loaded
with ctypes: no torch headers, so a build takes seconds. Without a compiler (or if the build fails)
`winograd()` returns None and `unavailable_reason()` says why; callers fall back to torch ops.
Set `VGGBENCH_NO_NATIVE=1` to skip the kernels. The library links OpenMP by its soname, so it shares
the libgomp that torch has already loaded (one thread pool, not two competing for the cores).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from ...core.fileio import sha256_file, write_json
from . import matrices

SOURCE = Path(__file__).with_name("kernels") / "winograd.cpp"
HEADER = "winograd_matrices.h"  # generated from matrices.py for each build
FLAGS = ["-O3", "-march=native", "-std=c++17", "-fopenmp", "-shared", "-fPIC"]
BUILD_TIMEOUT_S = 300
_reason: str | None = None


def cache_dir() -> Path:
    root = os.environ.get("VGGBENCH_CACHE") or Path.home() / ".cache" / "vggbench"
    return Path(root) / "kernels"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def _cpu_key() -> str:
    try:  # -march=native code must not run on another CPU that shares the cache (a network home)
        return next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def cache_key(cxx: str, version: str) -> str:
    """What the library's file name is keyed by: the source, the generated matrix header, the compiler,
    the flags and the CPU."""
    parts = [SOURCE.read_text(), matrices.cpp_header(), cxx, version, *FLAGS, _cpu_key()]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def library_path(cxx: str) -> Path:
    """Where the library built by `cxx` is cached (whether or not it is built yet)."""
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    return cache_dir() / f"winograd-{cache_key(cxx, version)}.so"


def record_path(library: Path) -> Path:
    """The size and sha256 of a cached library, written beside it when it was built."""
    return library.with_name(library.name + ".json")


def _record(library: Path) -> dict:
    return {"size": library.stat().st_size, "sha256": sha256_file(library)}


def verified(library: Path) -> bool:
    """Whether `library` is the file that was built: its size and sha256 as recorded at build time. A
    truncated or otherwise damaged library (a full disk, a killed copy, a network home) must never be loaded:
    mapping a file shorter than its headers say kills the process with SIGBUS. (The record guards against
    damage, not against someone who can write to the cache: they could rewrite the record as well.)"""
    try:
        recorded = json.loads(record_path(library).read_text(encoding="utf-8"))
        if not isinstance(recorded, dict) or recorded.get("size") != library.stat().st_size:
            return False
        return recorded.get("sha256") == sha256_file(library)
    except (OSError, ValueError):
        return False


def _build(cxx: str) -> Path:
    target = library_path(cxx)
    if target.exists() and verified(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:  # built aside, renamed into place
        (Path(tmp) / HEADER).write_text(matrices.cpp_header())
        built = Path(tmp) / target.name
        done = subprocess.run([cxx, *FLAGS, "-I", tmp, str(SOURCE), "-o", str(built)], capture_output=True,
                              text=True, timeout=BUILD_TIMEOUT_S)
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if "error" in line] or done.stderr.splitlines()
            raise RuntimeError(f"{cxx} failed: {lines[0] if lines else 'exit ' + str(done.returncode)}")
        record = _record(built)
        # replaced by a rename, never rewritten in place: a process that has the old file mapped keeps it whole
        os.replace(built, target)
        write_json(record_path(target), record)  # last: a build killed before this is rebuilt
    return target


@functools.cache
def winograd() -> ctypes.CDLL | None:
    """The Winograd transform kernels (see kernels/winograd.cpp), or None when they cannot be built."""
    global _reason
    if os.environ.get("VGGBENCH_NO_NATIVE"):
        _reason = "VGGBENCH_NO_NATIVE is set"
        return None
    cxx = _compiler()
    if cxx is None:
        _reason = "no C++ compiler found (set CXX, or install g++ or clang++)"
        return None
    try:
        lib = ctypes.CDLL(str(_build(cxx)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        _reason = f"could not build {SOURCE.name}: {str(exc).splitlines()[0]}"
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    c_int = ctypes.c_int
    lib.vggbench_winograd_input.argtypes = [c_int, ptr, i64, i64, i64, i64, i64, i64, ptr, c_int, c_int]
    lib.vggbench_winograd_output.argtypes = [c_int, ptr, ptr, ptr, i64, i64, i64, i64, i64, i64, c_int, c_int, c_int]
    lib.vggbench_winograd_input.restype = lib.vggbench_winograd_output.restype = ctypes.c_int
    return lib


def describe() -> dict:
    """How the kernels are (or would be) built, for a run's environment record; builds nothing."""
    cxx = _compiler()
    version = None
    if cxx:
        try:
            out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
            version = out.splitlines()[0] if out else None
        except (OSError, subprocess.SubprocessError):
            pass
    return {"compiler": cxx, "compiler_version": version, "flags": FLAGS,
            "disabled": bool(os.environ.get("VGGBENCH_NO_NATIVE")), "unavailable_reason": _reason}


def unavailable_reason() -> str | None:
    """Why `winograd()` returned None (None when the kernels are loaded or not yet asked for)."""
    return _reason


def _check(t: torch.Tensor, what: str) -> int:
    if t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous():
        raise ValueError(f"{what}: expected a contiguous fp32 CPU tensor, got {t.dtype} {t.device} "
                         f"strides {t.stride()}")
    return t.data_ptr()


def winograd_input(m: int, x_nhwc: torch.Tensor, p0: int, p1: int, out: torch.Tensor,
                   stream: bool = False) -> torch.Tensor:
    """out[alpha^2, p1 - p0, C]: tiles p0..p1 of the NHWC tensor x_nhwc [N, H, W, C] transformed (B^T d B).
    stream: write with non-temporal stores (for an `out` far larger than the caches)."""
    n, h, w, c = x_nhwc.shape
    a = m + 2
    if tuple(out.shape) != (a * a, p1 - p0, c):
        raise ValueError(f"out must be {(a * a, p1 - p0, c)}, got {tuple(out.shape)}")
    lib = winograd()
    if lib is None or lib.vggbench_winograd_input(m, _check(x_nhwc, "x"), n, h, w, c, p0, p1, _check(out, "out"),
                                                  int(stream), torch.get_num_threads()) != 0:
        raise RuntimeError(f"Winograd input transform F({m}x{m}) failed: {unavailable_reason() or 'bad tile size'}")
    return out


def winograd_output(m: int, mm: torch.Tensor, bias: torch.Tensor | None, out_nhwc: torch.Tensor, p0: int, p1: int,
                    relu: bool, stream: bool = False) -> torch.Tensor:
    """Writes tiles p0..p1 of out_nhwc [N, H, W, K] from mm [alpha^2, p1 - p0, K] (A^T M A + bias, ReLU)."""
    n, h, w, k = out_nhwc.shape
    a = m + 2
    if tuple(mm.shape) != (a * a, p1 - p0, k) or (bias is not None and tuple(bias.shape) != (k,)):
        raise ValueError(f"mm must be {(a * a, p1 - p0, k)} and bias ({k},)")
    lib = winograd()
    bias_ptr = None if bias is None else _check(bias, "bias")
    if lib is None or lib.vggbench_winograd_output(m, _check(mm, "mm"), bias_ptr, _check(out_nhwc, "out"), n, h, w,
                                                   k, p0, p1, int(relu), int(stream), torch.get_num_threads()) != 0:
        raise RuntimeError(f"Winograd output transform F({m}x{m}) failed: {unavailable_reason() or 'bad tile size'}")
    return out_nhwc
