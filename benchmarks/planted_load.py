"""A planted load: does vggbench ever present a wrong winner as sure when a neighbour takes the CPUs?

    python benchmarks/planted_load.py [--model vgg16] [--image-size 224] [--batch-sizes 1,8] [--spinners 2]
                                      [--out benchmarks/results/planted-load-<time>.json]

Runs one suite twice with `vggbench run` in a child process: eager and onnxruntime fp32, one model, batch 1 and 8.
First on the machine as it is (the quiet run; --require-quiet makes vggbench wait for a quiet machine first),
then again while --spinners processes spin a CPU each (`python -c "while True: pass"`, the neighbours: siblings
of the run, so its load sampler counts them as others) for a part of the run: --load-cases A:B starts them once A
cases have finished (the run's journal says) and stops them once B have. The default, 1:3, loads the second and
third of the four cases (eager at batch 8, onnxruntime at batch 1): at each batch size one backend runs loaded and
the other not, the situation in which a ranking flips.

For each run it prints every row's images/s, under_load (and why) and each batch size's ranking. The check, per
batch size: with the load, either the ranking is the quiet one, or the winner is not presented as sure (a row
under load, or the rows' 95% intervals of the median overlap where the rows have them). Exit 1 when a wrong winner
is presented as sure; 2 when the quiet run itself ran under load (its ranking is then no reference: rerun it on a
quiet machine, or with --require-quiet); 0 otherwise.

--width/--hidden/--image-size/--min-time make a quick check of the script itself (e.g. --model vgg11 --width
0.0625 --hidden 32 --image-size 32 --min-time 0.5 --warmup-time 0.2). Results JSON only with --out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

BACKENDS = ("eager", "onnxruntime")
SPIN = "while True: pass"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vggbench-planted-") as scratch:
        scratch = Path(scratch)
        print(f"quiet run{' (waiting for a quiet machine)' if args.require_quiet is not None else ''} ...",
              flush=True)
        quiet = _run(args, scratch / "quiet.json", quiet=True)
        print(f"loaded run: {args.spinners} spinning process(es) from the end of case {args.load_cases[0]} to the "
              f"end of case {args.load_cases[1]} ...", flush=True)
        loaded = _run(args, scratch / "loaded.json", spin=(args.spinners, *args.load_cases))
    runs = {"quiet": quiet, "loaded": loaded}
    for name, data in runs.items():
        _show(name, data)
    checks = _checks(quiet, loaded)
    quiet_loaded = [r for r in _rows(quiet) if r["under_load"]]
    print()
    for c in checks:
        print(f"batch {c['batch_size']}: {c['verdict']}")
    if quiet_loaded:
        verdict, code = (f"the quiet run was not quiet: {len(quiet_loaded)} of its rows ran under load, so its "
                         f"ranking is no reference (rerun on a quiet machine, or with --require-quiet)"), 2
    elif any(c["wrong_and_sure"] for c in checks):
        verdict, code = "FAIL: a wrong winner was presented as sure under the planted load", 1
    else:
        verdict, code = "ok: under the planted load the ranking held or no winner was presented as sure", 0
    print(verdict)
    if args.out:
        out = Path(args.out)
        if out.suffix != ".json":
            out = out / f"planted-load-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"command": " ".join(sys.argv), "verdict": verdict, "exit_code": code,
                                   "spinners": args.spinners, "load_cases": list(args.load_cases),
                                   "checks": checks,
                                   "runs": {name: {"wall_s": d["wall_s"], "load": _run_load(d),
                                                   "rows": _rows(d)} for name, d in runs.items()}},
                                  indent=2) + "\n")
        print(f"wrote {out}")
    return code


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vgg16")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--width", type=float, help="vggbench's --width (e.g. 0.0625 for a quick check)")
    p.add_argument("--hidden", type=int, help="vggbench's --hidden (e.g. 32 for a quick check)")
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--min-time", type=float, default=3.0, help="seconds of timed calls per case")
    p.add_argument("--warmup-time", type=float, default=1.0)
    p.add_argument("--threads", type=int, help="torch (and onnxruntime) threads [default: torch's]")
    p.add_argument("--spinners", type=int, default=2, help="busy processes of the loaded run")
    p.add_argument("--load-cases", type=_span, default=(1, 3), metavar="A:B",
                   help="the spinners start when A cases have finished and stop when B have [default: 1:3]")
    p.add_argument("--require-quiet", type=float, nargs="?", const=60.0, metavar="SECONDS",
                   help="the quiet run waits up to SECONDS (bare: 60) for a quiet machine")
    p.add_argument("--export-cache", default="exports/.cache")
    p.add_argument("--out", help="write the results JSON here (a .json file or a folder, e.g. benchmarks/results)")
    return p


def _span(text: str) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"A:B, two case counts, not {text!r}") from None
    if not 0 <= a < b:
        raise argparse.ArgumentTypeError(f"need 0 <= A < B, got {text!r}")
    return a, b


def _run(args, out: Path, *, quiet: bool = False, spin: tuple[int, int, int] | None = None) -> dict:
    """One `vggbench run` of the suite in a child process (with `spin` = (count, A, B): that many spinners beside
    it from when A of its cases have finished until B have); its results file, read back."""
    command = [sys.executable, "-m", "vggbench", "run", "--models", args.model, "--backends", ",".join(BACKENDS),
               "--precision", "fp32", "--memory-format", "contiguous", "--batch-sizes", args.batch_sizes,
               "--image-size", str(args.image_size), "--min-time", str(args.min_time),
               "--warmup-time", str(args.warmup_time), "--export-cache", args.export_cache, "--out", str(out),
               "--format", "json", "--no-progress"]
    for option, value in (("--width", args.width), ("--hidden", args.hidden), ("--threads", args.threads)):
        if value is not None:
            command += [option, str(value)]
    if quiet and args.require_quiet is not None:
        command += ["--require-quiet", str(args.require_quiet)]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    spinners: list[subprocess.Popen] = []
    stop = threading.Event()
    thread = None
    if spin:
        thread = threading.Thread(target=_spin, args=(*spin, out.with_suffix(".jsonl"), spinners, stop, child),
                                  daemon=True)
        thread.start()
    try:
        _, err = child.communicate()
    finally:
        stop.set()
        if thread is not None:
            thread.join()
        for p in spinners:  # ours alone, by their handles
            p.kill()
            p.wait()
    if child.returncode not in (0, 1):  # 1: a case failed, its row says why; the rest is no run to compare
        sys.exit(f"vggbench run exited {child.returncode}: {err.strip().splitlines()[-1] if err.strip() else ''}")
    return json.loads(out.read_text())


def _spin(count: int, first: int, last: int, journal: Path, spinners: list, stop: threading.Event, child) -> None:
    """Start `count` spinners once `first` cases are in the run's journal, stop them once `last` are."""
    if not _await_cases(first, journal, stop, child):
        return
    spinners += [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(count)]
    _await_cases(last, journal, stop, child)
    for p in spinners:
        p.kill()


def _await_cases(n: int, journal: Path, stop: threading.Event, child) -> bool:
    """Wait until the journal holds `n` finished cases (its header line and n rows); False when the run ended
    first (its journal is gone once the results are written)."""
    while not stop.is_set() and child.poll() is None:
        try:
            if len(journal.read_text().splitlines()) - 1 >= n:
                return True
        except OSError:
            pass
        stop.wait(0.05)
    return False


def _rows(data: dict) -> list[dict]:
    keep = ("backend", "batch_size", "status", "images_per_s", "median_ms", "median_ci_low_ms", "median_ci_high_ms",
            "under_load")
    return [{**{k: r.get(k) for k in keep}, "load": {k: (r.get("load") or {}).get(k)
                                                      for k in ("stall_pct", "other_cores", "reason")}}
            for r in data["results"]]


def _run_load(data: dict) -> dict:
    load = data["environment"].get("load") or {}
    return {k: load.get(k) for k in ("interval_s", "stall_pct", "other_cores", "rows_judged", "rows_under_load")}


def _ranking(data: dict) -> dict[int, list[dict]]:
    """batch size -> its ok rows, fastest first."""
    found: dict[int, list[dict]] = {}
    for r in _rows(data):
        if r["status"] == "ok" and r["images_per_s"]:
            found.setdefault(r["batch_size"], []).append(r)
    return {b: sorted(rows, key=lambda r: -r["images_per_s"]) for b, rows in sorted(found.items())}


def _show(name: str, data: dict) -> None:
    load = _run_load(data)
    print(f"\n{name} run ({data['wall_s']:.0f} s; {load['rows_under_load']} of {load['rows_judged']} rows under "
          f"load; the whole run: stall {load['stall_pct']}%, other processes {load['other_cores']} cores)")
    for r in _rows(data):
        ips = f"{r['images_per_s']:.4g}" if r["images_per_s"] else "-"
        why = f" ({r['load']['reason']})" if r["under_load"] else ""
        print(f"  {r['backend']:<12} batch {r['batch_size']:<3} {ips:>10} images/s  under_load={r['under_load']}{why}")
    for batch, rows in _ranking(data).items():
        print(f"  batch {batch} ranking: {' > '.join(r['backend'] for r in rows)}")


def _checks(quiet: dict, loaded: dict) -> list[dict]:
    """Per batch size: the quiet and the loaded winner, and whether the loaded one is presented as sure."""
    checks = []
    reference = _ranking(quiet)
    for batch, rows in _ranking(loaded).items():
        if batch not in reference or len(rows) < 2:
            continue
        expected, got = reference[batch][0]["backend"], rows[0]["backend"]
        marked = [r["backend"] for r in rows if r["under_load"]]
        overlap = _overlap(rows[0], rows[1])
        sure = not marked and not overlap
        if got == expected:
            verdict = f"{got} wins, as on the quiet machine"
        elif not sure:
            why = f"{', '.join(marked)} marked under load" if marked else "their intervals overlap"
            verdict = f"{got} reads faster, not {expected} as on the quiet machine, but no sure winner: {why}"
        else:
            verdict = f"WRONG: {got} presented as the sure winner; on the quiet machine {expected} won"
        checks.append({"batch_size": batch, "quiet_winner": expected, "loaded_winner": got, "marked_under_load":
                       marked, "intervals_overlap": overlap, "wrong_and_sure": got != expected and sure,
                       "verdict": verdict})
    return checks


def _overlap(a: dict, b: dict) -> bool:
    """Whether two rows' 95% intervals of the median overlap (rows of one batch size: their ms compare); False where
    a row has none (files from before the intervals): the medians alone then decide."""
    bounds = [(r["median_ci_low_ms"], r["median_ci_high_ms"]) for r in (a, b)]
    if any(low is None or high is None for low, high in bounds):
        return False
    (a_low, a_high), (b_low, b_high) = bounds
    return a_low <= b_high and b_low <= a_high


if __name__ == "__main__":
    sys.exit(main())
