"""The C allocator while timing: one policy for every process that times a case, and what it cost.

Torch's CPU paths (eager, compile, winograd, torchscript, pt2) allocate every activation with the C library's
malloc and free it again within the call; onnxruntime and OpenVINO keep arenas of their own. glibc's malloc serves
a large block from fresh pages of an mmap (above M_MMAP_THRESHOLD) or from its heap, and gives freed heap memory
back to the kernel when more than M_TRIM_THRESHOLD lies free at its top. Both thresholds move by themselves (each
freed mmap raises them), so how many pages a forward pass touches for the first time, each a page fault the kernel
must zero, depends on what the process did before: on 2026-12-06 (AMD EPYC Zen 4) VGG16's eager forward took
about 15,000 minor faults a call at batch 1 and 250,000 at batch 8, 9% and 15% of its CPU time in the kernel, and
a probe shaped like it took 14,000-17,000 faults a call in five fresh processes and 5,300 in a sixth
(benchmarks/README.md, "The allocator"). With the thresholds fixed: 0 faults a call at batch 1, 88,000 at batch
8; with no mmap either (below), 0 at both.

"steady" fixes both thresholds for the process and maps no block on its own (M_MMAP_MAX 0): memory freed by one
call stays in the heap for the next, whatever its size, so a row measures the steady state whatever ran before
it. Blocks above glibc's largest mmap threshold (32 MiB) were mapped afresh each call while only the thresholds
were fixed, and how many of them a call met still depended on the process's past: a block that fits a free chunk
left in the heap by earlier work (loading, a parity check) is served from it without a fault. On 2026-12-07 (Zen 4)
VGG16's compiled forward at batch 8 (channels_last, freezing: 103 MiB activations) took 31,000-38,000 faults a call
in vggbench's worker and 50,000-75,000 in its cross-check tool's fresh process, 3-6% of the CPU time in the
kernel, and the tool read 3-11% slower; with no mmap both take 0 and read alike (benchmarks/README.md, "Sixth
round"). The heap then keeps a call's peak for the process's life (up to TRIM_THRESHOLD free at its top): the
price of a steady state, paid by a process that only times. A thread's own arena cannot grow past 64 MiB and maps
a larger block all the same (glibc falls back to mmap there). It is set with mallopt() in the process that times,
and with GLIBC_TUNABLES in the environment of a process vggbench starts (an isolated worker, a cross-check tool),
so that both sides of a comparison run under the same policy. "default" leaves malloc as it is. Elsewhere than
glibc (macOS, musl, Windows) both policies are the platform's allocator, and the record says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import resource
from dataclasses import dataclass

POLICIES = ("steady", "default")
DEFAULT_POLICY = "steady"
# glibc's mallopt parameters (malloc.h) and the values "steady" sets
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: 2 GiB free at the heap's top before any is given back
MMAP_THRESHOLD = 32 << 20  # glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit); a larger value is refused
MMAP_MAX = 0  # no block mapped on its own: every one from the heap, kept there when freed
TUNABLES = {"glibc.malloc.trim_threshold": TRIM_THRESHOLD, "glibc.malloc.mmap_threshold": MMAP_THRESHOLD,
            "glibc.malloc.mmap_max": MMAP_MAX}

_applied: str | None = None  # the policy set in this process (mallopt cannot be undone: once is enough)


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def apply(policy: str) -> dict:
    """Set `policy` for this process and return its record (for the run's environment). Setting "steady" again
    is a no-op; "default" after "steady" cannot undo it, and the record says which one holds."""
    global _applied
    if policy not in POLICIES:
        raise ValueError(f"allocator policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    libc = _glibc()
    if libc is None:
        return {"policy": policy, "allocator": f"{platform.system()} {platform.libc_ver()[0] or 'libc'}",
                "applied": False, "note": "not glibc: the platform's allocator, untouched"}
    if policy == "steady" and _applied != "steady":
        if not (libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and libc.mallopt(M_MMAP_MAX, MMAP_MAX)):
            return {"policy": policy, "allocator": f"glibc {platform.libc_ver()[1]}", "applied": False,
                    "note": "mallopt refused the thresholds"}
        _applied = "steady"
    record = {"policy": _applied or policy, "allocator": f"glibc {platform.libc_ver()[1]}", "applied": True}
    if _applied == "steady":
        record.update(trim_threshold=TRIM_THRESHOLD, mmap_threshold=MMAP_THRESHOLD, mmap_max=MMAP_MAX)
        if policy == "default":
            record["note"] = "steady was set earlier in this process and holds"
    return record


def child_environment(policy: str, base: dict | None = None) -> dict:
    """The environment for a process vggbench starts (a worker, a tool) under `policy`: GLIBC_TUNABLES with the
    thresholds for "steady" (kept beside any tunables already there), the environment unchanged for "default"."""
    env = dict(os.environ if base is None else base)
    if policy == "steady":
        given = [item for item in env.get("GLIBC_TUNABLES", "").split(":")
                 if item and item.split("=", 1)[0] not in TUNABLES]
        env["GLIBC_TUNABLES"] = ":".join(given + [f"{name}={value}" for name, value in TUNABLES.items()])
    return env


@dataclass(frozen=True)
class Usage:
    """The process's CPU time and page faults at one moment (getrusage: every thread of the process)."""

    user_s: float
    system_s: float
    minor_faults: int
    major_faults: int

    @classmethod
    def now(cls) -> Usage:
        used = resource.getrusage(resource.RUSAGE_SELF)
        return cls(used.ru_utime, used.ru_stime, used.ru_minflt, used.ru_majflt)

    def since(self, start: Usage, calls: int) -> dict:
        """Per call between `start` and this moment: page faults, and the kernel's share of the CPU time."""
        cpu = (self.user_s - start.user_s) + (self.system_s - start.system_s)
        return {"faults_per_call": (self.minor_faults - start.minor_faults
                                    + self.major_faults - start.major_faults) / max(calls, 1),
                "kernel_pct": (self.system_s - start.system_s) / cpu * 100 if cpu > 0 else None}
