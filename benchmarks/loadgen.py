"""MLPerf's deployment scenarios on this CPU, measured by LoadGen, beside `vggbench run`'s batch numbers.

    python benchmarks/loadgen.py [PATH ...] [--best-from RESULTS.json] [--model vgg16] [--image-size 224]

PATH is backend[:precision[:memory_format]] (default: eager onnxruntime); --best-from adds the fastest path that
passed parity at batch 1 in a `vggbench run --best` results file. For each path:

1. `vggbench.benchmark`: batch 1 and 8, as `vggbench run` times them (--min-time seconds each);
2. `vggbench.loadgen`, SingleStream (p90 latency) and Offline (samples/s, the SUT batching up to 8);
3. `vggbench.loadgen`, Server: the highest rate LoadGen reports VALID at a p99 bound of --latency-bound-ms,
   found by short probes, then full runs (SUT batches up to --server-max-batch, capped at what runs within
   --server-batch-budget of the bound: batch 1 for VGG16 here; waiting --max-wait-ms).

Run lengths are far below MLPerf's (600 s; 1,024 SingleStream and 270,336 Server queries) so that the whole
recording takes 30-50 minutes for VGG16 on 2 cores; LoadGen's early stopping still has to accept each verdict
(Server's p99 needs 459 queries on time, hence --server-queries 500). The lengths used are printed under the table.
Writes the markdown table to stdout and to --out (.md), and the results JSON files (with LoadGen's logs) beside it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import vggbench
from vggbench.bench.loadgen import loadgen
from vggbench.bench.report import fastest_rows
from vggbench.bench.results import claim_results, read_run
from vggbench.bench.scenarios import LoadgenSettings, SutSettings
from vggbench.core.fileio import write_text


def parse_path(text: str) -> tuple[str, str, str]:
    parts = text.split(":")
    return tuple(parts + ["fp32", "contiguous"][len(parts) - 1:])[:3]


def best_path(results: str) -> tuple[str, str, str]:
    rows = [r for r in fastest_rows(read_run(results)["results"]) if r["batch_size"] == 1]
    if not rows:
        raise SystemExit(f"{results} has no case at batch 1 that passed parity")
    return tuple(rows[0]["fastest"].split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", default=["eager", "onnxruntime"])
    parser.add_argument("--best-from", help="a `vggbench run --best` results file: add its fastest path at batch 1")
    parser.add_argument("--model", default="vgg16")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--width", type=float, help="channel multiplier (a tiny model for a smoke check)")
    parser.add_argument("--min-time", type=float, default=3.0, help="seconds per batch case of `run`")
    parser.add_argument("--duration", type=float, default=15.0, help="SingleStream and Offline runs last this")
    parser.add_argument("--singlestream-queries", type=int, default=64)
    parser.add_argument("--server-duration", type=float, default=30.0, help="full runs last at least this")
    parser.add_argument("--server-queries", type=int, default=500, help="full runs issue at least this many")
    parser.add_argument("--probe-duration", type=float, default=20.0,
                        help="seconds per Server probe (10 s probes passed rates that full runs found INVALID)")
    parser.add_argument("--server-runs", type=int, default=10,
                        help="probes and full runs together, at most; a quarter are kept for full runs (4 found no "
                             "VALID rate on 2026-11-26)")
    parser.add_argument("--server-max-batch", type=int, default=SutSettings.max_batch,
                        help="capped by --server-batch-budget (batches of 2 waiting 50 ms found no VALID rate down "
                             "to 1.3 QPS on 2026-11-26; batch 1 held p99 823 ms at 2.31 QPS)")
    parser.add_argument("--server-batch-budget", type=float, default=SutSettings.server_batch_budget)
    parser.add_argument("--max-wait-ms", type=float, default=SutSettings.max_wait_ms)
    parser.add_argument("--latency-bound-ms", type=float, default=1000.0)
    parser.add_argument("--images", default="photos", help="the query sample library (see vggbench loadgen)")
    parser.add_argument("--export-cache", default="exports/.cache")
    parser.add_argument("--out", default="benchmarks/results/loadgen-table.md")
    args = parser.parse_args()

    paths = [parse_path(p) for p in args.paths]
    if args.best_from:
        best = best_path(args.best_from)
        if best not in paths:
            paths.append(best)
    model = {"models": [args.model], "image_size": args.image_size, "export_cache": args.export_cache}
    if args.width:
        model["width"] = args.width
    out = Path(args.out)
    started = time.perf_counter()
    lines = []
    for backend, precision, memory_format in paths:
        target = {**model, "backends": [backend], "precisions": [precision], "memory_formats": [memory_format]}
        print(f"== {backend} {precision} {memory_format}", flush=True)
        batches = vggbench.benchmark(None, batch_sizes=[1, 8], min_time_s=args.min_time, max_iters=200, **target)
        batches.write(out.parent)
        per_batch = {r.batch_size: r.images_per_s for r in batches.results if r.status == "ok"}
        common = dict(images=args.images, count=64)
        # one call for both (one model load, export check and set of timed batches); Offline's one query ignores
        # the query count
        quick = LoadgenSettings(scenarios=("singlestream", "offline"), min_duration_s=args.duration,
                                min_queries=args.singlestream_queries, **common)
        ss_off = _loadgen(out, target, quick, SutSettings(max_batch=8))
        server = _loadgen(out, target, LoadgenSettings(
            scenarios=("server",), min_duration_s=args.server_duration, min_queries=args.server_queries,
            probe_duration_s=args.probe_duration, max_runs=args.server_runs, latency_bound_ms=args.latency_bound_ms,
            **common), SutSettings(max_batch=args.server_max_batch, max_wait_ms=args.max_wait_ms,
                                   server_batch_budget=args.server_batch_budget))
        lines.append(_line(backend, precision, memory_format, per_batch, ss_off, server["server"]))
        print(lines[-1], flush=True)
    minutes = (time.perf_counter() - started) / 60
    table = "\n".join([
        f"| path | run bs1 img/s | run bs8 img/s | SingleStream p90 ms | Server QPS at p99 <= "
        f"{args.latency_bound_ms:g} ms (p99 ms, runs, SUT batch) | Offline img/s |",
        "|---|---|---|---|---|---|", *lines, "",
        f"{args.model} at {args.image_size}, {args.images} images; {minutes:.1f} min in all. Not MLPerf's run lengths "
        f"(600 s each): SingleStream >= {args.duration:g} s and >= {args.singlestream_queries} queries; "
        f"Offline >= {args.duration:g} s (SUT batches up to 8); Server probes {args.probe_duration:g} s, "
        f"full runs >= {args.server_duration:g} s and >= {args.server_queries} queries, at most {args.server_runs} "
        f"runs, SUT batches up to {args.server_max_batch} (capped at what runs within {args.server_batch_budget:g} of "
        f"the bound) waiting {args.max_wait_ms:g} ms; run: batch 1 and 8, "
        f"{args.min_time:g} s each. (V)/(I): LoadGen's VALID/INVALID."])
    print(table)
    write_text(out, table + "\n")
    print(f"wrote {out}")


def _loadgen(out: Path, target: dict, settings: LoadgenSettings, sut: SutSettings) -> dict[str, dict]:
    journal = claim_results(out.parent, prefix="loadgen")
    logs = journal.json_path.with_name(journal.json_path.stem + ".logs")
    try:
        run = loadgen(None, settings=settings, sut=sut, logs=logs, journal=journal,
                      echo=lambda line: print(line, flush=True), **target)
    except BaseException:
        journal.close()
        raise
    journal.finish(run.to_dict())
    run.check()
    return {r.scenario["name"]: {**r.scenario, "status": r.status, "reason": r.reason} for r in run.results}


def _verdict(block: dict) -> str:
    return "(V)" if block.get("result") == "VALID" else "(I)"


def _line(backend, precision, memory_format, per_batch, ss_off, server) -> str:
    def num(x):
        return "-" if x is None else f"{x:.3g}"

    ss, off = ss_off["singlestream"], ss_off["offline"]
    search = server.get("search") or {}
    qps = search.get("qps")
    batch = (server.get("sut") or {}).get("max_batch")
    server_cell = (f"{num(qps)} ({num(server.get('p99_ms'))}, {search.get('runs')} runs, batch {batch})"
                   if qps is not None else f"none VALID in {search.get('runs')} runs (batch {batch})")
    return (f"| {backend} {precision} {memory_format} | {num(per_batch.get(1))} | {num(per_batch.get(8))} | "
            f"{num(ss.get('p90_ms'))} {_verdict(ss)} | {server_cell} | {num(off.get('samples_per_s'))} {_verdict(off)} |")


if __name__ == "__main__":
    main()
