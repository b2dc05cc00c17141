"""`--cluster`: a suite run across a Ray cluster (the `[fleet]` extra), one case at a time per node.

The driver (this process) expands the suite into groups (a runner and its batch sizes, as `--isolation process`
runs them) and runs every group once on each machine kind the suite names (`machines`; none: every node is one
kind). A node is of a kind when it advertises the kind as a Ray custom resource (`ray start --resources
'{"cpu-avx2": 1}'`). The driver places each group itself: on a free node of its kind (Ray's node affinity), asking
for all of that node's CPUs, GPUs and kind resource, so that no two cases ever share a node; there the group runs
in a fresh worker process (vggbench.bench.isolation), so a row of a cluster means what a local row means.

Exports are made once per artifact key on the driver (the export cache, parity-checked there) and shipped through
Ray's object store, the whole folder (manifest with its parity results, int8's calibrated model): a node writes it
into its own export cache after checking every file's sha256 against the driver's, and the manifest's checksums
again, so it never exports itself what the driver made.

Each row comes home as it is finished (a Ray streaming generator) with its node (id, host, CPU, versions, the
case's start and end there) and its machine kind, into the driver's journal. Faults: a node that dies (or whose
Ray worker dies) mid-group has the group's unfinished cases retried once on another node of the same kind, else
they become error rows that say so; Ctrl-C or SIGTERM on the driver keeps the finished rows and cancels the rest on
the cluster; a cluster that cannot be reached, or is lost, is a ClusterError (one line, exit 2).

`run_jobs` is the placement loop alone, for other commands (loadgen, tune): jobs of any body, one node each.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..core.errors import ArtifactError, BenchmarkInterrupted, ClusterError, ConfigError, Terminated, one_line
from ..core.extras import require
from .results import BenchRun, Journal
from .rows import BenchResult
from .suite import Suite, resolve_suite

POLL_S = 0.5  # how often the driver looks again at nodes and jobs while no row comes
RESERVED = {"CPU", "GPU", "memory", "object_store_memory"}  # Ray's own resources: no machine kind
ANY = ""  # the kind of every node, for a suite that names none


def require_ray():
    """Ray, or one line that names the extra to install (vggbench.core.extras)."""
    return require("ray", "--cluster")


def check_address(address: str) -> str:
    """ray://HOST:PORT (Ray Client), HOST:PORT (the head's GCS) or auto (the cluster this machine is part of)."""
    text = str(address).strip()
    host, _, port = text.removeprefix("ray://").rpartition(":")
    if text != "auto" and not (host and port.isdigit()):
        raise ConfigError(f"--cluster must be ray://HOST:PORT, HOST:PORT or auto, got {address!r}")
    return text


def check_kinds(kinds) -> tuple[str, ...]:
    bad = [k for k in kinds if not k or k != k.strip() or k in RESERVED or k.startswith("node:")]
    if bad:
        raise ConfigError(f"machine kind {bad[0]!r} cannot be a Ray custom resource (not empty, no spaces around it, "
                          f"none of {', '.join(sorted(RESERVED))}, no node:...)")
    return tuple(dict.fromkeys(kinds))


# --- the cluster ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Node:
    id: str
    address: str
    resources: dict

    @property
    def cpus(self) -> float:
        return self.resources.get("CPU", 0.0)


class _Said:
    text = ""


@contextlib.contextmanager
def _stderr_kept():
    """Keep what is written to the process's stderr (file descriptor 2) in the block, in `.text` once it ends. Ray's
    C++ client logs a warning a second while it looks for a head that does not answer, about 20 lines that no
    setting silences: when the connection fails, the one line that says so is the answer, not those."""
    said = _Said()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as kept:
        os.dup2(kept.fileno(), 2)
        try:
            yield said
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            kept.seek(0)
            said.text = kept.read().decode(errors="replace")


class Fleet:
    """A connection to a Ray cluster and its alive nodes by kind."""

    def __init__(self, address: str) -> None:
        self.address = check_address(address)
        self.ray = require_ray()
        try:
            with _stderr_kept() as said:
                self.ray.init(address=self.address, log_to_driver=False, logging_level="ERROR",
                              configure_logging=False, ignore_reinit_error=True)
        except Exception as e:  # Ray raises ConnectionError, RuntimeError, grpc's errors, ...
            raise ClusterError(f"cannot reach the Ray cluster at {self.address}: {one_line(e)}") from None
        sys.stderr.write(said.text)  # connected: what Ray said on the way is shown as it would have been
        self.watch = None if self.address.startswith("ray://") else _Watch(self.ray)

    @property
    def lost(self) -> str | None:
        """Why the connection is gone, once the watch saw it go."""
        return self.watch and self.watch.lost

    def close(self) -> None:
        if self.watch is not None:
            self.watch.stop.set()
        if not self.lost:  # a shutdown would wait on the head that is gone
            self.ray.shutdown()

    def nodes(self) -> list[Node]:
        try:
            found = self.ray.nodes()
        except Exception as e:
            raise ClusterError(f"lost the connection to the Ray cluster at {self.address}: {one_line(e)}") from None
        return [Node(n["NodeID"], n.get("NodeManagerAddress", ""), dict(n.get("Resources") or {}))
                for n in found if n.get("Alive")]

    def of_kind(self, kind: str, nodes: list[Node] | None = None) -> list[Node]:
        """The alive nodes of a kind (ANY: every node with a CPU or a GPU)."""
        nodes = self.nodes() if nodes is None else nodes
        if kind == ANY:
            return [n for n in nodes if n.cpus >= 1 or n.resources.get("GPU", 0) >= 1]
        return [n for n in nodes if n.resources.get(kind, 0) > 0]

    def require(self, kinds: tuple[str, ...]) -> dict[str, list[str]]:
        """kind -> the ids of its nodes now; a ClusterError for a kind without one."""
        nodes = self.nodes()
        found = {k: [n.id for n in self.of_kind(k, nodes)] for k in kinds}
        missing = [k or "any" for k, ids in found.items() if not ids]
        if missing:
            have = sorted({r for n in nodes for r in n.resources if r not in RESERVED and not r.startswith("node:")})
            raise ClusterError(f"the Ray cluster at {self.address} has no node of kind {', '.join(missing)} (a node "
                               f"advertises its kind as a custom resource: ray start --resources "
                               f"'{{\"{missing[0]}\": 1}}'; its custom resources: {', '.join(have) or 'none'})")
        return found


class _Watch(threading.Thread):
    """A driver connected to the head itself (not through Ray Client) is ended by Ray a minute after the head's
    GCS stops answering, with a log line and no exception, while its calls to Ray block until then. This watch
    knocks on the GCS's port every second; refused for LOST_S on end, it interrupts the main thread (run_jobs
    turns that into a ClusterError), and where the main thread is stuck in Ray's call, ends the process itself
    as Ray would, but at once and with one `error:` line (exit 2); the journal keeps the rows that came."""

    LOST_S = 5.0
    GRACE_S = 3.0  # for the main thread to take the interrupt

    def __init__(self, ray) -> None:
        super().__init__(name="vggbench cluster watch", daemon=True)
        host, _, port = ray.get_runtime_context().gcs_address.rpartition(":")
        self.gcs, self.lost, self.stop = (host, int(port)), None, threading.Event()
        self.taken = threading.Event()  # the main thread took the interrupt
        self.journal: Journal | None = None
        self.start()

    def run(self) -> None:
        import _thread

        refused_since = None
        while not self.stop.wait(1.0):
            try:
                socket.create_connection(self.gcs, timeout=2).close()
                refused_since = None
            except OSError as e:
                refused_since = refused_since or time.monotonic()
                if time.monotonic() - refused_since >= self.LOST_S:
                    self.lost = f"its head ({self.gcs[0]}:{self.gcs[1]}) has not answered for {self.LOST_S:g} s " \
                                f"({e.strerror or e})"
                    _thread.interrupt_main()
                    if not self.taken.wait(self.GRACE_S):
                        self._end()
                    return

    def _end(self) -> None:
        import sys

        j = self.journal
        kept = f"; the {j.rows} finished case(s) are kept in {j.path}" if j is not None and j.rows else ""
        print(f"error: lost the connection to the Ray cluster: {self.lost}{kept}", file=sys.stderr, flush=True)
        os._exit(2)


@dataclass
class Job:
    """One unit of work for one node of a kind: `payload` for the body, `keys` the rows it owes (for a group, its
    batch sizes), each removed as its row comes."""

    kind: str
    payload: dict
    keys: list
    order: tuple = ()
    tried: list = field(default_factory=list)  # the nodes it ran on, in turn
    lost: str = ""  # why its first node failed, once it did


def run_jobs(fleet: Fleet, jobs: list[Job], body, on_message, on_lost, *, retries: int = 1,
             extra_args: tuple = (), fresh: bool = False) -> None:
    """Run each job on a node of its kind, one job per node at a time, holding the node's CPUs, GPUs and kind.

    body: a module-level generator function, body(payload, keys, *extra_args), run in a Ray worker on the node; what
    it yields (dicts) comes to on_message(job, message, node_id) as it is yielded; a message with "key" settles that
    key of the job. A job whose node or worker dies with keys unsettled is run again with them (`retries` times) on
    another alive node of its kind; otherwise on_lost(job, reason) settles them. fresh: each job in a Ray worker
    process of its own (Ray's max_calls=1), for a body that runs the work in that process. Ctrl-C/SIGTERM: what
    is running is cancelled on the cluster and the KeyboardInterrupt goes on. A lost cluster: ClusterError."""
    ray = fleet.ray
    remote = ray.remote(max_retries=0, max_calls=1 if fresh else 0)(body)
    waiting, running, busy = list(jobs), {}, set()
    try:
        while waiting or running:
            nodes = fleet.nodes()
            for job in list(waiting):
                candidates = [n for n in fleet.of_kind(job.kind, nodes) if n.id not in job.tried]
                if not candidates:
                    waiting.remove(job)
                    on_lost(job, _no_node(job))
                    continue
                free = [n for n in candidates if n.id not in busy]
                if free:
                    node = free[0]
                    waiting.remove(job)
                    busy.add(node.id)
                    job.tried.append(node.id)
                    running[_submit(ray, remote, node, job, extra_args)] = (job, node)
            if not running:
                continue
            try:
                ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
            except Exception as e:
                raise ClusterError(f"lost the connection to the Ray cluster at {fleet.address}: {one_line(e)}") \
                    from None
            for stream in ready:
                job, node = running[stream]
                try:
                    message = ray.get(next(stream))
                except StopIteration:
                    del running[stream]
                    busy.discard(node.id)
                    if job.keys:  # the body ended without every row: they are lost, not retried
                        on_lost(job, "the node's task ended without a row for this case")
                    continue
                except Exception as e:
                    del running[stream]
                    busy.discard(node.id)
                    _failed(ray, job, node, e, waiting, on_lost, retries)
                    continue
                if "key" in message and message["key"] in job.keys:
                    job.keys.remove(message["key"])
                on_message(job, message, node.id)
    except BaseException as e:
        if fleet.lost:
            fleet.watch.taken.set()
            raise ClusterError(f"lost the connection to the Ray cluster at {fleet.address}: {fleet.lost}") from None
        for stream in running:
            with contextlib.suppress(Exception):  # already ended, or the cluster is gone: nothing to cancel
                ray.cancel(stream, force=True)
        if isinstance(e, SystemExit):  # what Ray raises in the driver when its connection ends under it
            raise ClusterError(f"lost the connection to the Ray cluster at {fleet.address}") from None
        raise


def run_on_cluster(cluster: str, kinds, jobs: list[Job], body, on_message, on_lost, *, fresh: bool = True) -> None:
    """run_jobs with its own connection, for a command of its own (`tune --cluster`): connect to `cluster`, refuse
    a kind of `kinds` without a node, run the jobs, disconnect. Exports a body needs: ship_exports on the driver
    (the refs in the payload), receive on the node; stream_rows runs a body's work in a thread and yields what it
    puts in its queue with the node's facts."""
    fleet = Fleet(cluster)
    try:
        fleet.require(check_kinds(kinds) or (ANY,))
        run_jobs(fleet, jobs, body, on_message, on_lost, fresh=fresh)
    finally:
        fleet.close()


def _submit(ray, remote, node: Node, job: Job, extra_args: tuple):
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    kind = {job.kind: node.resources[job.kind]} if job.kind != ANY else {}
    return remote.options(num_cpus=node.cpus, num_gpus=node.resources.get("GPU", 0), resources=kind,
                          scheduling_strategy=NodeAffinitySchedulingStrategy(node.id, soft=False)).remote(
        job.payload, list(job.keys), *extra_args)


def _failed(ray, job: Job, node: Node, error: Exception, waiting: list, on_lost, retries: int) -> None:
    """A job whose stream raised: the node or its worker died (retried elsewhere), or the body failed (lost)."""
    exceptions = ray.exceptions
    dead = (exceptions.NodeDiedError, exceptions.WorkerCrashedError, exceptions.ObjectLostError,
            exceptions.OwnerDiedError, exceptions.TaskUnschedulableError, exceptions.RaySystemError)
    if isinstance(error, exceptions.TaskCancelledError):
        on_lost(job, "cancelled on the cluster")
        return
    if not isinstance(error, dead):
        on_lost(job, f"the node's task failed: {_cause(error)}")
        return
    why = f"node {node.id[:12]} ({node.address}) died or lost its worker during the case ({type(error).__name__})"
    if len(job.tried) > retries:
        on_lost(job, f"{job.lost}; retried on node {node.id[:12]} ({node.address}), which failed too "
                     f"({type(error).__name__})" if job.lost else why)
        return
    job.lost = why
    waiting.append(job)


def _cause(error: Exception) -> str:
    cause = getattr(error, "cause", None)
    return one_line(cause) if isinstance(cause, BaseException) else one_line(error)


def _no_node(job: Job) -> str:
    kind = f"of kind {job.kind}" if job.kind != ANY else "in the cluster"
    if job.lost:
        return f"{job.lost}; no other node {kind} was alive to retry on"
    return f"no node {kind} was alive"


# --- a run across the cluster -----------------------------------------------------------------------------------

def benchmark_on_cluster(suite: Suite | str | os.PathLike | None = None, *, cluster: str,
                         export_cache: str | os.PathLike, node_cache: str | os.PathLike | None = None,
                         progress: bool | None = None, raise_errors: bool = False, journal: Journal | None = None,
                         **overrides) -> BenchRun:
    """vggbench.benchmark across a Ray cluster (`vggbench run --cluster`): every group of the suite on each machine
    kind of `machines` (none: every node as one kind), in a fresh worker process on a node of the kind that it
    holds alone. Rows in the suite's order per kind, each with its `machine` and `node`.

    cluster: ray://HOST:PORT, HOST:PORT or auto. export_cache: where the driver makes the exports, once.
    node_cache: the export cache on each node, where shipped exports are put [default: <tmp>/vggbench-fleet/exports
    there]. Raises BenchmarkInterrupted (the finished rows) on Ctrl-C/SIGTERM, ClusterError on a lost cluster."""
    suite = resolve_suite(suite, **overrides).override(isolation="process")
    common = {"node_cache": node_cache and str(node_cache), "raise_errors": raise_errors}
    drive = _Drive(suite, cluster, export_cache, journal, progress, "vggbench run --cluster")
    settings = {**suite.to_dict(), "export_cache": str(export_cache)}
    return drive.run(settings, lambda group: (list(group.batch_sizes), {**common, "suite": suite, "group": tuple(group)}),
                     _group_on_node, _lost_run_rows, lambda row, group: group.batch_sizes.index(row.batch_size),
                     suite.case_count())


def loadgen_on_cluster(suite: Suite | str | os.PathLike | None = None, *, cluster: str, settings=None, sut=None,
                       export_cache: str | os.PathLike, node_cache: str | os.PathLike | None = None,
                       journal: Journal | None = None, echo=None, **overrides) -> BenchRun:
    """vggbench.bench.loadgen.loadgen across a Ray cluster (`vggbench loadgen --cluster`): each (model, backend,
    precision, memory format) of the suite on each machine kind, its scenarios run by LoadGen in a fresh Ray worker
    on a node that it holds alone. LoadGen's logs stay on the nodes (rows name none)."""
    from .mlperf import SCENARIO_TABLE
    from .scenarios import LoadgenSettings, SutSettings

    settings, sut = settings or LoadgenSettings(), sut or SutSettings()
    suite = resolve_suite(suite if suite is not None else Suite(name="loadgen"), **overrides)
    order = sorted(settings.scenarios, key=lambda name: SCENARIO_TABLE[name].runs_last)
    drive = _Drive(suite, cluster, export_cache, journal, None, "vggbench loadgen --cluster", echo=echo)
    unused = ("batch_sizes", "warmup", "warmup_time_s", "min_time_s", "min_iters", "max_iters")  # `run`'s timing
    run_settings = {**{k: v for k, v in suite.to_dict().items() if k not in unused},
                    "export_cache": str(export_cache), "loadgen": settings.to_dict(), "sut": sut.to_dict(),
                    "logs": None}
    return drive.run(run_settings, lambda group: (list(order), {
        "suite": one_group(suite, group), "settings": settings, "sut": sut, "node_cache": node_cache and str(node_cache)}),
        _loadgen_on_node, _lost_scenario_rows, lambda row, group: order.index(row.scenario["name"]),
        len(suite.groups()) * len(order), fresh=True)


def one_group(suite: Suite, group) -> Suite:
    """A suite of one group alone (its backend settings, whichever [[matrix]] table gave them)."""
    from ..backends.registry import get_backend
    from ..backends.settings import SettingsMap

    backend = suite.backend
    if group.settings is not None:
        backend = SettingsMap({**suite.backend, get_backend(group.backend).settings_name: group.settings})
    return replace(suite, models=(group.model,), backends=(group.backend,), precisions=(group.precision,),
                   memory_formats=(group.memory_format,), batch_sizes=group.batch_sizes, matrix=(), backend=backend)


class _Drive:
    """What run and loadgen on a cluster share: the connection, the kinds, the exports shipped, the journal, the
    progress bar, the rows in order and the interrupt."""

    def __init__(self, suite: Suite, cluster: str, export_cache, journal: Journal | None, progress, desc: str,
                 echo=None) -> None:
        from ..zoo.weights import parse_weights

        self.suite, self.cluster, self.export_cache, self.journal = suite, cluster, Path(export_cache), journal
        self.progress, self.desc, self.echo = progress, desc, echo
        self.kinds = check_kinds(suite.machines) or (ANY,)
        self.weights = parse_weights(suite.weights, suite.seed).require()

    def run(self, settings: dict, job_of, body, lost_rows, position, per_kind: int, fresh: bool = False) -> BenchRun:
        """job_of(group) -> (keys, payload); lost_rows(suite, job, reason) -> rows; position(row, group) -> its
        place in the group."""
        from tqdm import tqdm

        from ..core.env import capture

        started = time.perf_counter()
        fleet = Fleet(self.cluster)
        if fleet.watch is not None:
            fleet.watch.journal = self.journal
        try:
            machines = fleet.require(self.kinds)
            shipped = ship_exports(fleet.ray, self.suite, self.weights, self.export_cache)
            environment = capture()
            environment["cluster"] = {"address": fleet.address, "machines": machines}
            environment["nodes"] = {}
            settings["cluster"] = fleet.address
            if self.journal is not None:
                self.journal.start(settings, environment, environment["created"])
            groups = self.suite.groups()
            jobs = []
            for k, kind in enumerate(self.kinds):
                for i, group in enumerate(groups):
                    keys, payload = job_of(group)
                    payload["artifacts"] = shipped.get(tuple(group[:4]), [])
                    jobs.append(Job(kind, payload, keys, (k, i, group)))
            rows: list[tuple[tuple, BenchResult]] = []
            total = per_kind * len(self.kinds)
            with tqdm(total=total, unit="case", desc=self.desc, dynamic_ncols=True,
                      disable=None if self.progress is None else not self.progress) as bar:

                def record(job: Job, row: BenchResult) -> None:
                    row = replace(row, machine=job.kind or None)
                    if row.node is not None:
                        row = replace(row, node={**row.node, "attempt": len(job.tried)})
                    rows.append(((*job.order[:2], position(row, job.order[2])), row))
                    if self.journal is not None:
                        self.journal.append(row)
                    bar.update(1)

                def on_message(job: Job, message: dict, node_id: str) -> None:
                    if "row" in message:
                        record(job, BenchResult(**message["row"]))
                    elif "environment" in message:
                        environment["nodes"][node_id] = message["environment"]
                    elif "status" in message:
                        bar.set_postfix_str(f"{job.kind + ': ' if job.kind else ''}{message['status']}")
                    elif "echo" in message and self.echo is not None:
                        self.echo(f"{job.kind + ': ' if job.kind else ''}{message['echo']}")

                def on_lost(job: Job, reason: str) -> None:
                    for row in lost_rows(self.suite, job, reason):
                        record(job, row)
                    job.keys.clear()

                interrupted = None
                try:
                    run_jobs(fleet, jobs, body, on_message, on_lost, fresh=fresh)
                except KeyboardInterrupt as e:
                    interrupted = "SIGTERM" if isinstance(e, Terminated) else "Ctrl-C"
        finally:
            fleet.close()
        rows.sort(key=lambda pair: pair[0])
        run = BenchRun(settings, environment, [row for _, row in rows], time.perf_counter() - started,
                       environment["created"])
        if interrupted:
            settings["interrupted"] = (f"{interrupted} after {len(rows)} of {total} cases; the rest were cancelled "
                                       f"on the cluster")
            raise BenchmarkInterrupted(run)
        return run


def _failure_case(suite: Suite, group, batch_size: int, **timing):
    """The case a node would have made, for a row that says why it never ran (the suite's thread count, or 0:
    the node's is unknown here)."""
    from ..backends import resolve_target
    from ..core.device import parse_device
    from ..core.errors import UnsupportedError
    from ..zoo.weights import parse_weights
    from .prepare import Preparation

    device = parse_device(suite.device)
    try:
        target = resolve_target(group.backend, device, group.precision, group.memory_format)
    except UnsupportedError as e:
        target = e
    prep = Preparation(suite, device, parse_weights(suite.weights, suite.seed), ".")
    prep.threads = suite.threads or 0
    return prep.case(group.model, group.backend, group.precision, group.memory_format, batch_size, target,
                     group.settings, **timing)


def _lost_run_rows(suite: Suite, job: Job, reason: str) -> list[BenchResult]:
    group = job.order[2]
    return [BenchResult.failed(_failure_case(suite, group, size), "error", reason,
                               rounds=min(suite.rounds, suite.max_iters), isolation="process")
            for size in job.keys]


def _lost_scenario_rows(suite: Suite, job: Job, reason: str) -> list[BenchResult]:
    from dataclasses import asdict

    from .loadgen import _UNTIMED
    from .mlperf import SCENARIO_TABLE
    from .rows import ScenarioResult

    settings, sut = job.payload["settings"], job.payload["sut"]
    case = _failure_case(suite, job.order[2], sut.max_batch, **_UNTIMED)
    return [BenchResult.failed(case, "error", reason, scenario=asdict(
        ScenarioResult(name, settings.mode, metric=SCENARIO_TABLE[name].metric))) for name in job.keys]


# --- artifacts: made once on the driver, shipped, checked on arrival ----------------------------------------------

def ship_exports(ray, suite: Suite, weights, export_cache: Path) -> dict[tuple, list]:
    """(model, backend, precision, memory_format) -> [object ref of its export folder] for every group of an
    artifact backend whose export could be made here; a folder is put once, whatever shares it. A group whose
    export fails here gets none: its node tries, and its row says why."""
    from ..backends import resolve_target
    from ..core.device import parse_device
    from ..core.errors import VggbenchError
    from .cache import ExportFailed
    from .prepare import Failure, Preparation

    device = parse_device(suite.device)
    prep = Preparation(suite, device, weights, export_cache)
    shipped, refs, models = {}, {}, {}
    for group in suite.groups():
        name, backend, precision, memory_format = group[:4]
        try:
            target = resolve_target(backend, device, precision, memory_format)
            if not target.artifact:
                continue
            if name not in models:
                models[name] = prep.model(name)
            if isinstance(models[name], Failure):
                continue
            # int8: each group's quantization (its backend's settings) is an export of its own
            folder = models[name].cache.folder(target, prep.setup.settings(backend, group.settings))
        except (VggbenchError, ExportFailed):
            continue
        if folder not in refs:
            refs[folder] = ray.put(pack(folder))
        shipped.setdefault(tuple(group[:4]), {})[folder] = refs[folder]
    return {key: list(by_folder.values()) for key, by_folder in shipped.items()}


def pack(folder: Path) -> dict:
    """An export folder as data: its name and every file's bytes and sha256 (no links: a planted one is refused)."""
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            raise ArtifactError(f"{path} is a symbolic link; an export folder has none")
        if path.is_file():
            data = path.read_bytes()
            files[path.relative_to(folder).as_posix()] = (data, hashlib.sha256(data).hexdigest())
    return {"key": folder.name, "files": files}


def receive(package: dict, cache: Path) -> Path:
    """Put a shipped export folder into a node's export cache (unless the same is there already), every file
    checked against the driver's sha256 and the manifest's, under the export cache's own lock for that key."""
    from ..core.fileio import atomic_dir, exclusive
    from ..exporters.export import not_an_export
    from ..exporters.manifest import artifact, read_manifest

    key = package["key"]
    if "/" in key or key.startswith("."):
        raise ArtifactError(f"a shipped export folder is named {key!r}")
    folder = cache / key
    cache.mkdir(parents=True, exist_ok=True)
    with exclusive(cache / f"{key}.making", wait=True):
        if _holds(folder, package):
            return folder
        with atomic_dir(folder, force=True, not_ours=not_an_export) as tmp:
            for name, (data, sha) in package["files"].items():
                if Path(name).is_absolute() or ".." in Path(name).parts:  # it would land outside the folder
                    raise ArtifactError(f"a shipped export file is named {name!r}")
                path = tmp / name
                if hashlib.sha256(data).hexdigest() != sha:
                    raise ArtifactError(f"{name} of export {key} does not match the driver's sha256 on arrival")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            manifest = read_manifest(tmp)
            for fmt in manifest.artifacts:
                artifact(manifest, fmt, tmp)  # and against the manifest's own checksums
    return folder


def _holds(folder: Path, package: dict) -> bool:
    """Whether `folder` already holds exactly the shipped files."""
    from ..core.fileio import sha256_file

    if not folder.is_dir() or folder.is_symlink():
        return False
    for name, (data, sha) in package["files"].items():
        path = folder / name
        if path.is_symlink() or not path.is_file() or path.stat().st_size != len(data) or sha256_file(path) != sha:
            return False
    return True


# --- on the node -------------------------------------------------------------------------------------------------

_END = object()
_PEAKS: dict = {}  # (device, precision, threads) -> this worker's GEMM peak, measured once


def node_facts() -> dict:
    """What each row of a node carries about it: enough to tell nodes and kinds apart."""
    import ray

    from ..core.env import cpu_info, cuda_info, package_version

    cpu = cpu_info()
    cuda = cuda_info() or {}
    return {"id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
            "address": ray.util.get_node_ip_address(), "cpu": cpu["model"], "cores": cpu["available_cores"],
            "capability": cpu["capability"], "gpus": [d.get("name") for d in cuda.get("devices", [])],
            "torch": package_version("torch"), "vggbench": package_version("vggbench")}


def _group_on_node(payload: dict, keys: list):
    """In a Ray worker on the node: receive the group's exports, then run its unfinished batch sizes in a fresh
    worker process (the isolated sweep), yielding each row (with the node and its start and end there) as it
    comes, then the node's environment."""
    yield from stream_rows(payload, keys, _run_group, lambda row: row["batch_size"])


def _loadgen_on_node(payload: dict, keys: list):
    """In a Ray worker of its own on the node: receive the target's exports, then LoadGen's unfinished scenarios,
    each row yielded as it comes."""
    yield from stream_rows(payload, keys, _run_loadgen, lambda row: row["scenario"]["name"])


def stream_rows(payload: dict, keys: list, work, key_of):
    """Run work(payload, keys, cache, out) in a thread and yield what it puts in `out`: rows with the node's facts
    and the case's start and end there."""
    import ray

    facts = {**node_facts(), "nice": _unniced()}
    cache = Path(payload["node_cache"] or Path(tempfile.gettempdir()) / "vggbench-fleet" / "exports")
    for ref in payload["artifacts"]:
        receive(ray.get(ref), cache)
    out: queue.Queue = queue.Queue()
    worker = threading.Thread(target=_guarded, args=(work, payload, keys, cache, out), daemon=True)
    started = time.time()
    worker.start()
    try:
        while True:
            try:
                message = out.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if message is _END:
                break
            if "raised" in message:
                raise RuntimeError(message["raised"])
            if "row" in message:
                ended = time.time()
                message["row"]["node"] = {**facts, "started": started, "ended": ended}
                message["key"] = key_of(message["row"])
                started = ended
            yield message
    finally:
        if worker.is_alive():  # cancelled: the work's processes go too
            _stop_children()


def _unniced() -> int:
    """Ray starts its workers at nice 15 (its worker_niceness), where a case would yield the CPU to anything else
    on the node (on a busy 2-core machine, eager ran 20x slower than at nice 0): back to 0 where that is allowed
    (root, CAP_SYS_NICE; else start the nodes with RAY_worker_niceness=0). The niceness left is in each row's node."""
    with contextlib.suppress(OSError):
        if os.nice(0) > 0:
            os.setpriority(os.PRIO_PROCESS, 0, 0)
    return os.nice(0)


def _guarded(work, payload: dict, keys: list, cache: Path, out: queue.Queue) -> None:
    try:
        work(payload, keys, cache, out)
    except Exception as e:  # the node's own failure (weights missing there, ...): the job's rows say it
        out.put({"raised": one_line(e)})
    finally:
        out.put(_END)


class _Rows:
    """A journal (and progress bar) whose rows, status lines and echoes go to the driver through `out`."""

    def __init__(self, out: queue.Queue) -> None:
        self.out = out

    def start(self, *args) -> None:
        pass

    def append(self, row) -> None:
        from dataclasses import asdict

        self.out.put({"row": asdict(row)})

    def set_postfix_str(self, text: str) -> None:
        self.out.put({"status": text})

    def update(self, n: int) -> None:
        pass

    def echo(self, line: str) -> None:
        self.out.put({"echo": line})


def _run_loadgen(payload: dict, keys: list, cache: Path, out: queue.Queue) -> None:
    from .loadgen import loadgen

    rows = _Rows(out)
    settings = replace(payload["settings"], scenarios=tuple(keys))
    run = loadgen(payload["suite"], settings=settings, sut=payload["sut"], export_cache=cache, journal=rows,
                  echo=rows.echo)
    out.put({"environment": run.environment})


def _run_group(payload: dict, keys: list, cache: Path, out: queue.Queue) -> None:
    """The sweep of one group as `--isolation process` runs it, here; rows and status to `out`."""
    import torch

    from ..core.device import require_device
    from ..core.env import capture
    from ..core.load import LoadSampler
    from ..core.numerics import scoped_numerics, tf32_flag
    from ..zoo.weights import parse_weights
    from .peak import Ceilings, measure_peak
    from .sweep import _plan, _Sweep, _theoretical

    suite = payload["suite"]
    name, *group = payload["group"]
    group[3] = tuple(b for b in group[3] if b in keys)
    device = require_device(suite.device)
    weights = parse_weights(suite.weights, suite.seed).require()
    with scoped_numerics(suite.threads, tf32_flag(device, suite.tf32), suite.cudnn_benchmark):
        plan = {k: v for k, v in _plan(suite, device).items() if k == (name, *group[:3])}
        precisions = {t.precision for t in plan.values() if not isinstance(t, Exception)}
        threads = torch.get_num_threads()
        for p in precisions:
            if (str(device), p, threads) not in _PEAKS:
                _PEAKS[str(device), p, threads] = measure_peak(device, p)
        peaks = [_PEAKS[str(device), p, threads] for p in precisions if _PEAKS[str(device), p, threads]]
        ceilings = Ceilings(peaks, _theoretical(plan, device, suite))
        rows = _Rows(out)
        sweep = _Sweep(suite, device, weights, plan, cache, ceilings, False, payload["raise_errors"], rows,
                       LoadSampler())
        sweep.bar = rows
        sweep._isolated(name, [tuple(group)])
        environment = capture()
        environment["gemm_peaks"], environment["ceilings"] = peaks, ceilings.to_list()
    out.put({"environment": environment})


def _stop_children() -> None:
    """The worker processes this Ray worker started (the group's isolated worker), terminated, then killed."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        child.terminate()
    _, alive = psutil.wait_procs(children, timeout=5)
    for child in alive:
        child.kill()
