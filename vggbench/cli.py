"""The `vggbench` command: parses options, calls the library, prints, sets the exit code. No logic here."""

from __future__ import annotations

import functools
import sys

import click

from .core.errors import BenchmarkInterrupted, UnsupportedError, VggbenchError

FORMAT_CHOICE = click.Choice(["table", "github", "csv", "json"])


class Group(click.Group):
    """Turns VggbenchError into one line on stderr and its exit code (tracebacks only with --traceback)."""

    def main(self, args=None, prog_name=None, **extra):
        # keep the arguments as typed, for results files that record their command
        obj = extra.setdefault("obj", {})
        if isinstance(obj, dict):
            obj["argv"] = list(sys.argv[1:] if args is None else args)
        return super().main(args, prog_name, **extra)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except VggbenchError as e:
            if ctx.obj and ctx.obj.get("traceback"):
                raise
            message = " ".join(str(e).split())
            click.secho(f"error: {message}", err=True, fg="red")
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="vggbench")
@click.option("--traceback", is_flag=True, help="Show the full traceback of errors (for bug reports).")
@click.pass_context
def main(ctx: click.Context, traceback: bool) -> None:
    """Build, export, verify and benchmark the VGG models of Simonyan & Zisserman (2015)."""
    ctx.ensure_object(dict)["traceback"] = traceback


def parse_list(value: str | None, cast=str) -> list | None:
    """'1,8,32' -> [1, 8, 32]."""
    if value is None:
        return None
    try:
        return [cast(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of {cast.__name__}") from None


def shape_options(f):
    """Options that shape a model (not its weights)."""
    options = [
        click.option("--num-classes", type=int, help="Classifier outputs [default: 1000, or the weights file's]."),
        click.option("--width", type=float, help="Channel multiplier, e.g. 0.0625 for a tiny model [default: 1]."),
        click.option("--hidden", type=int, help="Classifier width [default: 4096 x width (imagenet head), "
                                                 "512 x width (compact)]."),
        click.option("--dropout", type=float, help="Classifier dropout [default: 0.5]."),
        click.option("--head", help="imagenet (pool to 7x7, torchvision layout) or compact (1x1, for 32x32 "
                                    "inputs) [default: imagenet]."),
        click.option("--init", help="kaiming (torchvision) or paper (N(0, 0.01)) [default: kaiming]."),
    ]
    return functools.reduce(lambda g, opt: opt(g), reversed(options), f)


def weights_options(f):
    """--weights and --seed, plus the shape options."""
    options = [
        click.option("--weights", default="random", show_default=True,
                     help="random, imagenet (torchvision's published weights; imagenet:TAG for another "
                          "tag), or a .pth/.pt/.safetensors file."),
        click.option("--seed", default=0, show_default=True, type=int, help="Seed for --weights random."),
    ]
    return shape_options(functools.reduce(lambda g, opt: opt(g), reversed(options), f))


def shape_kwargs(kwargs: dict) -> dict:
    """The model options given on the command line (popped from kwargs; those left at None dropped)."""
    from .zoo.specs import OPTION_NAMES, given_options

    return given_options({k: kwargs.pop(k) for k in OPTION_NAMES if k in kwargs})


def echo_rows(rows, fmt, columns=None) -> None:
    from .bench.report import render

    click.echo(render(rows, fmt, columns))


# --- models / info ------------------------------------------------------------------------------------

@main.command()
@click.argument("names", nargs=-1)
@shape_options
@click.option("--image-size", default=224, show_default=True, type=int, help="Input size for GMACs and shapes.")
@click.option("--format", "fmt", type=FORMAT_CHOICE, default="table", show_default=True)
def models(names, image_size, fmt, **kwargs) -> None:
    """List the model zoo, or show the layers of the models named."""
    from .zoo.profiling import zoo_rows
    from .zoo.specs import ModelOptions, list_models

    options = ModelOptions(**shape_kwargs(kwargs))
    if names:
        for i, name in enumerate(names):
            if i:
                click.echo()
            _show_model(name, options, image_size, fmt)
        return
    echo_rows(zoo_rows(list_models(), options, image_size), fmt)


@main.command()
@click.argument("name")
@shape_options
@click.option("--image-size", default=224, show_default=True, type=int, help="Input size for shapes and MACs.")
@click.option("--format", "fmt", type=FORMAT_CHOICE, default="table", show_default=True)
def info(name, image_size, fmt, **kwargs) -> None:
    """Show one model: its layers, per-layer output shapes, params and MACs."""
    from .zoo.specs import ModelOptions

    options = ModelOptions(**shape_kwargs(kwargs))
    _show_model(name, options, image_size, fmt)


def _show_model(name, options, image_size, fmt) -> None:
    from .zoo.profiling import layer_rows, profile
    from .zoo.specs import get_spec

    spec = get_spec(name)
    prof = profile(spec, options, image_size)
    if fmt in ("table", "github"):
        click.echo(f"{spec.name}: config {spec.config}, {spec.depth} weight layers, "
                   f"{'batch norm' if spec.batch_norm else 'no batch norm'}{', LRN' if spec.lrn else ''}; "
                   f"{prof.params:,} params, {prof.gmacs:.4g} GMACs at {image_size}x{image_size}")
    echo_rows(layer_rows(prof), fmt)


# --- export / verify ----------------------------------------------------------------------------------

def load_from_options(name: str, kwargs: dict):
    """A LoadedModel from the --weights/--seed/shape options (popped from kwargs)."""
    from .zoo.weights import load_model

    return load_model(name, kwargs.pop("weights"), seed=kwargs.pop("seed"), **shape_kwargs(kwargs))


# --- train / eval -------------------------------------------------------------------------------------
# Options default to None so that the library's dataclass defaults are the only defaults.

def data_options(f):
    """Where the images come from and how they are batched."""
    options = [
        click.option("--data", help="digits (offline), cifar10, stl10, synthetic, or folder:PATH "
                                    "[default: digits]."),
        click.option("--data-dir", help="Folder holding cifar10/stl10 in torchvision's layout [default: data]."),
        click.option("--download", is_flag=True, default=None, help="Let torchvision download cifar10/stl10."),
        click.option("--image-size", type=int, help="Input size; at least 32 for VGG's 5 max-pools "
                                                    "[default: 32; eval: the checkpoint's]."),
        click.option("--val-fraction", type=float, help="Training images held out for validation where the "
                                                        "dataset has no val split [default: 0.1]."),
        click.option("--batch-size", type=int, help="Images per batch (per process under torchrun) "
                                                    "[default: 64]."),
        click.option("--workers", type=int, help="DataLoader worker processes [default: 0]."),
    ]
    return functools.reduce(lambda g, opt: opt(g), reversed(options), f)


def device_options(f):
    options = [
        click.option("--device", help="auto, cpu, cuda or cuda:N [default: auto]."),
        click.option("--amp/--no-amp", default=None, help="Mixed precision: fp16 + GradScaler on CUDA, bf16 on CPU."),
        click.option("--channels-last/--no-channels-last", default=None, help="NHWC memory format."),
    ]
    return functools.reduce(lambda g, opt: opt(g), reversed(options), f)


def given(kwargs: dict) -> dict:
    return {k: v for k, v in kwargs.items() if v is not None}


@main.command()
@click.argument("model")
@weights_options
@click.option("--format", "formats", default="torchscript,onnx,pt2", show_default=True,
              help="Comma-separated: torchscript, onnx, pt2, onnx-int8 (int8 quantized from onnx).")
@click.option("--out", type=click.Path(), help="Export folder [default: exports/MODEL].")
@click.option("--image-size", default=224, show_default=True, type=int)
@click.option("--batch-size", default=1, show_default=True, type=int,
              help="Batch of a --static-batch export (dynamic exports take any batch).")
@click.option("--dynamic-batch/--static-batch", default=True, show_default=True)
@click.option("--opset", type=int, help="ONNX opset [default: the exporter's].")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True)
@click.option("--torchscript-mode", type=click.Choice(["trace", "script"]), default="trace", show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing export folder.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Check every artifact against the eager model before the folder is put in place.")
@click.option("--calibration-images", default=32, show_default=True, type=int,
              help="onnx-int8: how many real images calibrate the activation ranges.")
@click.option("--calibration-method", default="minmax", show_default=True,
              type=click.Choice(["minmax", "percentile", "entropy"]))
@click.option("--calibration-data", default="auto", show_default=True,
              help="onnx-int8 calibration images: auto (the training split of the dataset the weights were "
                   "trained on, when it loads offline, else photos), photos, or a dataset name (digits, cifar10, ...).")
def export(model, formats, out, image_size, batch_size, dynamic_batch, opset, precision, torchscript_mode, force,
           verify, calibration_images, calibration_method, calibration_data, **kwargs) -> None:
    """Export MODEL to TorchScript, ONNX and torch.export, with a manifest and a parity check."""
    from .exporters.quantize import QuantConfig
    from .parity.checked import export as run_export

    loaded = load_from_options(model, kwargs)
    out = out or f"exports/{loaded.name}"
    quant = QuantConfig(method=calibration_method, images=calibration_images, calibration=calibration_data)
    manifest = run_export(loaded, out, formats=parse_list(formats), image_size=image_size, batch_size=batch_size,
                          dynamic_batch=dynamic_batch, opset=opset, precision=precision,
                          torchscript_mode=torchscript_mode, force=force, verify=verify, quant=quant)
    rows = [{"format": fmt, "files": ", ".join(f"{f['file']} ({f['bytes'] / 2**20:.1f} MiB)" for f in a["files"])}
            for fmt, a in manifest["artifacts"].items()]
    echo_rows(rows, "table")
    if manifest["warnings"]:
        click.echo(f"{len(manifest['warnings'])} exporter warning(s) recorded in manifest.json "
                   f"(e.g. {manifest['warnings'][0][:100]})")
    if manifest["parity"]:
        worst = max(manifest["parity"], key=lambda r: r["max_abs"])
        click.echo(f"parity: {len(manifest['parity'])} comparisons passed; largest |diff| {worst['max_abs']:.3g} "
                   f"({worst['backend']}, {worst['inputs']})")
    click.echo(f"wrote {out}")


PARITY_COLUMNS = ["backend", "precision", "memory_format", "inputs", "max_abs", "max_rel", "mean_abs", "min_cosine",
                  "top1_agreement", "top5_overlap", "atol", "passed", "reason"]


@main.command()
@click.argument("export_dir", type=click.Path())
@click.option("--backends", help="Comma-separated [default: every artifact in the folder]; eager and compile "
                                 "compare the eager model itself in another precision or memory format.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--precision", "precisions", help="Comma-separated: fp32, fp16, amp, bf16, int8 "
                                                "[default: the export's precision].")
@click.option("--channels-last", is_flag=True, help="Also compare channels_last input.")
@click.option("--batch-sizes", default="1,3", show_default=True, help="Random batches to compare.")
@click.option("--photos/--no-photos", default=True, show_default=True, help="Also compare on two real photos.")
@click.option("--data", default="auto", show_default=True,
              help="Also compare on up to 1,000 test images of a dataset: auto (the one the weights were trained "
                   "on, when it loads offline), none, or a name (digits, cifar10, stl10, folder:PATH).")
@click.option("--atol", type=float, help="Absolute tolerance (replaces the preset's range-relative one).")
@click.option("--rtol", type=float, help="Relative tolerance.")
@click.option("--weights", help="Reference weights, if the file the export was made from has moved.")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@click.option("--format", "fmt", type=FORMAT_CHOICE, default="table", show_default=True)
def verify(export_dir, backends, device, precisions, channels_last, batch_sizes, photos, data, atol, rtol, weights,
           as_json, fmt) -> None:
    """Check that every artifact of EXPORT_DIR computes what the eager model computes (exit 1 if not)."""
    import json

    from .core.errors import CheckFailed
    from .parity.verify import verify as run_verify

    report = run_verify(export_dir, backends=parse_list(backends), device=device, precisions=parse_list(precisions),
                        memory_formats=("contiguous", "channels_last") if channels_last else ("contiguous",),
                        batch_sizes=parse_list(batch_sizes, int), photos=photos, atol=atol, rtol=rtol,
                        weights=weights, data=None if data.lower() == "none" else data)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        echo_rows([r.to_dict() for r in report.results], fmt, PARITY_COLUMNS)
        for line in report.skipped:
            click.echo(f"skipped: {line}")
    if not report.results:
        raise UnsupportedError(f"nothing to compare in {export_dir}: every combination was skipped")
    failed = [r for r in report.results if not r.passed]
    if failed:
        raise CheckFailed(f"{len(failed)} of {len(report.results)} comparisons failed "
                          f"(first: {failed[0].backend} {failed[0].precision} on {failed[0].inputs}: {failed[0].reason})")
    if not as_json:
        click.echo(f"ok: {len(report.results)} comparisons passed")


@main.command()
@click.argument("model")
@weights_options
@data_options
@click.option("--augment", type=click.Choice(["none", "light", "paper"]),
              help="none; light (mild crops + flips, for small images); paper (scale jittering as in the paper "
                   "+ flips) [default: the dataset's: paper for folder:, none for synthetic, light otherwise].")
@click.option("--color-jitter", type=float, help="Brightness/contrast/saturation jitter strength [default: 0].")
@click.option("--normalize", type=click.Choice(["imagenet", "dataset"]),
              help="Mean/std: ImageNet's, or computed on the training split [default: imagenet].")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), help="[default: sgd, as the paper].")
@click.option("--lr", type=float, help="Learning rate [default: 0.01 for sgd (the paper), 0.001 for adam].")
@click.option("--momentum", type=float, help="SGD momentum [default: 0.9].")
@click.option("--weight-decay", type=float, help="[default: 5e-4 for sgd (the paper), 0 for adam].")
@click.option("--schedule", type=click.Choice(["plateau", "cosine", "step", "constant"]),
              help="plateau: lr / 10 when val accuracy stalls (the paper) [default: plateau].")
@click.option("--patience", type=int, help="plateau: epochs without improvement before lr / 10 [default: 2].")
@click.option("--step-size", type=int, help="step: epochs between lr / 10 [default: 10].")
@click.option("--label-smoothing", type=float, help="[default: 0].")
@click.option("--epochs", type=int, help="Epochs in total, counting those before --resume [default: 10].")
@device_options
@click.option("--cudnn-benchmark/--no-cudnn-benchmark", default=None, help="For this run only [default: off].")
@click.option("--out", help="Run folder [default: runs/MODEL-DATA, numbered if taken].")
@click.option("--save-every", type=int, help="Write last.pt every N epochs [default: 1].")
@click.option("--resume", help="A run's last.pt: continue it with its saved settings up to --epochs.")
@click.option("--progress/--no-progress", default=None, help="Progress bar and a line per epoch on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def train(model, as_json, **kwargs) -> None:
    """Train MODEL (from scratch with --weights random --seed N, or fine-tune given weights).

    Works under torchrun for distributed data parallel (gloo on CPU, nccl on CUDA).
    """
    import json

    from .training.loop import TrainConfig
    from .training.loop import train as train_model

    try:
        result = train_model(TrainConfig(model=model, **given(kwargs)))
    except KeyboardInterrupt as e:
        if e.args:
            click.echo(e.args[0], err=True)
        raise
    if result.rank != 0:
        return
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    test = (f", test acc {result.test.top1:.2%} (top-5 {result.test.top5:.2%}, {result.test.images} images)"
            if result.test else "")
    click.echo(f"best val acc {result.best_val_acc:.2%} (epoch {result.best_epoch}){test}; "
               f"{result.epochs} epochs in {result.seconds:.1f} s"
               f"{f' on {result.world_size} processes' if result.world_size > 1 else ''}")
    click.echo(f"run folder: {result.run_dir}")


@main.command("eval")
@click.argument("model")
@weights_options
@data_options
@click.option("--split", type=click.Choice(["train", "val", "test"]),
              help="[default: test where the dataset has one, else val].")
@click.option("--normalize", type=click.Choice(["imagenet", "dataset"]),
              help="[default: the mean/std stored with the weights].")
@device_options
@click.option("--format", "fmt", type=FORMAT_CHOICE, default="table", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
def evaluate(model, fmt, as_json, **kwargs) -> None:
    """Top-1/top-5 accuracy and loss of MODEL with --weights on a dataset split."""
    import dataclasses

    from .training.evaluation import EvalConfig
    from .training.evaluation import evaluate as evaluate_model

    result = evaluate_model(EvalConfig(model=model, **given(kwargs)))
    row = {"model": model, "weights": kwargs["weights"], **dataclasses.asdict(result)}
    echo_rows([row], "json" if as_json else fmt,
              ["model", "weights", "dataset", "split", "images", "top1", "top5", "loss"])

# --- run / report -------------------------------------------------------------------------------------

def _suite_overrides(kwargs: dict) -> dict:
    """Command-line options -> Suite fields (None: keep the suite's value)."""
    out = {k: parse_list(kwargs.pop(k)) for k in ("models", "backends", "precisions", "memory_formats")}
    out["batch_sizes"] = kwargs.pop("batch_sizes")  # "1,8" or "1..256": the suite parses it
    renamed = {"warmup_time": "warmup_time_s", "min_time": "min_time_s"}
    out.update({renamed.get(k, k): kwargs.pop(k) for k in list(kwargs)})
    return out


@main.command()
@click.option("--suite", help="A suite name (vggbench/suites/, then ./benchmarks/suites/) or a .toml file "
                              "[default: cpu, or cuda with --device cuda].")
@click.option("--best", is_flag=True, help="Time every fast path of the device (suite best-cpu or best-cuda, "
                                           "unless --suite) and name the fastest that passes parity per batch size.")
@click.option("--models", help="Comma-separated model names, e.g. vgg11,vgg16.")
@click.option("--backends", help="Comma-separated: eager, compile, torchscript, pt2, onnxruntime, tensorrt, "
                                 "winograd.")
@click.option("--device", help="cpu, cuda or cuda:N (onnxruntime follows it).")
@click.option("--batch-sizes", help="Comma-separated, e.g. 1,8,32; A..B is every power of two from A to B "
                                    "(after an out-of-memory batch, larger ones are not tried).")
@click.option("--precision", "precisions", help="Comma-separated: fp32, amp, bf16, fp16, int8.")
@click.option("--memory-format", "memory_formats", help="Comma-separated: contiguous, channels_last.")
@click.option("--image-size", type=int)
@click.option("--threads", type=int, help="torch intra-op threads for the run (restored afterwards), also given "
                                          "to onnxruntime [default: torch's current setting, recorded].")
@click.option("--weights", help="random, imagenet, or a weights file [default: random].")
@click.option("--seed", type=int, help="Seed for --weights random [default: 0].")
@shape_options
@click.option("--warmup", type=int, help="Warm-up calls after the first call, at least.")
@click.option("--warmup-time", type=float, help="Warm-up seconds, at least.")
@click.option("--min-time", type=float, help="Seconds of timed calls per case (the budget).")
@click.option("--min-iters", type=int, help="Timed calls per case, at least.")
@click.option("--max-iters", type=int, help="Timed calls per case, at most.")
@click.option("--compile-mode", help="torch.compile mode: default, reduce-overhead, max-autotune, ...")
@click.option("--compile-freezing/--no-compile-freezing", default=None,
              help="torch.compile with inductor freezing (weights as constants, prepacked).")
@click.option("--ort-optimization", help="onnxruntime graph optimisation: disable, basic, extended, all.")
@click.option("--cudnn-conv-algo-search", help="onnxruntime CUDA: EXHAUSTIVE, HEURISTIC or DEFAULT.")
@click.option("--tf32/--no-tf32", default=None,
              help="CUDA fp32 with TF32 matmuls and convolutions, in torch and onnxruntime; its parity is then "
                   "judged with the tf32 tolerance [default: off (the suite's tf32 key may turn it on): fp32 is "
                   "IEEE fp32].")
@click.option("--cudnn-benchmark/--no-cudnn-benchmark", default=None,
              help="cudnn.benchmark for the run [default: as it is, recorded].")
@click.option("--export-cache", default="exports/.cache", show_default=True, type=click.Path(),
              help="Where parity-checked exports are kept between runs.")
@click.option("--out", type=click.Path(), help="A folder, or a .json file (the .csv goes beside it) "
                                               "[default: benchmarks/results/run-<time>.json].")
@click.option("--format", "fmt", type=FORMAT_CHOICE, default="table", show_default=True)
@click.option("--baseline", default="eager:fp32:contiguous", show_default=True,
              help="backend:precision:memory_format that speedup is relative to.")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr [default: on a terminal].")
@click.pass_context
def run(ctx, suite, best, export_cache, out, fmt, baseline, progress, **kwargs) -> None:
    """Time forward passes across models, backends, batch sizes, precisions and memory formats."""
    import shlex

    from .bench.report import parse_baseline, render_run
    from .bench.results import read_run
    from .bench.suite import default_suite
    from .bench.sweep import benchmark

    if best and suite is None:
        suite = f"best-{default_suite(kwargs['device'])}"
    parse_baseline(baseline)  # a bad one fails now, not after the run
    try:
        result = benchmark(suite, export_cache=export_cache, progress=progress,
                           raise_errors=bool(ctx.obj.get("traceback")), **_suite_overrides(kwargs))
    except BenchmarkInterrupted as e:  # keep what was measured, then exit as an interrupt does
        result = e.run
        if not result.results:
            raise
    result.settings["command"] = shlex.join(["vggbench", *ctx.obj.get("argv", [])])
    json_path, csv_path = result.write(out)
    # the table is rendered from the file just written, as `vggbench report` would
    click.echo(render_run(read_run(json_path), fmt, baseline))
    counts: dict[str, int] = {}
    for r in result.results:
        counts[r.status] = counts.get(r.status, 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in counts.items())
    click.echo(f"\n{len(result.results)} cases ({summary}) in {result.wall_s:.0f} s; wrote {json_path} and {csv_path}",
               err=fmt in ("csv", "json"))
    if "interrupted" in result.settings:
        click.echo(f"interrupted: {result.settings['interrupted']}; the results so far are written", err=True)
        ctx.exit(130)


@main.command()
@click.argument("results", type=click.Path())
@click.option("--format", "fmt", type=FORMAT_CHOICE, default="table", show_default=True)
@click.option("--baseline", default="eager:fp32:contiguous", show_default=True,
              help="backend[:precision[:memory_format]] that speedup is relative to.")
@click.option("--compare", "old", type=click.Path(), help="An older results file: per-case ratios, and exit 1 on "
                                                          "a regression beyond --threshold.")
@click.option("--threshold", default="5%", show_default=True, help="Slow-down that counts as a regression.")
@click.option("--allow-different-machines", is_flag=True,
              help="Compare runs from different hardware anyway (the ratios then mean little).")
@click.option("--plot", type=click.Path(), help="Also draw images/s against batch size into this .png file.")
@click.option("--best", is_flag=True, help="Only the fastest case that passed parity per batch size.")
def report(results, fmt, baseline, old, threshold, allow_different_machines, plot, best) -> None:
    """Show a results file as tables with speed-ups, compare it with an older one, or plot it."""
    from .bench.report import render_fastest, render_run
    from .bench.results import read_run

    data = read_run(results)
    if best:
        click.echo(render_fastest(data, fmt, baseline))
    elif old is None:
        click.echo(render_run(data, fmt, baseline))
    else:
        _compare(data, read_run(old), threshold, allow_different_machines, fmt)
    if plot:
        from .bench.plot import plot_run

        click.echo(f"wrote {plot_run(data, plot)}", err=fmt in ("csv", "json"))


def _compare(new: dict, old: dict, threshold: str, allow_different_machines: bool, fmt: str) -> None:
    from .bench.compare import COMPARE_COLUMNS, compare_runs, parse_threshold
    from .core.errors import CheckFailed

    comparison = compare_runs(new, old, parse_threshold(threshold), allow_different_machines)
    for line in comparison.warnings:
        click.secho(f"warning: environments differ: {line}", err=True, fg="yellow")
    echo_rows(comparison.rows, fmt, COMPARE_COLUMNS)
    note = [f"{len(comparison.rows)} cases compared"]
    if comparison.only_old or comparison.only_new:
        note.append(f"{len(comparison.only_old)} only in the old run, {len(comparison.only_new)} only in the new one")
    click.echo("; ".join(note), err=fmt in ("csv", "json"))
    if not comparison.rows:
        raise UnsupportedError("the two runs have no case in common (matched on model, image size, device, backend, "
                               "precision, memory format, batch size, threads)")
    bad = comparison.regressions
    if bad:
        worst = max(bad, key=lambda r: r["change_pct"] if r["change_pct"] is not None else float("inf"))
        what = (f"{worst['change_pct']:+.1f}%" if worst["change_pct"] is not None else worst["verdict"])
        raise CheckFailed(f"{len(bad)} of {len(comparison.rows)} cases regressed beyond {comparison.threshold * 100:g}% "
                          f"(worst: {worst['model']} {worst['backend']} {worst['precision']} {worst['memory_format']} "
                          f"batch {worst['batch_size']}: {what})")


if __name__ == "__main__":
    main()
