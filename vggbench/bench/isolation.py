"""`--isolation process`: a group (one runner and its batch sizes) built and timed in a fresh worker process.

The worker (multiprocessing's spawn context: no state inherited from the parent, CUDA-safe) applies the run's
thread count and numeric flags, then runs the sweep's own code on its one group (vggbench.bench.prepare's
Preparation, vggbench.core.timing, rounds within the group) and sends each row back through a pipe as it is
finished. A worker that crashes (a segfault, a kill, os._exit), fails outside a row or outlives the suite's
worker_timeout_s leaves its unfinished cases as "error" rows that say how it ended, and the run goes on. Ctrl-C
and SIGTERM in the parent stop the worker; the rows it had sent are kept.

Only the standard library is imported at the top: the worker imports this module before it can ignore SIGINT,
and a Ctrl-C meant for the parent should not cut its start short with a traceback.
"""

from __future__ import annotations

import importlib
import pickle
import signal
import sys
import time

POLL_S = 0.2  # how often the parent looks at a silent worker: still alive, past its timeout?
WATCH_S = 1.0  # how often it reads the worker's memory (what the host takes back when it exits)
STOP_S = 5.0  # after SIGTERM, how long a worker has to go before SIGKILL


def run_group(sweep, name: str, group: tuple, cases: list, body) -> None:
    """Build and time one group of model `name` in a worker: group is (backend, precision, memory_format, batch
    sizes, backend settings), `cases` its cases as this process made them. Every case gets a row, recorded
    through `sweep` (its journal and progress bar) as it arrives. body: what the worker runs,
    body(conn, **job), a module-level function of the caller's (the sweep's own code: this module imports none of
    it), which sends {"row": ...} and {"status": ...} messages through conn."""
    import multiprocessing

    import torch

    from ..core.load import higher_anon_rss, host_takes_freed_memory, settle_time_s
    from .rows import BenchResult

    target = sweep.plan[(name, *group[:3])]
    # settle_until: the worker waits, before its first call, until the host has taken back what the worker before
    # it freed (vggbench.core.load.settle_time_s; a time.time(), which both processes share)
    job = pickle.dumps({"suite": sweep.suite, "export_cache": str(sweep.prep.export_cache),
                        "ceilings": sweep.ceilings, "threads": torch.get_num_threads(),
                        "raise_errors": sweep.prep.raise_errors, "name": name, "group": group, "target": target,
                        "settle_until": getattr(sweep, "settle_until", None)})
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    worker = context.Process(target=_worker, args=(send, _registered(), job, body),
                             name=f"vggbench {name} {group[0]}", daemon=True)
    worker.start()
    send.close()  # the worker holds the only write end: its exit is the pipe's end
    by_size = {case.batch_size: case for case in cases}
    done, raised, status, timed_out = False, None, "", False
    deadline = None if sweep.suite.worker_timeout_s is None else time.monotonic() + sweep.suite.worker_timeout_s
    peak, read_at = None, 0.0
    try:
        while not done:
            if time.monotonic() - read_at >= WATCH_S:
                peak, read_at = higher_anon_rss(worker.pid, peak), time.monotonic()
            if receive.poll(POLL_S):
                try:
                    message = receive.recv()
                except (EOFError, OSError):  # it exited (or died) after its last message
                    break
                if "row" in message:
                    row = BenchResult(**message["row"])
                    by_size.pop(row.batch_size, None)
                    sweep.see(row)
                    sweep._record([row])
                elif "status" in message:
                    status = message["status"]
                    sweep.bar.set_postfix_str(status)
                elif "raised" in message:
                    raised = message
                done = bool(message.get("done"))
            elif not worker.is_alive() and not receive.poll(0):
                break
            elif deadline is not None and time.monotonic() > deadline:
                timed_out = True
                worker.kill()
                break
    except BaseException:  # Ctrl-C, SIGTERM: the worker goes too; the rows it sent are recorded already
        _stop(worker)
        raise
    finally:
        receive.close()
    worker.join(STOP_S)
    if worker.is_alive():
        _stop(worker)
    sweep.settle_until = time.time() + settle_time_s(peak, host_takes_freed_memory())
    if raised is not None and sweep.prep.raise_errors:
        raise RuntimeError(f"in the worker process: {raised['traceback']}")
    if by_size:
        reason = _how_it_ended(worker.exitcode, raised, timed_out, sweep.suite.worker_timeout_s, done)
        reason += f" during: {status}" if status else ""
        sweep._record([BenchResult.failed(case, "error", reason) for case in by_size.values()])


def _how_it_ended(exitcode: int | None, raised: dict | None, timed_out: bool, timeout_s: float | None,
                  done: bool) -> str:
    if timed_out:
        return f"the worker process was still running after {timeout_s:g} s (worker_timeout_s) and was killed"
    if raised is not None:
        return f"the worker process failed: {raised['raised']}"
    if done:
        return "the worker process finished without a row for this case"
    if exitcode is not None and exitcode < 0:
        try:
            name = f" ({signal.Signals(-exitcode).name})"
        except ValueError:
            name = ""
        return f"the worker process was killed by signal {-exitcode}{name}"
    return f"the worker process exited with code {exitcode} before its cases were done"


def _stop(worker) -> None:
    """SIGTERM, then SIGKILL if it lingers."""
    if worker.is_alive():
        worker.terminate()
        worker.join(STOP_S)
    if worker.is_alive():
        worker.kill()
        worker.join()


def _registered() -> tuple[list[str], list[str]]:
    """What a fresh process needs to know the parent's backends: the backends package's search path and every
    module that registered one (the built-in ones, which the registry would import anyway, and any registered
    at run time, such as a plugin's)."""
    from .. import backends
    from ..backends.registry import backend_names, get_backend

    modules = set()
    for name in backend_names():
        backend = get_backend(name)
        modules.update(m for m in (backend.factory.__module__, getattr(backend.settings, "__module__", None))
                       if m and m not in ("__main__", "__mp_main__"))
    return list(backends.__path__), sorted(modules)


# --- in the worker -------------------------------------------------------------------------------------------

def _worker(conn, registered: tuple[list[str], list[str]], job: bytes, body) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    try:
        path, modules = registered
        from .. import backends

        backends.__path__[:] = [*backends.__path__, *(p for p in path if p not in backends.__path__)]
        for module in modules:
            importlib.import_module(module)
        body(conn, **pickle.loads(job))
    except BaseException as e:
        import traceback

        from ..core.errors import one_line

        conn.send({"raised": one_line(e), "traceback": traceback.format_exc()})
        conn.close()
        sys.exit(1)
    conn.send({"done": True})
    conn.close()
