"""vggbench.core.load: the load a case ran under, read from a fake /proc and judged from planted samples; a run's rows
carry it, `--require-quiet` refuses a busy machine with one line. No real busy process and no timing here."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import vggbench
import vggbench.bench.sweep as sweep
import vggbench.core.load as load
from tests.conftest import TINY, TINY_IMAGE, benchmark_script
from vggbench.bench.results import read_run
from vggbench.cli import main
from vggbench.core.errors import MachineBusy

FAST = dict(warmup=0, warmup_time_s=0.0, min_time_s=0.0, min_iters=2, max_iters=2)
TINY_SUITE = dict(models=["vgg11"], image_size=TINY_IMAGE, batch_sizes=[1, 2], memory_formats=["contiguous"],
                  backends=["eager"], **TINY, **FAST)


# --- a fake /proc ----------------------------------------------------------------------------------------------

class FakeProc:
    """A /proc tree with the files the sampler reads; counters in clock ticks (100 per second)."""

    def __init__(self, root: Path, pressure: bool = True) -> None:
        self.root, self.pressure = root, pressure
        root.mkdir(exist_ok=True)

    def write(self, *, busy_ticks: int, steal_ticks: int = 0, stall_us: int | None = None,
              loadavg: str = "0.50 0.40 0.30 1/100 999") -> None:
        # cpu: user nice system idle iowait irq softirq steal
        (self.root / "stat").write_text(f"cpu  {busy_ticks} 0 0 100000 5 0 0 {steal_ticks} 0 0\ncpu0 1 2 3\n")
        (self.root / "loadavg").write_text(loadavg + "\n")
        if self.pressure and stall_us is not None:
            (self.root / "pressure").mkdir(exist_ok=True)
            (self.root / "pressure" / "cpu").write_text(
                f"some avg10=12.50 avg60=3.25 avg300=1.00 total={stall_us}\n"
                "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")

    def process(self, pid: int, name: str, ppid: int, utime: int, stime: int = 0, cutime: int = 0,
                started: int = 1000, command: str = "") -> None:
        folder = self.root / str(pid)
        folder.mkdir(exist_ok=True)
        fields = ["S", str(ppid)] + ["0"] * 9 + [str(utime), str(stime), str(cutime), "0"] + ["0"] * 4 + \
                 [str(started)] + ["0"] * 20
        (folder / "stat").write_text(f"{pid} ({name}) {' '.join(fields)}\n")
        (folder / "cmdline").write_bytes(command.replace(" ", "\0").encode())

    def gone(self, pid: int) -> None:
        for f in (self.root / str(pid)).iterdir():
            f.unlink()
        (self.root / str(pid)).rmdir()


@pytest.fixture
def clock(monkeypatch):
    """load's time.time, set by the test."""
    now = {"t": 1000.0}

    class Time:
        @staticmethod
        def time():
            return now["t"]

        monotonic = staticmethod(lambda: now["t"])
        sleep = staticmethod(lambda s: now.__setitem__("t", now["t"] + s))

    monkeypatch.setattr(load, "time", Time)
    return now


def test_sampler_reads_a_fake_proc_and_names_the_busiest_other_process(tmp_path, clock):
    proc = FakeProc(tmp_path / "proc")
    me = os.getpid()
    proc.write(busy_ticks=10_000, steal_ticks=50, stall_us=5_000_000)
    proc.process(me, "python", 1, utime=300, cutime=20)
    proc.process(7001, "pt_compile worker", me, utime=100)  # a child of ours: ours, not "other"
    proc.process(4242, "python", 1, utime=500, command="python -c while 1: pass")
    proc.process(4243, "sshd", 1, utime=2)
    proc.process(4244, "gone", 1, utime=9)
    sampler = load.LoadSampler(proc.root)
    clock["t"] += 1.0
    start = sampler.sample()
    assert start["cores"] == os.cpu_count()
    assert start["cpu_some_avg10"] == 12.5 and start["cpu_some_avg60"] == 3.25
    assert start["cpu_some_total_us"] == 5_000_000
    assert start["loadavg"] == [0.5, 0.4, 0.3]
    assert start["cpu_busy_s"] == 100.0 and start["cpu_steal_s"] == 0.5
    assert start["self_cpu_s"] == 4.2  # its own 3.0 s, a reaped child's 0.2 s, a live child's 1.0 s
    assert start["busy"] == []  # nothing moved since the sampler was made
    json.dumps(start)  # JSON-ready

    # 4 s later: the spinner used 4 s (1.0 core), sshd 0.08 s, our child 2 s; a process came and went (its 1 s
    # only in /proc/stat); we waited for a CPU 2 s of the 4
    clock["t"] += 4.0
    proc.process(me, "python", 1, utime=500, cutime=20)
    proc.process(7001, "pt_compile worker", me, utime=300)
    proc.process(4242, "python", 1, utime=900, command="python -c while 1: pass")
    proc.process(4243, "sshd", 1, utime=10)
    proc.process(4245, "cc1plus", 1, utime=40)  # born since the previous sample: all of its time counts
    proc.gone(4244)
    proc.write(busy_ticks=10_000 + 400 + 8 + 40 + 100 + 200 + 200, steal_ticks=50, stall_us=7_000_000)
    end = sampler.sample()
    assert end["self_cpu_s"] == 8.2
    assert [(b["pid"], b["name"], b["cores"]) for b in end["busy"]] == [
        (4242, "python", 1.0), (4245, "cc1plus", 0.1), (4243, "sshd", 0.02)]
    assert end["busy"][0]["command"] == "python -c while 1: pass"
    assert end["busy"][1]["command"] == "cc1plus"  # no command line (a kernel thread, say): its name

    verdict = load.judge(start, end)
    assert verdict.interval_s == 4.0
    assert verdict.stall_pct == 50.0
    assert verdict.other_cores == 1.37  # (5.48 s of others, the short-lived too) / 4 s; our 4 s are not counted
    assert verdict.steal_pct == 0.0
    assert verdict.under_load is True
    assert verdict.reasons[-1] == "busiest: python -c while 1: pass (pid 4242, 1.00 cores)"


def test_a_process_that_reuses_a_pid_counts_from_its_start(tmp_path, clock):
    proc = FakeProc(tmp_path / "proc")
    proc.write(busy_ticks=0)
    proc.process(4242, "make", 1, utime=5000, started=10)
    sampler = load.LoadSampler(proc.root)
    clock["t"] += 2.0
    proc.process(4242, "gcc", 1, utime=60, started=900)  # another process, same pid: less CPU time than before
    assert sampler.sample()["busy"] == [{"pid": 4242, "name": "gcc", "cores": 0.3, "command": "gcc"}]


def test_without_proc_pressure_the_sample_has_none_and_the_verdict_uses_cpu_times(tmp_path, clock):
    proc = FakeProc(tmp_path / "proc", pressure=False)
    me = os.getpid()
    proc.write(busy_ticks=1000)
    proc.process(me, "python", 1, utime=100)
    sampler = load.LoadSampler(proc.root)
    start = sampler.sample()
    assert start["cpu_some_avg10"] is None and start["cpu_some_total_us"] is None
    clock["t"] += 2.0
    proc.process(me, "python", 1, utime=300)  # 2 s of ours, nothing else
    proc.write(busy_ticks=1200)
    end = sampler.sample()
    verdict = load.judge(start, end)
    assert verdict.stall_pct is None and verdict.other_cores == 0.0 and verdict.under_load is False


def test_without_any_proc_sampling_never_raises(tmp_path, clock, monkeypatch):
    """macOS, or a /proc that cannot be read: pressure and process names are None; what psutil or os can still
    say (CPU times, the load average) is kept."""
    monkeypatch.setattr(load, "PROC", tmp_path / "no-proc")
    sampler = load.LoadSampler()
    clock["t"] += 1.0
    s = sampler.sample()
    assert s["cpu_some_avg10"] is None and s["cpu_some_total_us"] is None and s["busy"] is None
    assert s["loadavg"] is None or len(s["loadavg"]) == 3
    json.dumps(s)
    # psutil gone too: every CPU reading is None, still no exception, and the verdict is "unknown"
    monkeypatch.setitem(sys.modules, "psutil", None)
    def no_loadavg():
        raise OSError("not here")

    monkeypatch.setattr(load.os, "getloadavg", no_loadavg, raising=False)
    bare = load.LoadSampler().sample()
    assert bare["cpu_busy_s"] is None and bare["self_cpu_s"] is None and bare["loadavg"] is None
    assert load.judge(bare, bare).under_load is None


def test_unreadable_files_are_none_not_errors(tmp_path, clock):
    proc = FakeProc(tmp_path / "proc")
    (proc.root / "pressure").mkdir()
    (proc.root / "pressure" / "cpu").write_text("some avg10=garbage\n")
    (proc.root / "loadavg").write_text("not numbers\n")
    (proc.root / "stat").write_text("cpu  1 2 x\n")
    (proc.root / "12").mkdir()
    (proc.root / "12" / "stat").write_text("12 (broken\n")
    s = load.LoadSampler(proc.root).sample()
    assert s["cpu_some_total_us"] is None and s["cpu_some_avg10"] is None
    assert s["loadavg"] is None or len(s["loadavg"]) == 3  # os.getloadavg where the file is unreadable


# --- the verdict on planted samples --------------------------------------------------------------------------

def planted(t: float, *, busy_s: float = 0.0, self_s: float = 0.0, stall_us: int | None = 0, steal_s: float = 0.0,
            busy: list | None = None, cores: int = 2) -> dict:
    return {"time": t, "cores": cores, "cpu_some_avg10": None, "cpu_some_avg60": None, "cpu_some_total_us": stall_us,
            "loadavg": [1.0, 1.0, 1.0], "cpu_busy_s": busy_s, "cpu_steal_s": steal_s, "self_cpu_s": self_s,
            "busy": busy or []}


SPINNER = [{"pid": 99, "name": "python", "cores": 1.0, "command": "python spin.py"}]


@pytest.mark.parametrize("end, under_load, reason", [
    # quiet: the benchmark used both cores, others 0.02 cores, 1% stall
    (planted(10, busy_s=20.2, self_s=20.0, stall_us=100_000), False, ""),
    # a neighbour spinning one core: the cores it took and the stall it caused
    (planted(10, busy_s=30.0, self_s=20.0, stall_us=5_000_000, busy=SPINNER), True,
     "other processes used 1.00 cores; tasks waited for a CPU 50% of the time; busiest: python spin.py (pid 99, "
     "1.00 cores)"),
    # a neighbour below OTHER_CORES whose tasks still made ours wait: under load by the stall
    (planted(10, busy_s=21.0, self_s=20.0, stall_us=2_000_000), True, "tasks waited for a CPU 20% of the time"),
    # the benchmark's own threads outnumber the cores: it stalls itself, no one else ran: not under load
    (planted(10, busy_s=20.0, self_s=20.0, stall_us=4_000_000), False, ""),
    # a busy neighbour on a kernel without PSI: the CPU times alone tell
    (planted(10, busy_s=27.0, self_s=20.0, stall_us=None), True, "other processes used 0.70 cores"),
    # a VM whose host gave a fifth of its CPUs to other guests
    (planted(10, busy_s=16.0, self_s=16.0, steal_s=4.0), True, "the hypervisor took 20% of the CPUs"),
])
def test_judge(end, under_load, reason):
    verdict = load.judge(planted(0), end)
    assert verdict.under_load is under_load
    assert verdict.reason == reason


def test_judge_unknown_without_readings_and_on_a_clock_that_went_back():
    blank = {"time": 5.0}
    assert load.judge(blank, {"time": 6.0}).under_load is None
    assert load.judge(None, None).under_load is None
    assert load.judge(planted(10), planted(5, busy_s=30.0)).under_load is None  # no interval: nothing to rate
    assert load.judge(planted(0, busy_s=50.0), planted(10, busy_s=1.0)).other_cores is None  # a reboot between


def test_row_and_run_blocks():
    start, end = planted(0), planted(10, busy_s=30.0, self_s=20.0, stall_us=5_000_000, busy=SPINNER)
    block, under = load.load_block(start, end)
    assert under is True
    assert block["start"] is start and block["end"] is end
    assert (block["stall_pct"], block["other_cores"], block["busy"]) == (50.0, 1.0, SPINNER)
    run = load.run_load(start, end, [True, False, None, True])
    assert (run["rows_judged"], run["rows_under_load"]) == (3, 2)
    assert run["busy"] == []  # the end sample's are the last interval's, not the run's
    json.dumps(run)


# --- waiting for a quiet machine -----------------------------------------------------------------------------

class PlantedSampler:
    """A sampler whose machine has others using `others[i]` cores in window i (the last value from then on; window i
    ends at sample i + 1), the clock moving 2 s per window."""

    def __init__(self, others: list[float]) -> None:
        self.others, self.calls, self.t, self.cpu = list(others), 0, 0.0, 0.0

    def sample(self) -> dict:
        other = 0.0
        if self.calls:
            other = self.others[min(self.calls - 1, len(self.others) - 1)]
            self.t, self.cpu = self.t + 2.0, self.cpu + 2.0 * other
        self.calls += 1
        return planted(self.t, busy_s=self.cpu, stall_us=0, busy=SPINNER if other else [])


def test_wait_for_quiet_returns_once_a_window_is_quiet():
    sampler, slept = PlantedSampler([1.5, 1.0, 0.0]), []
    verdict = load.wait_for_quiet(60, sampler=sampler, sleep=slept.append, clock=lambda: 2.0 * len(slept))
    assert verdict.under_load is False
    assert slept == [load.QUIET_WINDOW_S] * 3


def test_wait_for_quiet_refuses_naming_what_kept_it_busy():
    sampler, slept = PlantedSampler([1.5]), []
    with pytest.raises(MachineBusy) as e:
        load.wait_for_quiet(5, sampler=sampler, sleep=slept.append, clock=lambda: 2.0 * len(slept))
    assert str(e.value) == ("--require-quiet: the machine was still busy after waiting 6 s: other processes used 1.50 "
                            "cores; busiest: python spin.py (pid 99, 1.00 cores)")


def test_wait_for_quiet_refuses_where_nothing_can_be_read():
    class Blind:
        def sample(self):
            return {"time": 1.0}

    with pytest.raises(MachineBusy, match="offers no reading of its load"):
        load.wait_for_quiet(60, sampler=Blind(), sleep=lambda s: None)


# --- a run records it --------------------------------------------------------------------------------------------

class RunSampler(PlantedSampler):
    """Quiet, except the window that ends at sample `loaded` (a case's end), where a neighbour spins 1.5 cores."""

    def __init__(self, loaded: int) -> None:
        super().__init__([1.5 if i == loaded - 1 else 0.0 for i in range(loaded + 10)])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("export_cache")


def test_a_runs_rows_carry_their_load(cache, monkeypatch):
    # samples: 0 the run's start, 1 and 2 the first case's start and end, 3 and 4 the second's, 5 the run's end
    made = []
    monkeypatch.setattr(sweep, "LoadSampler", lambda: made.append(RunSampler(loaded=4)) or made[-1])
    run = vggbench.benchmark(export_cache=cache, progress=False, rounds=1, **TINY_SUITE)
    first, second = run.results
    assert (first.batch_size, first.under_load, second.batch_size, second.under_load) == (1, False, 2, True)
    assert second.load["other_cores"] == 1.5 and second.load["busy"] == SPINNER
    assert second.load["reason"].startswith("other processes used 1.50 cores")
    assert second.load["start"]["time"] == 6.0 and second.load["end"]["time"] == 8.0
    assert first.load["reason"] == "" and first.load["other_cores"] == 0.0
    env = run.environment["load"]
    assert (env["rows_judged"], env["rows_under_load"]) == (2, 1)
    assert env["start"]["time"] == 0.0 and env["end"]["time"] == 10.0
    assert run.summary().endswith("; 1 of 2 rows ran under load")


def test_in_rounds_a_case_that_met_the_load_in_one_round_ran_under_load(cache, monkeypatch):
    # two rounds of two cases: samples 0 the run's start; 1-2 case 1 round 1, 3-4 case 2 round 1, 5-6 case 1
    # round 2, 7-8 case 2 round 2; the neighbour spins in the window that ends at sample 6 (case 1's second round)
    made = []
    monkeypatch.setattr(sweep, "LoadSampler", lambda: made.append(RunSampler(loaded=6)) or made[-1])
    run = vggbench.benchmark(export_cache=cache, progress=False, rounds=2, **TINY_SUITE)
    first, second = sorted(run.results, key=lambda r: r.batch_size)
    assert (first.under_load, second.under_load) == (True, False)
    assert [r["under_load"] for r in first.load["rounds"]] == [False, True]
    assert set(first.load["rounds"][0]) == {"stall_pct", "other_cores", "steal_pct", "reason", "under_load"}
    assert first.load["other_cores"] == 1.5 and first.load["reason"].startswith("other processes used 1.50 cores")
    assert [r["under_load"] for r in second.load["rounds"]] == [False, False]


# --- the host, after a process that held much memory exits ----------------------------------------------------

def virtio(root: Path, *devices: tuple[str, str]) -> Path:
    """A fake /sys/bus/virtio/devices: one folder per (device id, features) pair."""
    for i, (device, features) in enumerate(devices):
        (root / f"virtio{i}").mkdir(parents=True)
        (root / f"virtio{i}" / "device").write_text(device + "\n")
        (root / f"virtio{i}" / "features").write_text(features + "\n")
    root.mkdir(parents=True, exist_ok=True)
    return root


def test_reports_free_pages_reads_the_balloons_feature_bit(tmp_path):
    net = ("0x0001", "1100010110111011" + "0" * 48)
    # this project's VM: a balloon with bits 1, 2 and 5 (VIRTIO_BALLOON_F_REPORTING)
    assert load.reports_free_pages(virtio(tmp_path / "a", net, ("0x0005", "0110010" + "0" * 57))) is True
    assert load.reports_free_pages(virtio(tmp_path / "b", net, ("0x0005", "0110000" + "0" * 57))) is False
    assert load.reports_free_pages(virtio(tmp_path / "c", net, ("0x0002", "0110010" + "0" * 57))) is False
    assert load.reports_free_pages(virtio(tmp_path / "d", ("0x0005", "0110"), ("zz", "0000001"))) is False
    assert load.reports_free_pages(virtio(tmp_path / "e")) is False
    assert load.reports_free_pages(tmp_path / "no-sysfs") is None


def test_settle_time_grows_with_the_memory_handed_back_and_is_capped():
    gib = 2**30
    assert load.settle_time_s(2 * gib, True) == 14.0
    assert load.settle_time_s(int(2.5 * gib), True) == 17.5
    assert load.settle_time_s(100 * gib, True) == load.MAX_SETTLE_S
    # no wait: a host that is not handed free pages (or cannot say), a small or unknown process
    assert [load.settle_time_s(3 * gib, r) for r in (False, None)] == [0.0, 0.0]
    assert load.settle_time_s(load.MIN_SETTLE_BYTES, True) == 10.5
    assert [load.settle_time_s(b, True) for b in (None, 0, -1, int(1.4 * gib), load.MIN_SETTLE_BYTES - 1)] == [0.0] * 5


def test_anon_rss_reads_a_live_process_and_is_none_for_what_it_cannot_read(tmp_path, monkeypatch):
    if Path("/proc/self/status").exists():
        assert load.anon_rss_bytes(os.getpid()) > 0
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "status").write_text("Name:\tpython\nVmHWM:\t  900 kB\nRssAnon:\t  2048 kB\n")
    assert load.anon_rss_bytes(7, tmp_path) == 2048 * 1024
    (tmp_path / "8").mkdir()
    (tmp_path / "8" / "status").write_text("Name:\tkthread\n")
    (tmp_path / "9").mkdir()
    (tmp_path / "9" / "status").write_text("RssAnon:\tlots\n")
    assert [load.anon_rss_bytes(pid, tmp_path) for pid in (8, 9, 10)] == [None, None, None]
    # the most a process was seen to hold: raised by each reading, kept where one cannot be read
    readings = iter([None, 5, 3, None])
    monkeypatch.setattr(load, "anon_rss_bytes", lambda pid: next(readings))
    peak = None
    for _ in range(4):
        peak = load.higher_anon_rss(7, peak)
        assert peak in (None, 5)
    assert peak == 5


def test_run_require_quiet_refuses_with_one_line(cache, tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "LoadSampler", lambda: PlantedSampler([1.5]))
    monkeypatch.setattr(load, "QUIET_WINDOW_S", 0.0)
    out = tmp_path / "results"
    result = CliRunner().invoke(main, [
        "run", "--models", "vgg11", "--width", "0.0625", "--hidden", "32", "--image-size", str(TINY_IMAGE),
        "--batch-sizes", "1", "--backends", "eager", "--min-time", "0", "--warmup-time", "0",
        "--require-quiet", "0", "--out", str(out), "--export-cache", str(cache)])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [
        "error: --require-quiet: the machine was still busy after waiting 0 s: other processes used 1.50 cores; "
        "busiest: python spin.py (pid 99, 1.00 cores)"]
    assert not out.exists()  # refused before the first case: no results, no journal, not even the folder it made


def test_run_require_quiet_bare_waits_60_s_and_then_runs(cache, tmp_path, monkeypatch):
    asked = []

    def wait(seconds, sampler):
        asked.append(seconds)

    monkeypatch.setattr(sweep, "wait_for_quiet", wait)
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, [
        "run", "--models", "vgg11", "--width", "0.0625", "--hidden", "32", "--image-size", str(TINY_IMAGE),
        "--batch-sizes", "1", "--backends", "eager", "--min-time", "0", "--warmup-time", "0", "--min-iters", "2",
        "--require-quiet", "--out", str(out), "--export-cache", str(cache)])
    assert result.exit_code == 0, result.output
    assert asked == [60.0]
    row = read_run(out)["results"][0]
    assert isinstance(row["under_load"], bool) and set(row["load"]) >= {"start", "end", "stall_pct", "busy"}
    assert " rows ran under load; wrote " in result.output


# --- LoadGen's rows too ------------------------------------------------------------------------------------------

def test_loadgen_rows_carry_their_load_and_require_quiet_refuses_before_any_work(tmp_path, monkeypatch):
    pytest.importorskip("mlperf_loadgen")
    import vggbench.bench.loadgen as lg
    from vggbench.bench.scenarios import LoadgenSettings

    options = dict(models=["vgg11"], width=TINY["width"], hidden=TINY["hidden"], num_classes=10,
                   image_size=TINY_IMAGE, backends=["eager"], export_cache=tmp_path / "cache",
                   settings=LoadgenSettings(scenarios=("offline",), mode="accuracy", images="digits", count=20,
                                            short=True))
    monkeypatch.setattr(lg, "LoadSampler", lambda: PlantedSampler([1.5]))
    monkeypatch.setattr(load, "QUIET_WINDOW_S", 0.0)
    with pytest.raises(MachineBusy, match="still busy"):
        lg.loadgen(require_quiet=0, **options)
    assert not (tmp_path / "cache").exists()  # refused before anything was exported

    # samples: 0 the run's start, 1 and 2 the scenario's start and end, 3 the run's end
    monkeypatch.setattr(lg, "LoadSampler", lambda: RunSampler(loaded=2))
    run = lg.loadgen(**options)
    (row,) = run.results
    assert row.under_load is True and row.load["other_cores"] == 1.5
    assert (row.load["start"]["time"], row.load["end"]["time"]) == (2.0, 4.0)
    assert (run.environment["load"]["rows_judged"], run.environment["load"]["rows_under_load"]) == (1, 1)


# --- benchmarks/planted_load.py's check -------------------------------------------------------------------------

def _planted_load_script():
    return benchmark_script("planted_load")


def _results(*rows) -> dict:
    return {"results": [{"backend": b, "batch_size": 1, "status": "ok", "images_per_s": ips, "median_ms": 1e3 / ips,
                         "median_ci_low_ms": ci[0] if ci else None, "median_ci_high_ms": ci[1] if ci else None,
                         "under_load": under, "load": {"reason": "other processes used 2.00 cores" if under else ""}}
                        for b, ips, under, ci in rows]}


@pytest.mark.parametrize("loaded, wrong_and_sure", [
    ([("eager", 3.0, False, None), ("onnxruntime", 1.0, False, None)], True),  # flipped, nothing marked: wrong
    ([("eager", 3.0, False, None), ("onnxruntime", 1.0, True, None)], False),  # flipped, the loser marked
    ([("eager", 3.0, False, (320, 350)), ("onnxruntime", 1.0, False, (340, 1100))], False),  # intervals overlap
    ([("eager", 3.0, False, (320, 350)), ("onnxruntime", 1.0, False, (900, 1100))], True),  # disjoint: sure
    ([("eager", 3.0, True, None), ("onnxruntime", 5.0, True, None)], False),  # the quiet winner held
])
def test_planted_load_check(loaded, wrong_and_sure):
    script = _planted_load_script()
    quiet = _results(("eager", 3.0, False, None), ("onnxruntime", 5.0, False, None))
    (check,) = script._checks(quiet, _results(*loaded))
    assert check["quiet_winner"] == "onnxruntime"
    assert check["wrong_and_sure"] is wrong_and_sure


@pytest.mark.parametrize("seconds", [float("nan"), float("inf"), -1.0, 1e9])
def test_require_quiet_takes_a_finite_wait_only(seconds, cache, tmp_path):
    """nan never ends a wait on a busy machine (a hang), inf is one: both are refused before anything runs."""
    result = CliRunner().invoke(main, [
        "run", "--models", "vgg11", "--width", "0.0625", "--hidden", "32", "--image-size", str(TINY_IMAGE),
        "--batch-sizes", "1", "--backends", "eager", "--require-quiet", str(seconds), "--out", str(tmp_path / "r"),
        "--export-cache", str(cache)])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("error: ")
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").iterdir())
