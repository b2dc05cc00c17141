"""What a Ray cluster costs a run (issue 31): the same suite run here (`--isolation process`, which is what each node
does) and across a local Ray cluster (a head that runs nothing and worker nodes on this machine, `run --cluster`),
compared row by row (case keys, statuses, parity), with each one's wall time and the overhead per case.

The cluster's start is timed apart (a real cluster is up before a run). With one worker node holding the whole
machine, the cluster runs the cases one after another as the local run does, so the difference in wall time is
what Ray adds per group (placing it, shipping the export, a Ray worker, the node's GEMM peak, the rows coming
home). Usage:

    python benchmarks/fleet.py [--nodes 1] [--min-time 0.5] [--out benchmarks/results/fleet-<time>.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SUITE = dict(models=["vgg11"], width=1 / 16, hidden=32, image_size=32, backends=["eager", "onnxruntime"],
             memory_formats=["contiguous"], precisions=["fp32"], batch_sizes=[1, 8], rounds=1, warmup_time_s=0.2)


def key(row) -> tuple:
    return (row.model, row.backend, row.precision, row.memory_format, row.batch_size, row.threads, row.status,
            row.parity_max_abs is None, row.isolation)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1, help="worker nodes, each given all this machine's CPUs")
    parser.add_argument("--min-time", type=float, default=0.5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from ray.cluster_utils import Cluster

    from vggbench.bench.fleet import benchmark_on_cluster
    from vggbench.bench.sweep import benchmark
    from vggbench.core.env import cpu_info

    cpus = os.cpu_count() or 1
    suite = {**SUITE, "min_time_s": args.min_time, "threads": cpus}
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    with tempfile.TemporaryDirectory(prefix="vggbench-fleet-bench-") as tmp:
        exports = Path(tmp) / "exports"
        # the export made first, so that neither timed run pays for it (the cluster's driver would reuse it)
        benchmark(None, export_cache=exports, progress=False, **{**suite, "backends": ["onnxruntime"],
                                                                 "batch_sizes": [1], "min_time_s": 0.0})
        started = time.perf_counter()
        local = benchmark(None, export_cache=exports, progress=False, isolation="process", **suite)
        local_s = time.perf_counter() - started
        started = time.perf_counter()
        cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=0, include_dashboard=False,
                                                                    object_store_memory=100 * 2**20))
        try:
            for _ in range(args.nodes):
                cluster.add_node(num_cpus=cpus, resources={"local": 1}, object_store_memory=100 * 2**20)
            cluster.wait_for_nodes()
            start_s = time.perf_counter() - started
            started = time.perf_counter()
            fleet = benchmark_on_cluster(None, cluster=cluster.address, export_cache=exports,
                                         node_cache=Path(tmp) / "node-exports", progress=False,
                                         machines=["local"], **suite)
            fleet_s = time.perf_counter() - started
        finally:
            cluster.shutdown()
    same = [key(r) for r in local.results] == [key(r) for r in fleet.results]
    cases = len(local.results)
    groups = len({(r.model, r.backend, r.precision, r.memory_format) for r in local.results})
    rows = [{"backend": a.backend, "batch_size": a.batch_size, "status": (a.status, b.status),
             "local_images_per_s": a.images_per_s, "cluster_images_per_s": b.images_per_s,
             "under_load": (a.under_load, b.under_load), "cluster_node": b.node and b.node["id"][:8],
             "cluster_nice": b.node and b.node.get("nice")}
            for a, b in zip(local.results, fleet.results, strict=True)]
    record = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_info(),
              "python": platform.python_version(), "suite": suite, "nodes": args.nodes, "same_rows": same,
              "cases": cases, "groups": groups, "local_wall_s": round(local_s, 1),
              "cluster_start_s": round(start_s, 1), "cluster_wall_s": round(fleet_s, 1),
              "overhead_per_case_s": round((fleet_s - local_s) / cases, 2),
              "overhead_per_group_s": round((fleet_s - local_s) / groups, 2), "rows": rows}
    print(json.dumps({k: v for k, v in record.items() if k != "cpu"}, indent=1, default=str))
    out = args.out or ROOT / "benchmarks" / "results" / f"fleet-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
