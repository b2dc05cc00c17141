"""The `vggbench` command: parses options, calls the library, prints, sets the exit code. No logic here."""

from __future__ import annotations

import functools

import click

from .errors import VggbenchError

FORMAT_CHOICE = click.Choice(["table", "github", "csv", "json"])


class Group(click.Group):
    """Turns VggbenchError into one line on stderr and its exit code (tracebacks only with --traceback)."""

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
    keys = ("num_classes", "width", "hidden", "dropout", "head", "init")
    return {k: kwargs.pop(k) for k in keys if k in kwargs}


def echo_rows(rows, fmt, columns=None) -> None:
    from .report import render

    click.echo(render(rows, fmt, columns))


# --- models / info ------------------------------------------------------------------------------------

@main.command()
@click.argument("names", nargs=-1)
@shape_options
@click.option("--image-size", default=224, show_default=True, type=int, help="Input size for GMACs and shapes.")
@click.option("--format", "fmt", type=FORMAT_CHOICE, default="table", show_default=True)
def models(names, image_size, fmt, **kwargs) -> None:
    """List the model zoo, or show the layers of the models named."""
    from .profile import zoo_rows
    from .specs import ModelOptions, list_models

    options = ModelOptions(**{k: v for k, v in shape_kwargs(kwargs).items() if v is not None})
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
    from .specs import ModelOptions

    options = ModelOptions(**{k: v for k, v in shape_kwargs(kwargs).items() if v is not None})
    _show_model(name, options, image_size, fmt)


def _show_model(name, options, image_size, fmt) -> None:
    from .profile import layer_rows, profile
    from .specs import get_spec

    spec = get_spec(name)
    prof = profile(spec, options, image_size)
    if fmt in ("table", "github"):
        click.echo(f"{spec.name}: config {spec.config}, {spec.depth} weight layers, "
                   f"{'batch norm' if spec.batch_norm else 'no batch norm'}{', LRN' if spec.lrn else ''}; "
                   f"{prof.params:,} params, {prof.gmacs:.4g} GMACs at {image_size}x{image_size}")
    echo_rows(layer_rows(prof), fmt)
