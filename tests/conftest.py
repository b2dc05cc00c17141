"""Shared fixtures: tiny models, an isolated torch hub cache, offline weights; caches in a temp folder, the
`cuda` marker's skip, and a guard that fails the run when tests left files in the repository or the user's cache."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from vggbench.core.device import CPU
from vggbench.zoo import specs

# 1/16 of the paper's channels (4..32) and a small classifier: fast, yet every layer is there.
TINY = {"width": 1 / 16, "hidden": 32}
TINY_IMAGE = 32


def benchmark_script(name: str):
    """A script of benchmarks/ (not a package) imported as a module, for its functions."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def slow_except(values, *fast):
    """Parametrize values with all but `fast` marked slow: the fast tier keeps one case, the slow tier the rest."""
    return [v if v in fast else pytest.param(v, marks=pytest.mark.slow) for v in values]


class FakeRunner:
    """Stands in for a backend's runner: runs the real model, its logits plus one when `wrong`, and runs out of
    memory from `oom_from` images on; records the batch size of every call."""

    torch_stream = False

    def __init__(self, module, target, oom_from=None, wrong=False):
        self.module, self.target, self.oom_from, self.wrong = module, target, oom_from, wrong
        self.device, self.precision, self.memory_format, self.name = CPU, "fp32", "contiguous", "fake"
        self.batches: list[int] = []

    def prepare(self, batch):
        return batch

    def run(self, x):
        self.batches.append(x.shape[0])
        if self.oom_from is not None and x.shape[0] >= self.oom_from:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        with torch.inference_mode():
            out = self.module(x)
        return out + 1 if self.wrong else out

    def synchronize(self):
        pass

    def to_tensor(self, out):
        return out.float()

    def notes(self, batch):
        return ""

    def __call__(self, batch):
        return self.to_tensor(self.run(self.prepare(batch)))


REPO = Path(__file__).resolve().parent.parent
USER_CACHE = Path.home() / ".cache" / "vggbench"  # native.cache_dir()'s default root
USER_DATA = Path.home() / ".local" / "share" / "vggbench"  # the results database's default folder
# Caches that outlive one test, in one temp folder per session: pytest's controller makes it before any test
# module is imported and pytest-xdist's workers inherit the variables, so the C++ kernels are built once a
# session and shared by the workers (inductor reuses what another worker compiled).
SESSION_ENV = "VGGBENCH_TEST_SESSION_DIR"
CACHES = {"VGGBENCH_CACHE": "vggbench", "TORCHINDUCTOR_CACHE_DIR": "inductor", "TRITON_CACHE_DIR": "triton",
          "MPLCONFIGDIR": "matplotlib"}
# Written by the tools themselves (git-ignored, never by vggbench): not counted as files a test left behind.
TOOL_FOLDERS = {".git", ".venv", "venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis"}


def _is_worker() -> bool:
    return "PYTEST_XDIST_WORKER" in os.environ


def _files(root: Path) -> set[str]:
    """Every file under root, relative, outside the tools' own folders (a missing root has none)."""
    found = set()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in TOOL_FOLDERS and not d.endswith(".egg-info")]
        found.update(os.path.relpath(os.path.join(folder, f), root) for f in files)
    return found


def pytest_configure(config):
    """Under pytest-xdist, share the cores between the workers: each one's torch would otherwise take them
    all (8 workers x 16 threads on a 16-core GPU machine slowed the training tests past minutes).
    Point every cache at this session's temp folder, and note what the checkout and ~/.cache/vggbench hold."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    if not _is_worker():
        session_dir = Path(tempfile.mkdtemp(prefix="vggbench-tests-"))
        saved = {k: os.environ.get(k) for k in [SESSION_ENV, *CACHES]}
        config._vggbench_session = {"dir": session_dir, "saved": saved, "repo": _files(REPO),
                                    "user_cache": _files(USER_CACHE), "user_data": _files(USER_DATA)}
        os.environ[SESSION_ENV] = str(session_dir)
        for variable, name in CACHES.items():
            os.environ[variable] = str(session_dir / name)
    # Hypothesis keeps its example database and constants in ./.hypothesis unless told otherwise
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(Path(os.environ[SESSION_ENV]) / "hypothesis")


def pytest_collection_modifyitems(config, items):
    """`@pytest.mark.cuda` tests are skipped, with the reason, where torch sees no CUDA device. A worker notes
    each test's xdist_group for the controller's scheduler (see pytest_xdist_make_scheduler)."""
    if _is_worker() and getattr(config.option, "loadgroup", False):  # xdist sets it on a worker for loadgroup
        path = Path(os.environ[SESSION_ENV]) / f"xdist-groups-{os.environ['PYTEST_XDIST_WORKER']}.json"
        path.write_text(json.dumps(_groups(items)))
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marked cuda)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def _groups(items) -> dict[str, str]:
    """Each test's xdist group: tests that share a module-scoped fixture (which a worker builds once and keeps
    while it runs that module's tests) or an xdist_group mark are one group, so that one worker builds it. A
    test that shares nothing is its own unit (not in the result)."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    keys_of = {}
    for item in items:
        keys = [f"group {m.args[0] if m.args else m.kwargs.get('name', 'default')}"
                for m in item.iter_markers("xdist_group")]
        info = getattr(item, "_fixtureinfo", None)
        for name in item.fixturenames if info else ():
            defs = info.name2fixturedefs.get(name)
            if defs and defs[-1].scope == "module":
                keys.append(f"fixture {defs[-1].baseid}::{name}")
        if keys:
            keys_of[item.nodeid] = keys
            for key in keys[1:]:
                parent[root(key)] = root(keys[0])
    return {nodeid: root(keys[0]) for nodeid, keys in keys_of.items()}


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """--dist loadgroup that groups: xdist 3.8 tags a grouped test by appending "@NAME" to its node id, which
    pytest 9.2's node ids ignore (pytest-dev/pytest-xdist#1386), so every test was its own unit and a module
    fixture meant for one worker was built on each. The groups come from the workers' notes instead; a node id
    that does carry "@NAME" (an xdist that works again) keeps xdist's own grouping."""
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class NotedGroups(LoadGroupScheduling):
        groups: dict | None = None

        def _split_scope(self, nodeid: str) -> str:
            if nodeid.rfind("@") > nodeid.rfind("]"):
                return super()._split_scope(nodeid)
            if self.groups is None:  # read once every worker has collected (schedule() runs only then)
                self.groups = {}
                for note in Path(os.environ[SESSION_ENV]).glob("xdist-groups-*.json"):
                    self.groups.update(json.loads(note.read_text()))
            return self.groups.get(nodeid, nodeid)

    return NotedGroups(config, log)


def pytest_collection_finish(session):
    """Collection builds nothing: the C++ kernels are built by the first test that needs them, never on import.
    (Under xdist no worker runs a test before every worker has collected.)"""
    built = _files(Path(os.environ["VGGBENCH_CACHE"]))
    if built:  # the controller, which collects nothing under xdist, reports it at the end
        note = Path(os.environ[SESSION_ENV]) / f"built-at-collection-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
        note.write_text("".join(f"{f}\n" for f in sorted(built)))


def pytest_sessionfinish(session, exitstatus):
    """Fail the run when it built kernels while collecting, or left new files in the repository or in the
    user's ~/.cache/vggbench (every default output folder and cache must point at a temp folder in tests)."""
    config = session.config
    state = getattr(config, "_vggbench_session", None)
    if state is None:  # an xdist worker: the controller checks
        return
    notes = sorted(state["dir"].glob("built-at-collection-*"))
    problems = sorted({f"built while collecting tests: $VGGBENCH_CACHE/{f}" for n in notes
                       for f in n.read_text().split()})
    problems += [f"new file in the repository: {f}" for f in sorted(_files(REPO) - state["repo"])]
    problems += [f"new file in {USER_CACHE}: {f}" for f in sorted(_files(USER_CACHE) - state["user_cache"])]
    problems += [f"new file in {USER_DATA}: {f}" for f in sorted(_files(USER_DATA) - state["user_data"])]
    if problems:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        reporter.write("\n")  # after the progress line, which has none
        reporter.write_sep("=", "hermetic check failed", red=True)
        for line in problems[:20]:
            reporter.write_line(f"hermetic check: {line}", red=True)
        if len(problems) > 20:
            reporter.write_line(f"hermetic check: ... and {len(problems) - 20} more", red=True)
        if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config):
    state = getattr(config, "_vggbench_session", None)
    if state is None:
        return
    for variable, value in state["saved"].items():
        if value is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = value
    shutil.rmtree(state["dir"], ignore_errors=True)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path_factory):
    """Never touch the user's hub cache, the checkout or the network; keep torch's thread count as the test
    found it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    monkeypatch.setenv("VGGBENCH_OFFLINE", "1")
    # run, loadgen and verify also record into the results database: each test its own, never the user's
    monkeypatch.setenv("VGGBENCH_DB", str(tmp_path_factory.mktemp("db") / "results.db"))
    # The default output folders (exports/, exports/.cache, benchmarks/results/, runs/, data/) are relative
    # to the working directory: a test that leaves one out writes into a temp folder, not into the checkout.
    # Its own folder, not tmp_path, which some tests expect to find empty.
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    # ...and a subprocess started from there still imports this checkout's vggbench, not an installed one
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    threads = torch.get_num_threads()
    # a test that registers a custom model (--config) must not add it to the zoo of the tests after it
    models, aliases = dict(specs._REGISTRY), dict(specs._ALIASES)
    yield
    torch.set_num_threads(threads)
    specs._REGISTRY.clear(), specs._REGISTRY.update(models)
    specs._ALIASES.clear(), specs._ALIASES.update(aliases)


@pytest.fixture
def tiny():
    return dict(TINY)


_PEAKS: dict = {}


@pytest.fixture(autouse=True)
def _gemm_peak_once_per_worker(monkeypatch):
    """A run measures torch's GEMM rate before its cases (seconds: it grows the matrices until one call takes
    80 ms); every in-process run of a worker shares that measurement, at the same device, precision and thread
    count. The peak tests, and tests that patch `sweep.measure_peak` themselves, still call or replace it."""
    import copy

    import vggbench.bench.sweep as sweep

    real = sweep.measure_peak

    def measured_once(device, precision, *args, **kwargs):
        key = (device, precision, torch.get_num_threads(), args, tuple(sorted(kwargs.items())))
        if key not in _PEAKS:
            _PEAKS[key] = real(device, precision, *args, **kwargs)
        return copy.deepcopy(_PEAKS[key])

    monkeypatch.setattr(sweep, "measure_peak", measured_once)
