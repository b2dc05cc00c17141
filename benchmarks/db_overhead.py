"""What the results database costs a run (issue 30): the time to record a run of C cases of S samples into a fresh
SQLite file (what `vggbench run` adds after writing its JSON), to import benchmarks/results/, to list the history
and to draw one case's history, and the file's size. Each figure is the median of --repeats runs in fresh
folders. Prints a table (and --out writes it as JSON).

    python benchmarks/db_overhead.py [--repeats 5] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vggbench.bench.db import Database, HistoryFilter, import_files  # noqa: E402
from vggbench.core.env import capture  # noqa: E402


def envelope(cases: int, samples: int, n: int, env: dict) -> dict:
    rows = [{"model": "vgg16", "image_size": 224, "batch_size": 2 ** (c % 8), "backend": f"b{c // 8}",
             "device": "cpu", "precision": "fp32", "memory_format": "contiguous", "threads": 2, "status": "ok",
             "median_ms": 10.0, "images_per_s": 100.0, "samples_ms": [10.0 + k * 1e-4 for k in range(samples)]}
            for c in range(cases)]
    return {"schema_version": 2, "kind": "vggbench-run", "created": f"2026-01-01T00:00:{n:02d}+00:00",
            "settings": {"n": n}, "environment": env, "results": rows}


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def record_new(db: Path, data: dict) -> None:
    with Database(db) as database:
        database.record_results(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out")
    args = parser.parse_args()
    env = capture()
    rows = []
    for cases, samples in ((20, 30), (100, 200), (100, 2000)):
        first, later, sizes = [], [], []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                db = Path(tmp) / "results.db"
                # the first run into a new file also creates the schema; later runs find it
                first.append(timed(record_new, db, envelope(cases, samples, 0, env)))
                with Database(db) as database:
                    later.append(timed(database.record_results, envelope(cases, samples, 1, env)))
                sizes.append(sum(p.stat().st_size for p in Path(tmp).iterdir()) / 2)  # per run, WAL included
        rows.append({"what": f"record a run of {cases} cases x {samples} samples", "first_s": statistics.median(first),
                     "into_existing_s": statistics.median(later), "bytes_per_run": statistics.median(sizes)})
    files = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
    imports, lists, histories = [], [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "results.db"
            imports.append(timed(import_files, files, db))
            with Database(db) as database:
                lists.append(timed(database.cases, HistoryFilter(model=("vgg16",))))
                case = database.cases(HistoryFilter(backend=("eager",)))[0]
                histories.append(timed(database.case_history, case, case["machine"]))
    rows.append({"what": f"db import of benchmarks/results/ ({len(files)} files)", "first_s": statistics.median(imports)})
    rows.append({"what": "history --cases --model vgg16 (query)", "first_s": statistics.median(lists)})
    rows.append({"what": "one case's history with samples (query)", "first_s": statistics.median(histories)})
    cpu = env["cpu"]
    print(f"CPU: {cpu['model']} ({cpu['logical_cores']} cores, flags {' '.join(cpu['flags'])}); "
          f"median of {args.repeats}")
    for r in rows:
        extra = "".join(f", {k} {v:.3f}" if k.endswith("_s") else f", {k} {v:,.0f}"
                        for k, v in r.items() if k not in ("what", "first_s"))
        print(f"{r['what']}: {r['first_s']:.3f} s{extra}")
    if args.out:
        Path(args.out).write_text(json.dumps({"cpu": cpu, "repeats": args.repeats, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
