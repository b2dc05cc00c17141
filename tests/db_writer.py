"""A writer for the results database tests, run as a separate process: records COUNT made-up runs (CASES cases of
SAMPLES samples each) tagged TAG into DB, printing "recorded N" after each commit. With PAUSE_AT, the run of that
number (1-based) prints "inside N" once half its cases are written, in its open transaction, and waits there
(for a kill).

    python -m tests.db_writer DB TAG COUNT CASES SAMPLES [PAUSE_AT]
"""

from __future__ import annotations

import sys
import time

from sqlalchemy import event

from vggbench.bench.db import Database

ENV = {"python": "3.11", "cpu": {"model": "Test CPU", "logical_cores": 2}, "versions": {"torch": "2.0"}}


def envelope(tag: str, n: int, cases: int, samples: int) -> dict:
    rows = [{"model": "vgg11", "image_size": 32, "batch_size": 1 + c, "backend": "eager", "device": "cpu",
             "precision": "fp32", "memory_format": "contiguous", "threads": 1, "status": "ok", "median_ms": 1.0 + c,
             "images_per_s": (1 + c) / (1.0 + c) * 1e3, "samples_ms": [1.0 + c + k * 1e-3 for k in range(samples)]}
            for c in range(cases)]
    return {"schema_version": 2, "kind": "vggbench-run", "created": f"2026-01-01T00:{n // 60:02d}:{n % 60:02d}+00:00",
            "settings": {"tag": tag, "n": n}, "environment": ENV, "results": rows}


def main(db: str, tag: str, count: int, cases: int, samples: int, pause_at: int = 0) -> None:
    with Database(db) as database:
        written = {"cases": 0, "run": 0}

        @event.listens_for(database.engine, "after_cursor_execute")
        def pause(conn, cursor, statement, parameters, context, executemany):
            if statement.startswith("INSERT INTO cases"):
                written["cases"] += 1
                if written["run"] + 1 == pause_at and written["cases"] == cases // 2:
                    print(f"inside {pause_at}", flush=True)
                    time.sleep(600)

        for n in range(count):
            written.update(cases=0, run=n)
            database.record_results(envelope(tag, n, cases, samples))
            print(f"recorded {n + 1}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:]))
