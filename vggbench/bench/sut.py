"""The system under test: queues the samples LoadGen issues and runs them in batches on worker threads.

A worker takes up to `max_batch` queued samples; when fewer are queued it waits, at most `max_wait_s` after the
oldest of them arrived, for more (Server's dynamic batching; Offline's queue is full from the start, and a
SingleStream or MultiStream query is whole when issued, so they wait for nothing). Several workers run batches
concurrently, which pays where the backend's kernels release the GIL (onnxruntime, torch). LoadGen itself is
not imported here: `infer` computes a batch and `complete` answers it, so a fake runner can stand in for both.

The SUT times its own part of each sample's latency: how long it queued (from `issue` to its batch's start) and
how long its batch computed. LoadGen's latency is longer by LoadGen's own share (from the scheduled arrival to
`issue`, and from `complete` on), so the three together say whether a late tail came from the queue or from
slow batches.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from ..core.timing import Stats


def batch_within(seconds: Callable[[int], float], max_batch: int, budget_s: float) -> int:
    """The largest of 1, 2, 4, ... (and max_batch itself) whose call takes at most `budget_s`, by `seconds(size)`;
    1 at least. Sizes are tried upward and the first one over the budget ends it, so no larger one is timed."""
    best = 1
    for size in sorted({min(2 ** k, max_batch) for k in range(1, max_batch.bit_length() + 1)} - {1}):
        if seconds(size) > budget_s:
            break
        best = size
    return best


class BatchingSut:
    """infer(indices) -> (n, k) float32 array, one row per sample; complete([(response id, row), ...]) tells LoadGen
    they are done. An error in `infer` still completes its samples (empty rows), so that LoadGen is never left
    waiting; the first such error is kept in `error`. `abort()` answers everything at once without inference."""

    def __init__(self, infer: Callable[[list[int]], np.ndarray],
                 complete: Callable[[list[tuple[int, np.ndarray]]], None], *, max_batch: int, max_wait_s: float,
                 workers: int = 1) -> None:
        if max_batch < 1 or workers < 1 or max_wait_s < 0:
            raise ValueError(f"need max_batch >= 1, workers >= 1, max_wait_s >= 0; got {max_batch}, {workers}, "
                             f"{max_wait_s}")
        self.infer, self.complete = infer, complete
        self.max_batch, self.max_wait_s, self.workers = max_batch, max_wait_s, workers
        self._queue: collections.deque[tuple[int, int, float]] = collections.deque()  # (id, index, arrival)
        self._ready = threading.Condition()
        self._stopping = self._flushing = self._aborted = False
        self._threads: list[threading.Thread] = []
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self.queued_s: list[float] = []  # per sample: issue -> its batch's start
        self.compute_s: list[float] = []  # per batch: infer's time
        self.error: BaseException | None = None

    # --- LoadGen's callbacks -----------------------------------------------------------------------------
    def issue(self, samples: Sequence[tuple[int, int]]) -> None:
        """Queue (response id, sample index) pairs."""
        now = time.perf_counter()
        with self._ready:
            self._queue.extend((sid, index, now) for sid, index in samples)
            self._ready.notify_all()

    def flush(self) -> None:
        """No more samples are coming soon: run what is queued without waiting."""
        with self._ready:
            self._flushing = True
            self._ready.notify_all()

    # --- life cycle ----------------------------------------------------------------------------------------
    def start(self) -> BatchingSut:
        self._stopping = self._flushing = False
        self._threads = [threading.Thread(target=self._work, name=f"vggbench-sut-{i}", daemon=True)
                         for i in range(self.workers)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """Finish what is queued, then end the workers."""
        with self._ready:
            self._stopping = True
            self._ready.notify_all()
        for t in self._threads:
            t.join()
        self._threads = []

    def abort(self) -> None:
        """Answer every queued and later sample at once, without running it (Ctrl-C: LoadGen ends sooner)."""
        with self._ready:
            self._aborted = True
            self._ready.notify_all()

    def __enter__(self) -> BatchingSut:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def describe(self) -> dict:
        batches = sum(self.batch_sizes.values())
        samples = sum(size * n for size, n in self.batch_sizes.items())
        return {"max_batch": self.max_batch, "max_wait_ms": self.max_wait_s * 1e3, "workers": self.workers,
                "batches": batches, "mean_batch": samples / batches if batches else None,
                "queued_ms": _percentiles(self.queued_s), "compute_ms": _percentiles(self.compute_s)}

    # --- the workers ---------------------------------------------------------------------------------------
    def _take(self) -> list[tuple[int, int, float]] | None:
        """The next batch, or None when stopping with nothing queued."""
        with self._ready:
            while not self._queue:
                if self._stopping:
                    return None
                self._ready.wait()
            deadline = self._queue[0][2] + self.max_wait_s
            while (len(self._queue) < self.max_batch and not (self._stopping or self._flushing or self._aborted)
                   and (left := deadline - time.perf_counter()) > 0):
                self._ready.wait(left)
                if not self._queue:  # another worker took them meanwhile
                    return []
            n = min(self.max_batch, len(self._queue))
            self._flushing = self._flushing and len(self._queue) > n  # a flush lasts until the queue is empty
            if not self._aborted:
                self.batch_sizes[n] += 1
            return [self._queue.popleft() for _ in range(n)]

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            if not batch:
                continue
            ids, indices = [b[0] for b in batch], [b[1] for b in batch]
            rows = None
            if not self._aborted and self.error is None:
                started = time.perf_counter()
                try:
                    rows = np.ascontiguousarray(self.infer(indices), dtype=np.float32)
                except BaseException as e:  # kept, and every sample still answered
                    self.error = self.error or e
                else:  # list.append is atomic: workers need no lock for these
                    self.compute_s.append(time.perf_counter() - started)
                    self.queued_s.extend(started - arrival for _, _, arrival in batch)
            if rows is None:
                rows = np.zeros((len(batch), 0), dtype=np.float32)
            self.complete(list(zip(ids, rows, strict=True)))


def _percentiles(seconds: list[float]) -> dict[str, float] | None:
    """p50, p90, p99 and max, in ms (None when nothing was timed)."""
    if not seconds:
        return None
    stats = Stats(tuple(t * 1e3 for t in seconds))
    return {"p50": stats.median_ms, "p90": stats.p90_ms, "p99": stats.p99_ms, "max": stats.max_ms}
