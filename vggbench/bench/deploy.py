"""`vggbench deploy`: a folder that ships one measured row without vggbench: the artifact as exported, the runtime's
configuration as JSON, reference inputs and outputs (.npy: eager fp32's logits on the inputs), a requirements.txt
with the versions the row was measured with, and run.py, which uses the runtime alone to load the artifact, check
its sha256, compare its outputs with the references within the precision's tolerance and time it.

The row comes from a tune results file (its winner, unless chosen otherwise) or a run's (--row or --where). The
export is found again through the export cache the run used (made again if it is gone, and checked as every
artifact is); its outputs are judged now, before anything is written. The folder is written whole into a temp
folder and renamed into place; an existing one is replaced only with --force and only when vggbench deployed it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..core.arguments import expect, expect_path
from ..core.errors import CheckFailed, ConfigError
from ..core.fileio import atomic_dir, sha256_file

KIND = "vggbench-deploy"
SCRIPT = Path(__file__).parent / "timers" / "deploy_run.py"
# run.py inspects the artifact with this copy of vggbench's gate before its runtime opens it: a deploy folder is
# shipped, and a sha256 beside the artifact is no signature (whoever swaps the one rewrites the other)
GATE = Path(__file__).parents[1] / "backends" / "safe_load.py"
_MODEL_KEYS = ("image_size", "dense", "dense_size", "device", "tf32")


def select(data: dict, row: int | None = None, where: str | None = None) -> int:
    """The index of the row to deploy: `row`, the one row `where` ("backend=onnxruntime,batch_size=8") matches
    among those that ran, or a tune's winner."""
    results = data["results"]
    if row is not None and where is not None:
        raise ConfigError("give --row or --where, not both")
    if row is not None:
        if not 0 <= row < len(results):
            raise ConfigError(f"--row {row}: the results file has rows 0 to {len(results) - 1}")
        return row
    if where is not None:
        wanted = {}
        fields = set().union(*results) if results else set()
        for part in filter(None, (p.strip() for p in where.split(","))):
            key, sep, value = part.partition("=")
            if not sep or key.strip() not in fields:
                raise ConfigError(f"--where takes key=value pairs of row fields (backend, precision, batch_size, "
                                  f"...), got {part!r}")
            wanted[key.strip()] = value.strip()
        found = [i for i, r in enumerate(results) if r["status"] == "ok"
                 and all(str(r[k]) == v for k, v in wanted.items())]
        if len(found) != 1:
            raise ConfigError(f"--where {where} matches {len(found)} rows that ran (rows {found}); it must match one")
        return found[0]
    tune = (data.get("settings") or {}).get("tune")
    winner = tune.get("winner") if isinstance(tune, dict) else None
    if winner is None:
        raise ConfigError("these results are no tune's with a winner: choose a row with --row N or --where "
                          "key=value,...")
    index = winner.get("row") if isinstance(winner, dict) else None
    # a hand-edited file's winner is checked as --row is
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(results):
        raise ConfigError(f"the tune's winner names row {index!r}, which the results file does not have (rows 0 to "
                          f"{len(results) - 1}): choose a row with --row N or --where key=value,...")
    return index


def _not_ours(path: Path) -> str | None:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "it has no config.json of a vggbench deploy folder"
    return None if isinstance(config, dict) and config.get("kind") == KIND else "its config.json is not vggbench's"


def deploy(results: str | os.PathLike, out: str | os.PathLike, *, row: int | None = None, where: str | None = None,
           force: bool = False, export_cache: str | os.PathLike | None = None) -> tuple[Path, dict]:
    """Write the deploy folder of one row of `results` to `out`; returns the folder and its configuration."""
    expect_path("deploy", "results", results)
    expect_path("deploy", "out", out)
    expect("deploy", "row", row, (int, type(None)), "a row index (int) or None")
    expect("deploy", "where", where, (str, type(None)), "key=value pairs (str) or None")
    expect("deploy", "force", force, bool, "True or False")
    expect("deploy", "export_cache", export_cache, (str, os.PathLike, type(None)), "a path or None")
    if row is not None and row < 0:
        raise ValueError(f"deploy: row must be at least 0, got {row}")
    import numpy as np

    from ..backends import resolve_target
    from ..backends.registry import backend_names, get_backend
    from ..core.device import require_device
    from ..core.errors import one_line
    from ..core.timing import is_oom
    from ..data.inputs import random_batch
    from ..parity.metrics import compare, tolerance_for
    from ..zoo.settings import ModelSettings
    from ..zoo.weights import parse_weights
    from .prepare import Failure, Preparation
    from .results import read_run
    from .suite import Suite, resolve_suite

    data = read_run(results)
    index = select(data, row, where)
    r = data["results"][index]
    label = f"row {index} ({r['backend']} {r['precision']} {r['memory_format']} batch {r['batch_size']})"
    if r["status"] != "ok":
        raise ConfigError(f"{label} did not run ({r['status']}): there is nothing measured to deploy")
    spec = get_backend(r["backend"])
    if not spec.deployable:
        raise ConfigError(f"{label}: {r['backend']} runs vggbench's own code, not an artifact a runtime loads alone; "
                          f"deploy one of {', '.join(n for n in backend_names() if get_backend(n).runtime)}")
    if spec.runtime is None or r["precision"] not in spec.deploy_precisions:
        can = f"in {', '.join(spec.deploy_precisions)} only" if spec.runtime else "none of its rows yet"
        raise ConfigError(f"{label}: the deploy script runs {r['backend']} {can}")
    settings = data["settings"]
    keys = (*ModelSettings.setting_names(), *_MODEL_KEYS)
    user = {k: v for k, v in (r.get("backend_settings") or {}).items()
            if spec.settings is not None and k in spec.settings.user_fields()}
    suite = resolve_suite(Suite(name="deploy"), **{k: settings[k] for k in keys if k in settings},
                          models=[r["model"]], backends=[r["backend"]], precisions=[r["precision"]],
                          memory_formats=[r["memory_format"]], batch_sizes=[r["batch_size"]], threads=r["threads"],
                          backend={spec.settings_name: user} if user else None)
    device = require_device(suite.device)
    if device.kind != "cpu":
        raise ConfigError(f"{label} ran on {device}: deploy folders are made for the CPU runtimes only")
    weights = parse_weights(suite.weights, suite.seed).require()
    prep = Preparation(suite, device, weights, export_cache or settings.get("export_cache") or "exports/.cache")
    model = prep.model(r["model"])
    if isinstance(model, Failure):
        raise CheckFailed(f"{label}: {model.reason}")
    target = resolve_target(r["backend"], device, r["precision"], r["memory_format"])
    case = prep.case(r["model"], r["backend"], r["precision"], r["memory_format"], r["batch_size"], target)
    prepared = prep.runner(model, target, [case])
    if isinstance(prepared, Failure):
        raise CheckFailed(f"{label} cannot be built again: {prepared.status}: {prepared.reason}")
    from ..backends.load import checked_artifact
    from ..exporters.manifest import artifact as manifest_entry
    from ..exporters.manifest import read_manifest

    settings_object = spec.settings(**(r.get("backend_settings") or {})) if spec.settings is not None else None
    export_dir = model.cache.folder(target, settings_object)  # the int8 export made as the row's settings say
    artifact = checked_artifact(target, export_dir)  # every file of it checked against the manifest
    files = [export_dir / f.file for f in manifest_entry(read_manifest(export_dir), target.artifact, export_dir).files]
    try:
        batch = random_batch(r["batch_size"], suite.image_size, seed=0)
        try:
            runner = prepared.runner
            got = runner.to_tensor(runner.run(runner.prepare(batch)))
        finally:
            prepared.close()
        expected = model.reference(batch)
    except (RuntimeError, MemoryError) as e:
        if not is_oom(e):
            raise
        # a hand-edited row's batch (a run that measured it had the memory): said in one line
        raise CheckFailed(f"{label}: its reference batch does not fit in memory here ({one_line(e)})") from None
    tolerance = tolerance_for(r["precision"])
    parity = compare(expected, got, tolerance, backend=r["backend"], precision=r["precision"])
    if not parity.passed:
        raise CheckFailed(f"{label}: its outputs differ from eager fp32 now: {parity.reason}")
    config = {"kind": KIND, "runtime": spec.runtime, "backend": r["backend"], "model": r["model"],
              "precision": r["precision"], "memory_format": r["memory_format"], "batch_size": r["batch_size"],
              "image_size": r["image_size"], "threads": r["threads"], "weights": r["weights"],
              "backend_settings": r.get("backend_settings"),
              "runtime_config": spec.deploy_config(settings_object, r),
              # the main file first; an ONNX export over 2 GB keeps its weights beside it (model.onnx.data)
              "artifact": {"file": artifact.name, "files": [{"file": f.name, "sha256": sha256_file(f)} for f in files]},
              "tolerance": {"rtol": tolerance.rtol, "range_atol": tolerance.range_atol,
                            "min_cosine": tolerance.min_cosine, "min_top1": tolerance.min_top1},
              "parity_at_deploy": {"max_abs": parity.max_abs, "min_cosine": parity.min_cosine,
                                   "top1_agreement": parity.top1_agreement},
              "measured": {k: r.get(k) for k in ("images_per_s", "median_ms", "median_ci_low_ms", "median_ci_high_ms",
                                                 "under_load")},
              "source": {"results": str(Path(results).resolve()), "row": index, "created": data.get("created"),
                         "cpu": (data.get("environment") or {}).get("cpu", {}).get("model")}}
    with atomic_dir(out, force=force, not_ours=_not_ours) as tmp:
        for f in files:
            shutil.copyfile(f, tmp / f.name)
        np.save(tmp / "input.npy", batch.numpy(), allow_pickle=False)
        np.save(tmp / "expected.npy", expected.numpy(), allow_pickle=False)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        (tmp / "requirements.txt").write_text(requirements(config["runtime"], data.get("environment") or {}),
                                              encoding="utf-8")
        shutil.copyfile(SCRIPT, tmp / "run.py")
        shutil.copyfile(GATE, tmp / "safe_load.py")
    return Path(out), config


def requirements(runtime: str, environment: dict) -> str:
    """The runtime and numpy pinned to the versions the row was measured with (unpinned where not recorded)."""
    versions = environment.get("versions") or {}
    found = {"onnxruntime": (environment.get("onnxruntime") or {}).get("version"),
             "openvino": versions.get("openvino"), "torch": versions.get("torch")}
    lines = [f"{runtime}=={found[runtime]}" if found.get(runtime) else runtime]
    numpy = versions.get("numpy")
    lines.append(f"numpy=={numpy}" if numpy else "numpy")
    return "\n".join(lines) + "\n"
