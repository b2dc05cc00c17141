"""The `vggbench` command: parses options, calls the library, prints, sets the exit code. No logic here."""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading

import click

from .bench.db import DbSettings
from .bench.scenarios import LoadgenSettings, SutSettings
from .bench.suite import Suite
from .core.errors import BenchmarkInterrupted, CheckFailed, ConfigError, Terminated, VggbenchError
from .core.settings import cli_options, given
from .data.preview import PreviewSettings
from .exporters.settings import ExportSettings
from .parity.settings import VerifySettings
from .training.config import EvalConfig, TrainConfig
from .zoo.settings import ModelSettings, ShapeSettings

FORMAT_CHOICE = click.Choice(["table", "github", "csv", "json"])
MEMORY_FORMATS = ("contiguous", "channels_last")


class Group(click.Group):
    """Turns VggbenchError into one line on stderr and its exit code (tracebacks only with --traceback)."""

    def main(self, args=None, prog_name=None, **extra):
        # keep the arguments as typed, for results files that record their command
        obj = extra.setdefault("obj", {})
        if isinstance(obj, dict):
            obj["argv"] = list(sys.argv[1:] if args is None else args)
        return super().main(args, prog_name, **extra)

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as e:  # the group's own options
            _usage_error(e)

    def invoke(self, ctx: click.Context):
        try:
            with _terminate_as_interrupt(ctx):
                return super().invoke(ctx)
        except click.UsageError as e:  # a command's options and arguments, parsed in here
            _usage_error(e)
        except VggbenchError as e:
            if ctx.obj and ctx.obj.get("traceback"):
                import traceback

                traceback.print_exc()  # the traceback asked for, with the error's exit code all the same
            message = " ".join(str(e).split())
            click.secho(f"error: {message}", err=True, fg="red")
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(interrupt_exit_code(ctx))


@contextlib.contextmanager
def _terminate_as_interrupt(ctx: click.Context):
    """For the command's duration, SIGTERM (what CI timeouts and `kill` send) raises Terminated, a KeyboardInterrupt:
    it takes Ctrl-C's path (run writes its finished cases, export removes its temp folder, train saves last.pt).
    The previous handler is put back afterwards. Signals reach only the main thread's handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        ctx.ensure_object(dict)["signal"] = signum
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:  # None: a handler set outside Python, which cannot be put back; the default is the nearest
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def interrupt_exit_code(ctx: click.Context) -> int:
    """128 + the signal, as a shell reports a process that the signal ended: 130 for Ctrl-C (SIGINT), 143 for
    SIGTERM, so that CI sees a terminated job as terminated even though the results were written first."""
    return 128 + (ctx.find_root().obj or {}).get("signal", signal.SIGINT)


def _require_named_backends(value) -> None:
    """The backends named on the command line (--backends) have their optional packages, or the command stops with
    the extra to install (a suite's backends without theirs become rows that say why)."""
    if not value:
        return
    from .backends.registry import require_packages

    names = value.split(",") if isinstance(value, str) else value
    require_packages(name.strip() for name in names if name.strip())


def _usage_error(e: click.UsageError):
    """click's usage errors as one `error:` line (exit 2), as vggbench's own; a bare `vggbench` still shows the
    help."""
    if isinstance(e, click.exceptions.NoArgsIsHelpError):
        raise e
    where = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
    click.secho(f"error: {' '.join(e.format_message().split())}{where}", err=True, fg="red")
    raise click.exceptions.Exit(e.exit_code)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="vggbench")
@click.option("--traceback", is_flag=True, help="Show the full traceback of errors (for bug reports).")
@click.pass_context
def main(ctx: click.Context, traceback: bool) -> None:
    """Build, export, verify and benchmark the VGG models of Simonyan & Zisserman (2015)."""
    ctx.ensure_object(dict)["traceback"] = traceback


class RegistryCommand(click.Command):
    """A command that takes every backend's settings as options (--ort-optimization, --compile-mode, ...: each
    backend's settings class, vggbench.backends.settings), made from the backend registry when the command is
    parsed or its help shown, so that a backend registered later has its options too; help texts that name
    {backends}, {precisions} or {thread_safe_backends} get the registry's lists."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        from .backends.registry import backend_names, get_backend

        names = tuple(backend_names())
        if getattr(self, "_made_for", None) != names:
            self._registry_params, words = _registry_params(names, get_backend)
            for param in self.params:
                template = getattr(param, "_help_template", None) or getattr(param, "help", None)
                if template and "{" in template:
                    param._help_template, param.help = template, template.format(**words)
            self._made_for = names
        params = super().get_params(ctx)
        return [*params[:-1], *self._registry_params, params[-1]]  # --help stays last


def _registry_params(names: tuple[str, ...], get_backend) -> tuple[list[click.Parameter], dict[str, str]]:
    from .backends.registry import settings_tables
    from .backends.target import PRECISIONS
    from .core.settings import click_params

    words = {"backends": ", ".join(names), "precisions": ", ".join(PRECISIONS),
             "thread_safe_backends": ", ".join(n for n in names if get_backend(n).thread_safe)}
    params = [param for table in settings_tables().values()
              for param in click_params(table.cls, include=table.cls.user_fields(), prefix=table.prefix)]
    return params, words


def echo_rows(rows, fmt, columns=None) -> None:
    from .bench.report import render

    click.echo(render(rows, fmt, columns))


# --- models / info ------------------------------------------------------------------------------------

def view_options(f):
    """The shape options, a custom net's --config, the input size and the output format of `models` and `info`."""
    f = cli_options(ModelSettings, include=("model_config",))(f)
    f = click.option("--format", "fmt", type=FORMAT_CHOICE, default="table", show_default=True)(f)
    f = click.option("--image-size", default=224, show_default=True, type=int,
                     help="Input size for GMACs and shapes.")(f)
    return cli_options(ShapeSettings)(f)


@main.command()
@click.argument("names", nargs=-1)
@view_options
def models(names, image_size, fmt, model_config, **kwargs) -> None:
    """List the model zoo (with a --config file's net), or show the layers of the models named (as `info` does)."""
    _show_models(names, image_size, fmt, model_config, kwargs)


@main.command()
@click.argument("name")
@view_options
def info(name, image_size, fmt, model_config, **kwargs) -> None:
    """Show one model (of the zoo, or --config's): its layers, per-layer output shapes, params and MACs."""
    _show_models((name,), image_size, fmt, model_config, kwargs)


def _show_models(names, image_size, fmt, model_config, kwargs) -> None:
    from .zoo.profiling import layer_rows, profile, zoo_rows
    from .zoo.specs import ModelOptions, get_spec, list_models

    if model_config is not None:
        ModelSettings(model_config=model_config)  # reads the file and registers its net, as train's --config does
    options = ModelOptions(**ShapeSettings(**given(kwargs)).model_options())
    if not names:
        echo_rows(zoo_rows(list_models(), options, image_size), fmt)
    for i, name in enumerate(names):
        if i:
            click.echo()
        spec = get_spec(name)
        prof = profile(spec, options, image_size)
        if fmt in ("table", "github"):
            click.echo(f"{spec.name}: config {spec.config}, {spec.depth} weight layers, "
                       f"{'batch norm' if spec.batch_norm else 'no batch norm'}{', LRN' if spec.lrn else ''}; "
                       f"{prof.params:,} params, {prof.gmacs:.4g} GMACs at {image_size}x{image_size}")
        echo_rows(layer_rows(prof), fmt)


# --- export / verify ----------------------------------------------------------------------------------

def progress_option(command):
    """--progress/--no-progress of export and verify: a line on stderr per step (per format, per comparison, per
    int8 plan trial), by default only on a terminal, as run's bar."""
    return click.option("--progress/--no-progress", default=None,
                        help="A line per step on stderr [default: on a terminal].")(command)


@main.command()
@click.argument("model")
@cli_options(ExportSettings)
@progress_option
def export(model, progress, **kwargs) -> None:
    """Export MODEL to TorchScript, ONNX and torch.export, with a manifest and a parity check."""
    from .core.console import progress_lines
    from .exporters.manifest import summary
    from .parity.checked import export_from

    with progress_lines(progress):
        manifest, out = export_from(ExportSettings(**given(kwargs)), model)
    rows, lines = summary(manifest)
    echo_rows(rows, "table")
    for line in lines:
        click.echo(line)
    click.echo(f"wrote {out}")


def channels_last_alias(command):
    """verify's --channels-last, the older spelling of --memory-format contiguous,channels_last (and
    --no-channels-last of contiguous alone)."""

    @functools.wraps(command)
    def wrapper(*args, channels_last=None, **kwargs):
        if channels_last is not None:
            if kwargs.get("memory_formats") is not None:
                raise ConfigError("--channels-last is the older spelling of --memory-format: give one of them")
            kwargs["memory_formats"] = MEMORY_FORMATS if channels_last else MEMORY_FORMATS[:1]
        return command(*args, **kwargs)

    return click.option("--channels-last/--no-channels-last", "channels_last", default=None,
                        help="Same as --memory-format contiguous,channels_last (the older spelling).")(wrapper)


def choice_over_flag(option: str, values: tuple[str, str], flag: str, what: str, help: str):
    """A decorator: `option` (one of `values`) as the spelling shared with the other commands of a boolean setting
    `flag` whose --FLAG/--no-FLAG stays as the older spelling; values[1] sets it. Both given must agree."""
    name = option[2:].replace("-", "_")

    def decorate(command):
        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            chosen = kwargs.pop(name, None)
            if chosen is not None:
                wanted = chosen == values[1]
                if kwargs.get(flag) not in (None, wanted):
                    older = f"--{'' if kwargs[flag] else 'no-'}{flag.replace('_', '-')}"
                    raise ConfigError(f"{option} {chosen} and {older} say different {what}: give one of them")
                kwargs[flag] = wanted
            return command(*args, **kwargs)

        return click.option(option, type=click.Choice(values), default=None, help=help)(wrapper)

    return decorate


# --memory-format and --precision of train and eval, as run and verify spell them (one value here); the older
# --channels-last and --amp stay
memory_format_option = choice_over_flag("--memory-format", MEMORY_FORMATS, "channels_last", "memory formats",
                                        "contiguous (NCHW) or channels_last (NHWC). [default: contiguous]")
precision_option = choice_over_flag("--precision", ("fp32", "amp"), "amp", "precisions",
                                    "fp32, or amp: fp16 autocast + GradScaler on CUDA, bf16 autocast on CPU (--amp, "
                                    "the older spelling). [default: fp32]")


PARITY_COLUMNS = ["backend", "precision", "memory_format", "inputs", "max_abs", "max_rel", "mean_abs", "min_cosine",
                  "top1_agreement", "top5_overlap", "atol", "passed", "reason"]


@main.command(cls=RegistryCommand)
@click.argument("export_dir", type=click.Path())
@cli_options(VerifySettings)
@channels_last_alias
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@click.option("--format", "fmt", type=FORMAT_CHOICE, default="table", show_default=True)
@cli_options(DbSettings)
@progress_option
def verify(export_dir, as_json, fmt, db, record_db, progress, **kwargs) -> None:
    """Check that every artifact of EXPORT_DIR computes what the eager model computes (exit 1 if not)."""
    import json

    from .backends.registry import backend_settings, flat_keys

    backend = backend_settings(flat=given({k: kwargs.pop(k) for k in flat_keys() if k in kwargs}))
    from .parity.verify import verify_with

    settings = VerifySettings(**given(kwargs))
    _check_db(db, record_db)
    _require_named_backends(settings.backends)
    if settings.layers:
        _verify_layers(settings, export_dir, as_json, fmt, backend, (db, record_db))
        return
    from .core.console import progress_lines

    with progress_lines(progress):
        report = verify_with(export_dir, settings, backend_settings=backend)
    _record(report, "verify", db, record_db)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        echo_rows([r.to_dict() for r in report.results], fmt, PARITY_COLUMNS)
        for line in report.skipped:
            click.echo(f"skipped: {line}")
        if report.warnings:
            click.echo(f"{len(report.warnings)} backend warning(s) recorded, shown with --json (e.g. "
                       f"{report.warnings[0][:100]})")
    report.check()
    if not as_json:
        click.echo(report.summary())


def _verify_layers(settings: VerifySettings, export_dir: str, as_json: bool, fmt: str, backend, db) -> None:
    import json

    from .parity.layers import COLUMNS, profile_with, table_rows

    report = profile_with(export_dir, settings, backend_settings=backend)
    _record(report, "verify-layers", *db)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for i, profile in enumerate(report.profiles):
            first = profile.first_exceeding
            click.echo(f"{'' if i == 0 else chr(10)}{profile.label} ({profile.mode}, {profile.images} images: "
                       f"{', '.join(profile.inputs)}; {profile.builds} prefix build(s)): "
                       f"{f'first stage over budget: {first}' if first else 'every stage measured within budget'}")
            echo_rows(table_rows(profile), fmt, COLUMNS)
        for line in report.skipped:
            click.echo(f"skipped: {line}")
        for label, path in (("profile", settings.out), ("plot", settings.plot)):
            if path:
                click.echo(f"wrote {label} {path}")
    report.check()
    if not as_json:
        click.echo(report.summary())


def _check_db(db: str | None, record_db: bool | None) -> None:
    """A --db that is no path or URL fails before the work starts."""
    if record_db is not False and db is not None:
        from .bench.db import check_url

        check_url(db)


def _record(obj, kind: str, db: str | None, record_db: bool | None, source=None) -> None:
    """Also record in the results database, unless --no-db; a database that fails warns and the command goes on."""
    if record_db is False:
        return
    from .bench.db import record

    record(obj, kind, db=db, source=source)


# --- train / eval -------------------------------------------------------------------------------------

@main.command()
@click.argument("model")
@cli_options(TrainConfig)
@memory_format_option
@precision_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def train(model, as_json, **kwargs) -> None:
    """Train MODEL (from scratch with --weights random --seed N, or fine-tune given weights).

    DDP: --nproc-per-node N (or --device cuda:0,1) starts the processes itself; under torchrun, put -- before
    train (torchrun --standalone --nproc_per_node 2 -m vggbench.cli -- train ...). gloo on CPU, nccl on CUDA.
    """
    import json

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
    top5 = (f"top-5 {result.test.top5:.2%}" if result.test and result.test.top5 is not None else
            "no top-5 with 5 classes or fewer")
    test = f", test acc {result.test.top1:.2%} ({top5}, {result.test.images} images)" if result.test else ""
    click.echo(f"best val acc {result.best_val_acc:.2%} (epoch {result.best_epoch}){test}; "
               f"{result.epochs} epochs in {result.seconds:.1f} s"
               f"{f' on {result.world_size} processes' if result.world_size > 1 else ''}")
    click.echo(f"run folder: {result.run_dir}")


@main.group()
def data() -> None:
    """Look at a dataset before training on it."""


@data.command("preview")
@cli_options(PreviewSettings)
def data_preview(**kwargs) -> None:
    """Write a grid of sample images, each labelled with its class, as the model gets them (post 000's plot)."""
    from .data.preview import preview

    click.echo(f"wrote {preview(PreviewSettings(**given(kwargs)))}")


@main.command("eval")
@click.argument("model")
@cli_options(EvalConfig)
@memory_format_option
@precision_option
@click.option("--format", "fmt", type=FORMAT_CHOICE, default="table", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
def evaluate(model, fmt, as_json, **kwargs) -> None:
    """Top-1/top-5 accuracy and loss of MODEL with --weights on a dataset split.

    With --protocol, --scales or --flip: the paper's test-time protocols (center, dense, multicrop,
    dense+multicrop), one row of top-1/top-5 error per protocol and scale, with the time per image.
    """
    import dataclasses

    from .training.evaluation import evaluate as evaluate_model

    config = EvalConfig(model=model, **given(kwargs))
    if config.uses_protocols:
        from .training.protocols import evaluate_protocols

        report = evaluate_protocols(config)
        echo_rows([{"model": model, **dataclasses.asdict(r)} for r in report.rows], "json" if as_json else fmt,
                  ["model", "protocol", "scales", "views", "top1_err", "top5_err", "loss", "images", "ms_per_image"])
        for note in report.notes:
            click.echo(f"note: {note}", err=True)
        return
    result = evaluate_model(config)
    row = {"model": model, "weights": config.weights, **dataclasses.asdict(result)}
    echo_rows([row], "json" if as_json else fmt,
              ["model", "weights", "dataset", "split", "images", "top1", "top5", "loss"])
    if result.top5 is None:
        from .training.evaluation import TOP5_NOTE

        click.echo(f"note: {TOP5_NOTE}", err=True)


# --- run / report -------------------------------------------------------------------------------------

def require_quiet_option(command):
    """--require-quiet [SECONDS] of run and loadgen (bare: 60 s)."""
    return click.option("--require-quiet", type=click.FloatRange(min=0), is_flag=False, flag_value=60.0,
                        default=None, metavar="[SECONDS]",
                        help="Before the first case, wait up to SECONDS (bare: 60) for a quiet machine (no CPU "
                             "pressure, no other busy process), then refuse (exit 2) naming what kept it busy. "
                             "Each row records the load it ran under either way.")(command)


def cluster_options(command):
    """--cluster and --node-cache of run and loadgen (vggbench.bench.fleet)."""
    command = click.option("--node-cache", type=click.Path(),
                           help="--cluster: the export cache on each node, where the driver's exports are put "
                                "[default: <tmp>/vggbench-fleet/exports there].")(command)
    return click.option("--cluster", metavar="ray://HOST:PORT|HOST:PORT|auto",
                        help="Run the cases across a Ray cluster (the fleet extra): each on a node of each machine "
                             "kind (--machines), one case per node at a time, in a fresh worker process; exports "
                             "made here once and shipped.")(command)


def check_cluster(cluster: str | None, require_quiet: float | None) -> None:
    """A --cluster that cannot work fails before anything is claimed: Ray missing, a bad address."""
    if cluster is None:
        return
    from .bench.fleet import check_address, require_ray

    require_ray()
    check_address(cluster)
    if require_quiet is not None:
        raise ConfigError("--require-quiet waits on this machine; with --cluster the cases run elsewhere (each "
                          "row records the load it ran under there)")


@main.command(cls=RegistryCommand)
@click.option("--suite", help="A suite name (vggbench/bench/suites/, then ./benchmarks/suites/) or a .toml file "
                              "[default: cpu, or cuda with --device cuda].")
@click.option("--best", is_flag=True, help="Time every fast path of the device (suite best-cpu or best-cuda, "
                                           "unless --suite) and name the fastest that passes parity per batch size.")
@cli_options(Suite, show_defaults=False)
@click.option("--export-cache", default="exports/.cache", show_default=True, type=click.Path(),
              help="Where parity-checked exports are kept between runs.")
@click.option("--out", type=click.Path(), help="A folder, or a .json file (the .csv goes beside it) "
                                               "[default: benchmarks/results/run-<time>.json].")
@click.option("--force", is_flag=True, help="Replace the results of an earlier run at a named --out .json (never a "
                                           "file vggbench did not write).")
@click.option("--format", "fmt", type=FORMAT_CHOICE, default="table", show_default=True)
@click.option("--baseline", default="eager:fp32:contiguous", show_default=True,
              help="backend:precision:memory_format that speedup is relative to.")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr [default: on a terminal].")
@click.option("--profile", is_flag=True,
              help="Profile instead of timing: each case under its runtime's own profiler (onnxruntime, OpenVINO "
                   "PERF_COUNT, torch.profiler), its time per layer (conv1_1 ... fc8) side by side per backend, "
                   "--min-iters profiled calls after the warm-up. Writes profile-<time>.json (no timed rows; "
                   "`vggbench report` shows it), a Chrome trace per case in profile-<time>.traces/ and a plot.")
@require_quiet_option
@cli_options(DbSettings)
@cluster_options
@click.pass_context
def run(ctx, suite, best, export_cache, out, force, fmt, baseline, progress, profile, require_quiet, db, record_db,
        cluster, node_cache, **kwargs) -> None:
    """Time forward passes across models, backends, batch sizes, precisions and memory formats.

    Each finished case is appended to run-<time>.jsonl beside the results as it is measured (`vggbench report`
    reads it if the run never finishes). Exit codes: 0 when every case ran, or could not run by design
    (unsupported) or ran out of memory (oom, what a batch sweep looks for); 1 when a case failed (parity_failed,
    export_failed, error), after the results are written and shown; 2 on bad input (an --out that exists: another
    name, or --force for an earlier run's results) and when --require-quiet's wait ends on a busy machine; 130 on Ctrl-C and 143 on SIGTERM (the finished cases are
    written first).
    """
    import shlex

    from .bench.report import parse_baseline, render_run
    from .bench.results import claim_results, read_run
    from .bench.suite import default_suite
    from .bench.sweep import benchmark
    from .core.device import parse_device

    _require_named_backends(kwargs.get("backends"))
    if best and suite is None:
        device = kwargs["device"]
        suite = f"best-{default_suite(None if device is None else parse_device(device))}"
    parse_baseline(baseline)  # a bad one fails now, not after the run
    _check_db(db, record_db)
    check_cluster(cluster, require_quiet)
    if cluster and profile:
        raise ConfigError("--profile runs here; it does not take --cluster")
    command = shlex.join(["vggbench", *ctx.obj.get("argv", [])])
    if profile:
        _profile_run(ctx, suite, export_cache, out, force, fmt, command, require_quiet, kwargs)
        return
    journal = claim_results(out, command=command, force=force)  # an --out that cannot be written fails now, not after the run
    try:
        if cluster:
            from .bench.fleet import benchmark_on_cluster

            result = benchmark_on_cluster(suite, cluster=cluster, export_cache=export_cache, node_cache=node_cache,
                                          progress=progress, raise_errors=bool(ctx.obj.get("traceback")),
                                          journal=journal, **given(kwargs))
        else:
            result = benchmark(suite, export_cache=export_cache, progress=progress,
                               raise_errors=bool(ctx.obj.get("traceback")), journal=journal,
                               require_quiet=require_quiet, **given(kwargs))
    except BenchmarkInterrupted as e:  # keep what was measured, then exit as an interrupt does
        result = e.run
        if not result.results:
            journal.close()
            raise
    except BaseException as e:
        journal.close()  # kept if it holds a finished case
        if journal.rows and getattr(e, "path", None) != journal.path:  # a journal's own WriteError says so
            click.echo(f"the {journal.rows} finished case(s) are kept in {journal.path} (`vggbench report "
                       f"{journal.path}` reads it)", err=True)
        raise
    result.settings["command"] = command
    json_path, csv_path = journal.finish(result.to_dict())
    data = read_run(json_path)
    _record(data, "run", db, record_db, json_path)
    # the table is rendered from the file just written, as `vggbench report` would
    click.echo(render_run(data, fmt, baseline))
    click.echo(f"\n{result.summary()}; wrote {json_path} and {csv_path}", err=fmt in ("csv", "json"))
    if "interrupted" in result.settings:
        click.echo(f"interrupted: {result.settings['interrupted']}; the results so far are written", err=True)
        ctx.exit(interrupt_exit_code(ctx))
    result.check()


def _profile_run(ctx, suite, export_cache, out, force, fmt, command, require_quiet, kwargs) -> None:
    from .bench.layer_time import plot_path, profile_run, render_layer_times, traces_folder

    data, path = profile_run(suite, export_cache=export_cache, out=out, force=force, command=command,
                             raise_errors=bool(ctx.obj.get("traceback")), require_quiet=require_quiet,
                             echo=lambda line: click.echo(line, err=True), **given(kwargs))
    click.echo(render_layer_times(data, fmt))
    written = [str(p) for p in (path, traces_folder(path), plot_path(path)) if p.exists()]
    click.echo(f"\nwrote {', '.join(written)}", err=fmt in ("csv", "json"))
    if any(e["status"] in ("parity_failed", "export_failed", "error") for e in data["profiles"]):
        ctx.exit(1)


LOADGEN_SUITE_KEYS = ("models", "backends", "precisions", "memory_formats", "device", "image_size", "threads", "tf32",
                      "cudnn_benchmark", "weights", "seed", "num_classes", "width", "hidden", "dropout", "head",
                      "init", "allocator", "machines")  # and every backend's settings (RegistryCommand)


@main.command("loadgen", cls=RegistryCommand)
@click.option("--suite", help="Take models, backends, precisions and memory formats from a suite (as `run` does) "
                              "[default: vgg16, eager fp32 contiguous, 224, cpu].")
@cli_options(Suite, include=LOADGEN_SUITE_KEYS, show_defaults=False)
@cli_options(LoadgenSettings)
@cli_options(SutSettings)
@click.option("--export-cache", default="exports/.cache", show_default=True, type=click.Path(),
              help="Where parity-checked exports are kept between runs (shared with `run`).")
@click.option("--out", type=click.Path(), help="A folder, or a .json file (the .csv and LoadGen's logs, NAME.logs/, "
                                               "go beside it) [default: benchmarks/results/loadgen-<time>.json].")
@click.option("--force", is_flag=True, help="Replace the results (and logs) of an earlier run at a named --out .json "
                                           "(never files vggbench did not write).")
@click.option("--format", "fmt", type=FORMAT_CHOICE, default="table", show_default=True)
@require_quiet_option
@cli_options(DbSettings)
@cluster_options
@click.pass_context
def loadgen(ctx, suite, export_cache, out, force, fmt, require_quiet, db, record_db, cluster, node_cache,
            **kwargs) -> None:
    """MLPerf's scenarios (SingleStream, MultiStream, Server, Offline) run by MLPerf's LoadGen over any backend.

    Server finds the highest rate whose run LoadGen reports VALID at --latency-bound-ms (p99). Each scenario's
    verdict, throughput and latency percentiles go into the results file (`vggbench report` shows it); LoadGen's
    summary and detail logs go beside it. Exit 1 when a target failed (parity, its export, or an error; an INVALID
    verdict is a result, not a failure), after the results are written; 2 on bad input.
    """
    import shlex

    from .backends.registry import flat_keys
    from .bench.loadgen import loadgen as run_loadgen
    from .bench.loadgen import mlperf_loadgen_module
    from .bench.report import render_run
    from .bench.results import claim_results, logs_folder, read_run

    mlperf_loadgen_module()  # a missing [loadgen] extra fails before the results file is claimed
    _require_named_backends(kwargs.get("backends"))

    names = {"suite": {*LOADGEN_SUITE_KEYS, *flat_keys()}, "settings": set(LoadgenSettings.setting_names()),
             "sut": set(SutSettings.setting_names())}
    parts = {part: {k: v for k, v in given(kwargs).items() if k in keys} for part, keys in names.items()}
    settings, sut = LoadgenSettings(**parts["settings"]), SutSettings(**parts["sut"])  # bad values fail now
    _check_db(db, record_db)
    check_cluster(cluster, require_quiet)
    command = shlex.join(["vggbench", *ctx.obj.get("argv", [])])
    journal = claim_results(out, command=command, prefix="loadgen", force=force, logs=True)
    logs = logs_folder(journal.json_path)
    try:
        if cluster:
            from .bench.fleet import loadgen_on_cluster

            result = loadgen_on_cluster(suite, cluster=cluster, settings=settings, sut=sut, export_cache=export_cache,
                                        node_cache=node_cache, journal=journal,
                                        echo=lambda line: click.echo(line, err=True), **parts["suite"])
        else:
            result = run_loadgen(suite, settings=settings, sut=sut, export_cache=export_cache, logs=logs,
                                 journal=journal, echo=lambda line: click.echo(line, err=True),
                                 require_quiet=require_quiet, **parts["suite"])
    except BenchmarkInterrupted as e:
        result = e.run
        if not result.results:
            journal.close()
            raise
    except BaseException:
        journal.close()
        raise
    result.settings["command"] = command
    json_path, csv_path = journal.finish(result.to_dict())
    data = read_run(json_path)
    _record(data, "loadgen", db, record_db, json_path)
    click.echo(render_run(data, fmt))
    where = f"; LoadGen's logs in {logs}" if logs.is_dir() else ""
    click.echo(f"\n{result.summary()}; wrote {json_path} and {csv_path}{where}", err=fmt in ("csv", "json"))
    if "interrupted" in result.settings:
        click.echo(f"interrupted: {result.settings['interrupted']}", err=True)
        ctx.exit(interrupt_exit_code(ctx))
    result.check()


TUNE_SUITE_KEYS = ("device", "image_size", "weights", "seed", "num_classes", "width", "hidden", "dropout", "head",
                   "init", "tf32", "cudnn_benchmark", "warmup", "warmup_time_s", "min_time_s", "min_iters", "max_iters",
                   "rounds", "max_rounds", "target_width", "isolation", "worker_timeout_s", "machines")


def _tune_settings():
    from .bench.tune import TuneSettings

    return TuneSettings


@main.command()
@click.argument("model")
@cli_options(_tune_settings())
@cli_options(Suite, include=TUNE_SUITE_KEYS, show_defaults=False)
@click.option("--export-cache", default="exports/.cache", show_default=True, type=click.Path(),
              help="Where parity-checked exports are kept between runs (shared with `run`).")
@click.option("--out", type=click.Path(), help="A folder, or a .json file [default: benchmarks/results/"
                                               "tune-<time>.json].")
@click.option("--force", is_flag=True, help="Replace the results of an earlier run at a named --out .json.")
@click.option("--format", "fmt", type=FORMAT_CHOICE, default="table", show_default=True)
@cli_options(DbSettings)
@cluster_options
@click.pass_context
def tune(ctx, model, export_cache, out, force, fmt, db, record_db, cluster, node_cache, **kwargs) -> None:
    """Search the runtimes' own knobs for MODEL with Optuna: the least latency at batch 1 (--goal latency), the
    most images/s at --batch-size (throughput), or the most images/s within a p99 bound (p99 --bound-ms).

    Every trial not pruned is an ordinary timed case (parity judged; --isolation process available); the search is
    a results file `report` reads, with each trial's settings and the winner, which `vggbench deploy` ships.
    Exit 2 on bad input; 1 when no trial met the goal (the trials that ran are written first).
    """
    import shlex

    from .bench.report import render_run
    from .bench.results import claim_results, read_run
    from .bench.tune import TuneSettings
    from .bench.tune import tune as run_tune

    settings = TuneSettings(**given({k: kwargs.pop(k) for k in TuneSettings.setting_names() if k in kwargs}))
    suite = given({k: kwargs[k] for k in TUNE_SUITE_KEYS if k in kwargs})
    command = shlex.join(["vggbench", *ctx.obj.get("argv", [])])
    _check_db(db, record_db)
    check_cluster(cluster, None)
    journal = claim_results(out, command=command, prefix="tune", force=force)
    try:
        result = run_tune(model, settings, export_cache=export_cache, journal=journal, cluster=cluster,
                          node_cache=node_cache,
                          echo=lambda line: click.echo(line, err=True),
                          raise_errors=bool(ctx.obj.get("traceback")), **suite)
    except BenchmarkInterrupted as e:  # the trials that finished are written, then it exits as an interrupt does
        result = e.run
        if not result.results:
            journal.close()
            raise
    except BaseException:
        journal.close()
        raise
    result.settings["command"] = command
    if not result.results:
        journal.close()
        raise CheckFailed("no trial was timed: " + "; ".join(
            f"trial {t['number']}: {t.get('reason') or t['state']}" for t in result.settings["tune"]["trials"]))
    data = result.to_dict()
    json_path, csv_path = journal.finish(data)
    _record(data, "tune", db, record_db, json_path)
    click.echo(render_run(read_run(json_path), fmt))
    click.echo(f"\n{result.summary()}; wrote {json_path} and {csv_path}", err=fmt in ("csv", "json"))
    if "interrupted" in result.settings:
        click.echo(f"interrupted: {result.settings['interrupted']}; the trials so far are written", err=True)
        ctx.exit(interrupt_exit_code(ctx))
    if result.settings["tune"]["winner"] is None:
        raise CheckFailed(f"no trial met the goal ({settings.goal}): the trials and their rows are written")


@main.command()
@click.argument("results", type=click.Path())
@click.argument("out", type=click.Path())
@click.option("--row", type=click.IntRange(min=0), help="The row to deploy (0-based, as in the results file) "
                                                        "[default: a tune's winner].")
@click.option("--where", help="The one row that ran with these fields, e.g. backend=onnxruntime,batch_size=8.")
@click.option("--export-cache", type=click.Path(), help="Where the run's exports are [default: the one the results "
                                                        "file names].")
@click.option("--force", is_flag=True, help="Replace a deploy folder vggbench wrote at OUT (never another folder).")
def deploy(results, out, row, where, export_cache, force) -> None:
    """Write OUT: a folder that runs one measured row without vggbench (the artifact, the runtime's configuration,
    reference inputs and outputs, requirements.txt and run.py, which checks the artifact's sha256 and the outputs
    and times it). The row is a tune's winner, or --row / --where of any results file."""
    from .bench.deploy import deploy as write_deploy

    folder, config = write_deploy(results, out, row=row, where=where, force=force, export_cache=export_cache)
    measured = config["measured"]["images_per_s"]
    click.echo(f"wrote {folder}: {config['backend']} {config['precision']} batch {config['batch_size']} "
               f"({config['artifact']['file']}, measured {measured:.4g} images/s); run it with "
               f"`python {folder}/run.py` after `pip install -r {folder}/requirements.txt`")


@main.command()
@click.argument("results", type=click.Path())
@click.option("--format", "fmt", type=FORMAT_CHOICE, default="table", show_default=True)
@click.option("--baseline", default="eager:fp32:contiguous", show_default=True,
              help="backend[:precision[:memory_format]] that speedup is relative to.")
@click.option("--compare", "old", type=click.Path(),
              help="An older results file: each case judged from both runs' samples (regressed, improved, unchanged "
                   "or inconclusive, with the change's 95% interval), and exit 1 on a regression.")
@click.option("--threshold", default="5%", show_default=True,
              help="The smallest change that matters: regressed when the change's whole interval lies beyond it, "
                   "unchanged when within it.")
@click.option("--fail-on", type=click.Choice(["regressed", "inconclusive"]), default="regressed", show_default=True,
              help="With --compare: exit 1 on a regression only, or also on an inconclusive case (noisy, under load, "
                   "too few samples, or an interval across the threshold).")
@click.option("--allow-different-machines", is_flag=True,
              help="Compare runs from different hardware anyway (the ratios then mean little).")
@click.option("--plot", type=click.Path(), help="Also draw images/s against batch size into this .png file.")
@click.option("--best", is_flag=True, help="Only the fastest case that passed parity per batch size.")
@click.option("--html", "html_dir", type=click.Path(),
              help="Also write a self-contained HTML page into this folder (index.html): the tables with their "
                   "intervals, plots, LoadGen scenarios, per-layer error, and each case's history from the results "
                   "database with regressions marked (at --threshold).")
@click.option("--force", is_flag=True, help="Replace an --html folder that an earlier report wrote (never another).")
@click.option("--machines", is_flag=True, help="A cluster's run (`run --cluster`): each case's images/s on every "
                                              "machine kind side by side.")
@click.option("--prices", type=click.Path(), help="With --machines (implied): a TOML price table, machine kind = price "
                                                  "per hour, for the cost of a million images on each kind.")
@cli_options(DbSettings)
def report(results, fmt, baseline, old, threshold, fail_on, allow_different_machines, plot, best, html_dir,
           force, db, record_db, machines, prices) -> None:
    """Show a results file as tables with speed-ups (per machine kind for a cluster's run), compare it with an
    older one, or plot it; a profile that `run --profile` wrote, as its per-layer table (and --plot: each layer's
    share against depth)."""
    from .bench.layer_time import is_layer_times
    from .bench.report import parse_baseline, read_prices, render_fastest, render_machines, render_run
    from .bench.results import read_run

    if is_layer_times(results):
        if html_dir:
            raise ConfigError("--html takes a results file, not a `run --profile` profile")
        _report_layer_times(results, fmt, plot, best, old)
        return
    if html_dir:
        from .bench.html_report import check_html_dir

        check_html_dir(html_dir, force)  # before any table is printed
    if plot:
        from .core.plots import check_plot_path

        check_plot_path(plot)  # before any table is printed
    parse_baseline(baseline)
    price_table = read_prices(prices) if prices else None
    data = read_run(results)
    if machines or prices:
        click.echo(render_machines(data, fmt, price_table))
    elif best:
        click.echo(render_fastest(data, fmt, baseline))
    elif old is None:
        click.echo(render_run(data, fmt, baseline))
    else:
        _compare(data, read_run(old), threshold, allow_different_machines, fmt, fail_on)
    if plot:
        from .bench.plot import plot_run

        click.echo(f"wrote {plot_run(data, plot)}", err=fmt in ("csv", "json"))
    if html_dir:
        from .bench.compare import parse_threshold
        from .bench.html_report import write_html

        page = write_html(data, html_dir, source=results, baseline=baseline, threshold=parse_threshold(threshold),
                          db=db, use_db=record_db is not False, force=force)
        click.echo(f"wrote {page}", err=fmt in ("csv", "json"))


def _report_layer_times(path, fmt: str, plot: str | None, best: bool, old: str | None) -> None:
    from .bench.layer_time import read_layer_times, render_layer_times

    if best or old:
        raise ConfigError(f"{path} is a profiled run (per-layer time, with the profilers' cost): it has no timed rows "
                          f"for --{'best' if best else 'compare'}; report a run without --profile")
    if plot:
        from .core.plots import check_plot_path

        check_plot_path(plot)
    data = read_layer_times(path)
    click.echo(render_layer_times(data, fmt))
    if plot:
        from .bench.layer_time import plot_layer_times

        click.echo(f"wrote {plot_layer_times(data, plot)}", err=fmt in ("csv", "json"))


def _compare(new: dict, old: dict, threshold: str, allow_different_machines: bool, fmt: str,
             fail_on: str = "regressed") -> None:
    from .bench.compare import COMPARE_COLUMNS, compare_runs, parse_threshold

    comparison = compare_runs(new, old, parse_threshold(threshold), allow_different_machines)
    for line in comparison.warnings:
        click.secho(f"warning: environments differ: {line}", err=True, fg="yellow")
    if comparison.rows or not comparison.scenario_rows:
        echo_rows(comparison.rows, fmt, COMPARE_COLUMNS)
    if comparison.scenario_rows:
        from .bench.compare import SCENARIO_COMPARE_COLUMNS

        if comparison.rows:
            click.echo()
        echo_rows(comparison.scenario_rows, fmt, SCENARIO_COMPARE_COLUMNS)
    click.echo(comparison.summary(), err=fmt in ("csv", "json"))
    comparison.check(fail_on)


# --- the results database ----------------------------------------------------------------------------

@main.group("db")
def database() -> None:
    """The results database that run, loadgen and verify also record into (see `vggbench history`)."""


@database.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--db", help="The results database: a file (SQLite) or an SQLAlchemy URL [default: $VGGBENCH_DB, else "
                           "~/.local/share/vggbench/results.db].")
def db_import(files, db) -> None:
    """Record existing results files (any schema version), run journals (.jsonl) and layer profiles."""
    from .bench.db import import_files

    for path, what in import_files(files, db):
        click.echo(f"{path}: {what}")


@database.command("check")
@click.option("--db", help="The results database [default: $VGGBENCH_DB, else ~/.local/share/vggbench/results.db].")
def db_check(db) -> None:
    """Check that every run is whole (all its cases and samples) and, for SQLite, the file's integrity (exit 1 if
    not)."""
    from .bench.db import Database
    from .core.errors import CheckFailed

    with Database(db) as database:
        problems = database.check()
        runs = len(database.runs())
    for line in problems:
        click.echo(line)
    if problems:
        raise CheckFailed(f"{len(problems)} problem(s) in the results database {database.url}")
    click.echo(f"ok: {runs} runs, each whole")


@main.command()
@click.option("--model", "models", multiple=True, help="Only cases of this model (repeat for more).")
@click.option("--backend", "backends", multiple=True, help="Only cases of this backend (repeat for more).")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(["run", "loadgen", "verify", "verify-layers", "tune"]),
              help="Only runs of this kind (repeat for more).")
@click.option("--machine", help="Only runs on a machine whose description (CPU model, cores, GPUs) contains this.")
@click.option("--commit", help="Only runs of commits starting with this.")
@click.option("--since", help="Only runs made on or after this date (YYYY-MM-DD, UTC).")
@click.option("--until", help="Only runs made on or before this date (YYYY-MM-DD, UTC).")
@click.option("--cases", "per_case", is_flag=True, help="One row per case instead of one per run.")
@click.option("--format", "fmt", type=click.Choice(["table", "github", "csv", "json", "parquet"]), default="table",
              show_default=True, help="parquet needs --out, pandas and pyarrow.")
@click.option("--out", type=click.Path(), help="Write to this file instead of printing (a new file: an existing one is never replaced).")
@click.option("--db", help="The results database [default: $VGGBENCH_DB, else ~/.local/share/vggbench/results.db].")
def history(models, backends, kinds, machine, commit, since, until, per_case, fmt, out, db) -> None:
    """List the runs (or cases) recorded in the results database, filtered, oldest first."""
    from .bench.db import Database, HistoryFilter, export_rows

    filters = HistoryFilter(model=models, backend=backends, kind=kinds, machine=machine, commit=commit, since=since,
                            until=until)
    with Database(db) as database:
        rows = database.cases(filters) if per_case else database.runs(filters)
    text = export_rows(rows, fmt, out)
    if text is not None:
        click.echo(text)
    summary = f"{len(rows)} {'case' if per_case else 'run'}(s)" + (f"; wrote {out}" if out else "")
    click.echo(summary, err=True)


if __name__ == "__main__":
    main()
