"""The load a measurement ran under: CPU pressure, load average and what else used the CPUs, sampled cheaply (no
torch, one pass over /proc) as each case starts and ends, and a verdict on whether the machine was busy meanwhile.

A sample is a small JSON-ready dict of cumulative counters and instant readings; the verdict (`judge`) is computed
from two samples, so that the stall and the other processes' CPU time over a case are exact differences rather
than the kernel's decaying averages (avg10 lags a 3-second case by seconds). A reading that this system does not
offer (no /proc/pressure before Linux 4.20 or on macOS, no /proc at all) is None; sampling never raises.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

PROC = Path("/proc")  # where LoadSampler reads pressure/cpu, loadavg, stat and <pid>/stat (tests: a fake tree)

BUSIEST = 3  # other processes named per sample: enough to say who; the rest is in other_cores

# Thresholds, from 3-second windows on the 2-core VM this was written on (kernel 6.18, 7 clean windows each; the
# table is in benchmarks/README.md, "The load each row ran under"), this process either sleeping or running a tiny
# VGG16 at 2 threads, beside 0, 1 or 2 detached `python -c "while 1: pass"`:
#   quiet:                  stall 0.1-0.3% (sleeping), 0.7-1.0% (working); others 0.00-0.01 cores
#   1 spinner:              stall 0.1-1.3% (sleeping), 50.3-50.8% (working); others 1.00 / 0.72-0.77 cores
#   2 spinners:             stall 0.9-1.4% (sleeping), 91-98% (working);     others 2.00 / 0.99-1.05 cores
# and the tiny VGG16 made 1241-2022 calls quiet, 242-490 beside one spinner, 59-366 beside two: a neighbour on one
# core of two costs a 2-thread benchmark far more than half (its threads wait for each other at every layer).
# The stall shows only while this process works: a spinner beside a sleeping process has a core of its own, so
# --require-quiet (which sleeps) rests on the others' CPU time. The thresholds sit well clear of both sides: others
# 0.25 cores (quiet 0.01, one spinner 0.72), stall 10% (quiet 1%, one spinner 50%). They are absolute, not shares of
# the idle cores: on a machine with cores to spare a neighbour of a quarter core is flagged all the same, which
# errs on the side of a mark that is not needed rather than a winner that is not sure.
STALL_PCT = 10.0  # % of the interval in which some runnable task waited for a CPU (PSI "some")
# CPU used by processes other than this one and its children, in cores (a spinning process is 1.0); counted
# from the system's CPU time (/proc/stat), so that short-lived processes (a compiler, a test worker) count too
OTHER_CORES = 0.25
# the stall counts only when others ran at least this much (quiet: 0.01): below it, what waited was this process's
# own threads, which outnumber the cores in some backends' settings, and that is part of what is measured
STALL_OTHER_CORES = 0.05
STEAL_PCT = 10.0  # % of the CPUs' time that the hypervisor gave to other guests (a VM's neighbours; 0-0.5% here)
MAX_QUIET_WAIT_S = 86400  # --require-quiet waits a day at most: longer is a typo, not a plan
# --require-quiet judges windows this long: the CPU times tick at 10 ms, so 2 s reads a process's use to 0.005
# cores, and a neighbour that comes and goes in bursts of a second shows in most windows
QUIET_WINDOW_S = 2.0


class LoadSampler:
    """Reads the machine's load. Each sample's `busy` names the other processes that used the CPU most since this
    sampler's previous sample (or its creation), so that sampling at a case's start and end names who ran during
    the case; every other field is cumulative or instant and does not depend on the previous sample."""

    def __init__(self, proc: Path | None = None) -> None:
        self.proc = Path(proc) if proc is not None else PROC
        self._tick = _clock_tick()
        self._cores = _cores()
        self._previous: dict[tuple[int, int], _Process] = {}  # (pid, start) -> the process at the previous sample
        self._previous_time: float | None = None
        self._processes()  # primes _previous: the first sample's `busy` covers the time since now

    def sample(self) -> dict:
        now = time.time()
        stall = _pressure(self.proc / "pressure" / "cpu")
        busy_s, steal_s = _system_cpu(self.proc / "stat", self._tick)
        mine, busy = self._processes(now)
        return {"time": round(now, 3), "cores": self._cores,
                "cpu_some_avg10": stall.get("avg10"), "cpu_some_avg60": stall.get("avg60"),
                "cpu_some_total_us": stall.get("total"),
                "loadavg": _loadavg(self.proc / "loadavg"),
                "cpu_busy_s": busy_s, "cpu_steal_s": steal_s, "self_cpu_s": mine,
                "busy": busy}

    def _processes(self, now: float | None = None) -> tuple[float | None, list[dict] | None]:
        """(CPU seconds of this process and its children, live and reaped; the busiest other processes since the
        previous call). From /proc/<pid>/stat where there is a /proc, else psutil (macOS) for this process alone."""
        try:
            table = _process_table(self.proc, self._tick)
        except OSError:
            table = None
        if table is None:
            return _own_cpu_psutil(), None
        ours = _descendants(os.getpid(), {pid: p.ppid for pid, p in table.items()})
        mine = round(sum(table[pid].cpu_s + table[pid].reaped_s for pid in ours), 2) if os.getpid() in table else None
        current = {(pid, p.started): p for pid, p in table.items() if pid not in ours}
        busy = None
        if now is not None and self._previous_time is not None and now > self._previous_time:
            span = now - self._previous_time
            used = []
            for key, p in current.items():
                # a process born since the previous sample counts whole: all its CPU time was spent meanwhile
                before = self._previous.get(key)
                cores = (p.cpu_s - (before.cpu_s if before else 0.0)) / span
                if cores >= 0.01:
                    used.append({"pid": key[0], "name": p.name, "cores": round(cores, 2)})
            busy = sorted(used, key=lambda u: -u["cores"])[:BUSIEST]
            for u in busy:  # "python" says little: its command line says which
                u["command"] = _command(self.proc, u["pid"]) or u["name"]
        self._previous, self._previous_time = current, now if now is not None else time.time()
        return mine, busy


@dataclass(frozen=True)
class LoadVerdict:
    """Whether the machine was busy between two samples, and the readings that say so."""

    under_load: bool | None  # None: nothing here could tell (no pressure, no CPU times)
    interval_s: float | None
    stall_pct: float | None  # % of the interval in which some runnable task waited for a CPU
    other_cores: float | None  # CPU used by other processes, in cores
    steal_pct: float | None  # % of the CPUs' time taken by the hypervisor for other guests
    busy: tuple[dict, ...]  # the busiest other processes over the interval (the end sample's)
    reasons: tuple[str, ...]  # what made it under load, one phrase each

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    def to_dict(self) -> dict:
        """The row's `load` block without its samples."""
        return {"interval_s": self.interval_s, "stall_pct": self.stall_pct, "other_cores": self.other_cores,
                "steal_pct": self.steal_pct, "busy": list(self.busy), "reason": self.reason}


def judge(start: dict | None, end: dict | None) -> LoadVerdict:
    """Was the machine under load between two samples (of one sampler, `end` taken after `start`)?

    Under load when another process used at least OTHER_CORES of a core, or when tasks waited for a CPU for
    STALL_PCT of the time and other processes ran at all, or when the hypervisor took STEAL_PCT. The stall alone
    is not enough: a benchmark whose own threads outnumber the cores stalls itself (PSI cannot tell whose tasks
    waited), and that is the number being measured, not a neighbour's doing. Where the other processes' CPU time
    cannot be read, the stall alone decides.
    """
    start, end = start or {}, end or {}
    t0, t1 = start.get("time"), end.get("time")
    span = t1 - t0 if isinstance(t0, (int, float)) and isinstance(t1, (int, float)) and t1 > t0 else None
    cores = end.get("cores") or start.get("cores")
    stall = _per_second(start, end, "cpu_some_total_us", span)
    stall = stall / 1e4 if stall is not None else None  # microseconds per second -> % of the time
    steal = _per_second(start, end, "cpu_steal_s", span)
    steal = 100 * steal / cores if steal is not None and cores else None
    busy_cores = _per_second(start, end, "cpu_busy_s", span)
    own = _per_second(start, end, "self_cpu_s", span)
    other = max(0.0, busy_cores - own) if busy_cores is not None and own is not None else None
    reasons = []
    if other is not None and other >= OTHER_CORES:
        reasons.append(f"other processes used {other:.2f} cores")
    if stall is not None and stall >= STALL_PCT and (other is None or other >= STALL_OTHER_CORES):
        reasons.append(f"tasks waited for a CPU {stall:.0f}% of the time")
    if steal is not None and steal >= STEAL_PCT:
        reasons.append(f"the hypervisor took {steal:.0f}% of the CPUs")
    busy = tuple(end.get("busy") or ())
    if reasons and busy:
        top = busy[0]
        reasons.append(f"busiest: {top.get('command') or top['name']} (pid {top['pid']}, {top['cores']:.2f} cores)")
    known = other is not None or stall is not None
    return LoadVerdict(bool(reasons) if known else None, _round(span, 2), _round(stall, 1), _round(other, 2),
                       _round(steal, 1), busy, tuple(reasons))


def load_block(start: dict | None, end: dict | None) -> tuple[dict, bool | None]:
    """A row's `load` field (both samples and the verdict's readings) and its `under_load`."""
    verdict = judge(start, end)
    return {"start": start, "end": end, **verdict.to_dict()}, verdict.under_load


def run_load(start: dict | None, end: dict | None, under_load: Iterable[bool | None]) -> dict:
    """A run's `load` (its environment's): the samples at its start and end, the readings over the whole run, and
    how many of its rows were judged (measured with both samples readable) and how many of those ran under load."""
    judged = [u for u in under_load if u is not None]
    # the end sample's busiest processes are those since the last row's end, not the run's: the rows name theirs
    whole = judge(start, {**end, "busy": None} if end else end).to_dict()
    return {"start": start, "end": end, **whole, "rows_judged": len(judged),
            "rows_under_load": sum(judged)}


def wait_for_quiet(seconds: float, *, window_s: float | None = None, sampler: LoadSampler | None = None,
                   sleep=None, clock=None) -> LoadVerdict:
    """Wait up to `seconds` for a window of `window_s` (QUIET_WINDOW_S) in which the machine is quiet (`judge`
    says not under load) and return that window's verdict. Raises MachineBusy when it is still busy then, naming
    what kept it busy, and where nothing can be measured (a quiet machine was asked for and cannot be shown).
    sleep, clock: time.sleep and time.monotonic, unless given."""
    from .errors import ConfigError, MachineBusy

    # nan would never be reached (a wait without end), inf is one by name, a negative one says nothing
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= MAX_QUIET_WAIT_S:
        raise ConfigError(f"--require-quiet must be a number of seconds in [0, {MAX_QUIET_WAIT_S}], got {seconds!r}")
    sampler = sampler or LoadSampler()
    sleep, clock = sleep or time.sleep, clock or time.monotonic
    window_s = QUIET_WINDOW_S if window_s is None else window_s
    first = clock()
    previous = sampler.sample()
    while True:
        sleep(window_s)
        current = sampler.sample()
        verdict = judge(previous, current)
        if verdict.under_load is False:
            return verdict
        if verdict.under_load is None:
            raise MachineBusy("--require-quiet: this system offers no reading of its load (no /proc/pressure/cpu, "
                              "no CPU times), so a quiet machine cannot be checked")
        waited = clock() - first
        if waited >= seconds:
            raise MachineBusy(f"--require-quiet: the machine was still busy after waiting {waited:.0f} s: "
                              f"{verdict.reason}")
        previous = current


# --- the host, after a process that held much memory exits ----------------------------------------------------
#
# A VM whose balloon device reports free pages (virtio's VIRTIO_BALLOON_F_REPORTING) hands the memory its processes
# free back to the host, and for a while after a large process exits the host takes CPU time from the guest. On
# 2026-12-07 (the 2-core AVX2 EPYC VM; benchmarks/exit_steal.py, benchmarks/README.md "Eleventh round"), a process
# timing VGG16's winograd runner lost 7.4-8.4% of the CPUs to steal in the 6 s after a 3 GiB process exited,
# against 0.1-2.4% after a tiny one; 2.8-3.1% when it first waited 10 s, 0.1-1.8% after 20 s; after a 6 GiB one,
# 0.1-0.2% after 20 s; after 1.5 GiB, 1.9-3.2%, no more than a tiny one's at that hour (1.5-2.3%). A cross-check's
# tool (a fresh process that builds the model) holds 1-3 GiB, and the row's next round started the moment it
# exited: winograd at batch 8, whose round is about 7 s of calls, was timed inside that window every round.
VIRTIO_DEVICES = Path("/sys/bus/virtio/devices")
BALLOON_DEVICE_ID = 0x0005
BALLOON_F_REPORTING = 5  # the feature bit (the `features` file lists bits from 0, left to right)
SETTLE_S_PER_GIB = 7.0  # 3 GiB: quiet again after 20 s
MAX_SETTLE_S = 20.0  # 6 GiB: quiet after 20 s too
# below this, no wait. In one full cross-check (2026-12-07 21:32-22:34, benchmarks/README.md "Twelfth round"), with a
# floor of 2 GiB: the rounds after winograd's tool at batch 1 (1.92 GiB, no wait) lost 2.3-3.6% to steal, those
# after every tool of 0.6-1.4 GiB 0.0-1.5% (eager's at batch 8, 1.40 GiB: 0.1-0.4%); a 1.5 GiB child had shown
# 1.9-3.2% against a tiny one's 1.5-2.3% at that hour. Torch alone holds about 0.3 GiB.
MIN_SETTLE_BYTES = int(1.5 * 2**30)


def reports_free_pages(root: Path | None = None) -> bool | None:
    """Whether this machine's memory balloon reports free pages to its host: True or False, or None where there
    is no virtio device list to read (not Linux, or sysfs not mounted)."""
    root = VIRTIO_DEVICES if root is None else Path(root)
    try:
        devices = list(root.iterdir())
    except OSError:
        return None
    for device in devices:
        try:
            if int((device / "device").read_text().strip(), 16) != BALLOON_DEVICE_ID:
                continue
            features = (device / "features").read_text().strip()
        except (OSError, ValueError):
            continue
        if len(features) > BALLOON_F_REPORTING and features[BALLOON_F_REPORTING] == "1":
            return True
    return False


@functools.cache
def host_takes_freed_memory() -> bool | None:
    """reports_free_pages() of this machine, read once."""
    return reports_free_pages()


def settle_time_s(peak_bytes: int | None, reporting: bool | None) -> float:
    """How long to let the host settle after a process whose anonymous memory peaked at `peak_bytes` exits, before
    timing anything: 0 where the host is not handed free pages, the size is unknown or below MIN_SETTLE_BYTES."""
    if not reporting or not peak_bytes or peak_bytes < MIN_SETTLE_BYTES:
        return 0.0
    return round(min(MAX_SETTLE_S, SETTLE_S_PER_GIB * peak_bytes / 2**30), 1)


def anon_rss_bytes(pid: int, proc: Path | None = None) -> int | None:
    """A live process's anonymous resident memory (RssAnon: what it hands back when it exits; its files' pages
    stay cached), or None where it cannot be read (gone, not Linux)."""
    try:
        for line in ((proc or PROC) / str(pid) / "status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                value, unit = line.split()[1:3]
                return int(value) * 1024 if unit == "kB" else None
    except (OSError, ValueError, IndexError):
        pass
    return None


def higher_anon_rss(pid: int, peak: int | None) -> int | None:
    """`peak` raised to a live process's anonymous memory now (anon_rss_bytes); unchanged where that cannot be
    read. Called over and over while the process runs, it gives the most the process was seen to hold."""
    held = anon_rss_bytes(pid)
    return peak if held is None else max(peak or 0, held)


# --- readers: each returns None (or {}) for what it cannot read ------------------------------------------------

def _pressure(path: Path) -> dict:
    """The "some" line of a PSI file: avg10 and avg60 (%), total (microseconds)."""
    try:
        for line in path.read_text().splitlines():
            kind, *fields = line.split()
            if kind == "some":
                values = dict(f.split("=", 1) for f in fields)
                return {"avg10": float(values["avg10"]), "avg60": float(values["avg60"]),
                        "total": int(values["total"])}
    except (OSError, ValueError, KeyError):
        pass
    return {}


def _loadavg(path: Path) -> list[float] | None:
    try:
        return [float(v) for v in path.read_text().split()[:3]]
    except (OSError, ValueError):
        pass
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _system_cpu(path: Path, tick: float) -> tuple[float | None, float | None]:
    """(CPU seconds spent busy on all CPUs, seconds stolen by the hypervisor) since boot."""
    try:
        first = path.read_text().splitlines()[0].split()
        if first[0] == "cpu":
            ticks = [int(v) for v in first[1:]]
            ticks += [0] * (8 - len(ticks))
            user, nice, system, _idle, _iowait, irq, softirq, steal = ticks[:8]  # guest time is inside user
            return round((user + nice + system + irq + softirq) * tick, 2), round(steal * tick, 2)
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        t = psutil.cpu_times()
        busy = sum(getattr(t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq"))
        return round(busy, 2), (round(t.steal, 2) if hasattr(t, "steal") else None)
    except Exception:  # psutil missing or refused: the reading is unknown, never an error
        return None, None


class _Process(NamedTuple):
    name: str
    ppid: int
    started: int  # clock ticks after boot: with the pid, it tells a process from a later one given the same pid
    cpu_s: float  # its threads' CPU seconds
    reaped_s: float  # the CPU seconds of its children that ended and were waited for


def _process_table(proc: Path, tick: float) -> dict[int, _Process] | None:
    """pid -> _Process, for every process; None where there is no /proc. A process that ends while being read is
    skipped."""
    if not (proc / "stat").is_file():
        return None
    table = {}
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split at the last ")"
        head, _, rest = text.rpartition(")")
        fields = rest.split()
        try:
            name = head.split("(", 1)[1]
            utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
            table[int(entry.name)] = _Process(name, int(fields[1]), int(fields[19]), (utime + stime) * tick,
                                              (cutime + cstime) * tick)
        except (IndexError, ValueError):
            continue
    return table


def _command(proc: Path, pid: int, limit: int = 120) -> str | None:
    try:
        text = (proc / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
    return text[:limit] if text else None


def _descendants(root: int, parents: dict[int, int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return found


def _own_cpu_psutil() -> float | None:
    try:
        import psutil

        me = psutil.Process()
        t = me.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in me.children(recursive=True):
            try:
                c = child.cpu_times()
                total += c.user + c.system
            except psutil.Error:
                continue
        return round(total, 2)
    except Exception:  # psutil missing or refused: the reading is unknown, never an error
        return None


def _clock_tick() -> float:
    try:
        return 1.0 / os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):
        return 0.01


def _cores() -> int | None:
    """The logical cores /proc/stat counts (all of them, whatever this process's affinity)."""
    return os.cpu_count()


def _per_second(start: dict, end: dict, key: str, span: float | None) -> float | None:
    """How fast a cumulative counter grew between two samples; None where either lacks it (or it went back: a
    reboot between them)."""
    a, b = start.get(key), end.get(key)
    if span is None or not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or b < a:
        return None
    return (b - a) / span


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
