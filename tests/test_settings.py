"""Settings declared once: the options, the reading of mappings and the checks derived from the fields."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import ClassVar

import click
import pytest
from click.testing import CliRunner

from vggbench.backends import OrtSettings, OvSettings
from vggbench.backends.tensorrt import TrtSettings
from vggbench.bench.suite import Suite, parse_suite
from vggbench.cli import main
from vggbench.core.errors import ConfigError
from vggbench.core.settings import Settings, check_keys, cli_options, coerce, from_mapping, given, setting
from vggbench.exporters.settings import ExportSettings
from vggbench.parity.settings import VerifySettings
from vggbench.training.config import EvalConfig, TrainConfig
from vggbench.zoo.settings import ModelSettings

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def _upper(value):
    return str(value).upper()


@dataclass(frozen=True, kw_only=True)
class Toy(Settings):
    name: str = setting("toy", cli=False)
    steps: int = setting(10, "How many steps.", minimum=1)
    rate: float = setting(0.5, "A rate.", above=0, below=1)
    scale: float | None = setting(None, "A scale [default: none].", minimum=0)
    mode: str = setting("fast", "fast or slow.", choices=("fast", "slow"))
    sizes: tuple[int, ...] = setting((1, 8), "Sizes.", minimum=1)
    tags: tuple[str, ...] = setting(("a",), "Tags.", option="--tag")
    loud: bool = setting(False, "Be loud.")
    dynamic: bool = setting(True, "Dynamic or static.", option="--dynamic/--static")
    code: str = setting("ab", "Upper-cased.", parse=_upper)


@dataclass(frozen=True, kw_only=True)
class KeyToy(Toy):
    _labels: ClassVar[str] = "key"


def toy_command(**decorator_kwargs):
    seen = {}

    @click.command()
    @cli_options(Toy, **decorator_kwargs)
    def command(**kwargs):
        seen["raw"] = kwargs
        seen["toy"] = Toy(**given(kwargs))

    return command, seen


# --- derived options ---------------------------------------------------------------------------------------

def test_options_are_derived_from_the_fields():
    command, _ = toy_command()
    params = {p.name: p for p in command.params}
    assert list(params) == ["steps", "rate", "scale", "mode", "sizes", "tags", "loud", "dynamic", "code"]
    assert all(p.default is None for p in params.values())  # the dataclass default is the only default
    assert params["steps"].opts == ["--steps"] and params["steps"].type is click.INT
    assert params["rate"].type is click.FLOAT
    assert params["tags"].opts == ["--tag"]  # named as given, stored under the field's name
    assert params["loud"].opts == ["--loud"] and params["loud"].secondary_opts == ["--no-loud"]
    assert params["dynamic"].opts == ["--dynamic"] and params["dynamic"].secondary_opts == ["--static"]
    assert params["steps"].help == "How many steps. [default: 10]"
    assert params["sizes"].help == "Sizes. [default: 1,8]" and params["loud"].help.endswith("[default: off]")
    assert params["scale"].help == "A scale [default: none]."  # a help that states its default keeps it
    assert params["mode"].metavar == "[fast|slow]"
    assert "name" not in params  # cli=False


def test_include_exclude_and_hidden_defaults():
    command, _ = toy_command(include=["steps", "loud"])
    assert [p.name for p in command.params] == ["steps", "loud"]
    command, _ = toy_command(exclude=["steps"], show_defaults=False)
    assert "steps" not in [p.name for p in command.params]
    assert all("[default:" not in (p.help or "") for p in command.params if p.name != "scale")
    with pytest.raises(ValueError, match="no settings"):
        cli_options(Toy, include=["stepz"])


def test_options_build_the_dataclass_with_its_defaults_for_what_is_not_given():
    command, seen = toy_command()
    result = CliRunner().invoke(command, ["--steps", "3", "--sizes", "2,4", "--tag", "x, y", "--static",
                                          "--code", "cd"])
    assert result.exit_code == 0, result.output
    assert seen["toy"] == Toy(steps=3, sizes=(2, 4), tags=("x", "y"), dynamic=False, code="CD")
    assert seen["toy"].rate == 0.5 and seen["toy"].loud is False
    CliRunner().invoke(command, [])
    assert seen["toy"] == Toy() and set(given(seen["raw"])) == set()


# --- checks --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,message", [
    ({"steps": 0}, "--steps must be a positive integer, got 0"),
    ({"steps": True}, "--steps must be an integer, got True"),
    ({"steps": 2.5}, "--steps must be an integer, got 2.5"),
    ({"rate": 1}, "--rate must be in (0, 1), got 1.0"),
    ({"rate": float("nan")}, "--rate must be a finite number, got nan"),
    ({"scale": float("inf")}, "--scale must be a finite number, got inf"),
    ({"scale": -1}, "--scale must be 0 or more, got -1.0"),
    ({"scale": "big"}, "--scale must be a number, got 'big'"),
    ({"mode": "medium"}, "unknown mode 'medium': choose from fast, slow"),
    ({"sizes": [1, 0]}, "--sizes must be a positive integer, got 0"),
    ({"sizes": []}, "--sizes must be a non-empty list, got []"),
    ({"sizes": ["8"]}, "--sizes must be a list of ints, got '8'"),
    ({"sizes": "1,x"}, "--sizes must be a comma-separated list of numbers"),
    ({"loud": "yes"}, "--loud must be true/false, got 'yes'"),
    ({"steps": None}, "--steps must be given"),
])
def test_bad_values_are_one_line_config_errors_naming_the_option(kwargs, message):
    with pytest.raises(ConfigError) as info:
        Toy(**kwargs)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_values_are_stored_canonical_and_checked_again_on_replace():
    toy = Toy(rate=1 / 4, scale=2, sizes=[4, 2], tags="p,q", code="x")
    assert toy.scale == 2.0 and isinstance(toy.scale, float)
    assert toy.sizes == (4, 2) and toy.tags == ("p", "q") and toy.code == "X"
    assert Toy(sizes=8).sizes == (8,)
    with pytest.raises(ConfigError, match="--steps must be a positive integer"):
        dataclasses.replace(toy, steps=-3)
    assert coerce(Toy, "sizes", "3,5") == (3, 5)


def test_key_style_names_the_key():
    with pytest.raises(ConfigError, match=r"^steps must be at least 1, got 0$"):
        KeyToy(steps=0)
    with pytest.raises(ConfigError, match=r"^rate must be a finite number"):
        KeyToy(rate=math.inf)


# --- mappings: TOML and JSON -------------------------------------------------------------------------------

def test_reading_toml_and_json_mappings():
    toy = from_mapping(Toy, tomllib.loads('steps = 4\nsizes = [1, 2]\nmode = "slow"\nloud = true'), "toy.toml")
    assert toy == Toy(steps=4, sizes=(1, 2), mode="slow", loud=True)
    assert from_mapping(Toy, json.loads(json.dumps(toy.to_dict())), "settings.json") == toy
    assert toy.to_dict()["sizes"] == [1, 2]
    with pytest.raises(ConfigError, match=r"^unknown key 'stpes' in toy.toml; did you mean steps\?$"):
        from_mapping(Toy, {"stpes": 4}, "toy.toml")
    with pytest.raises(ConfigError, match=r"unknown key 'zzz' in x \(keys: .*steps"):
        check_keys({"zzz": 1}, ["steps", "rate"], "x")
    with pytest.raises(ConfigError, match="must be a table of settings"):
        from_mapping(Toy, [1, 2], "toy.toml")
    with pytest.raises(ConfigError, match="--steps must be an integer, got '4'"):
        from_mapping(Toy, {"steps": "4"}, "toy.toml")


# --- the settings of vggbench ----------------------------------------------------------------------------

@pytest.mark.parametrize("cls,kwargs,message", [
    (TrainConfig, {"momentum": -0.1}, "--momentum must be 0 or more"),
    (TrainConfig, {"lr": 0}, "--lr must be positive"),
    (TrainConfig, {"color_jitter": math.nan}, "--color-jitter must be a finite number"),
    (TrainConfig, {"batch_size": 0}, "--batch-size must be a positive integer"),
    (TrainConfig, {"device": "tpu"}, "unknown device 'tpu': use auto, cpu, cuda or cuda:N"),
    (TrainConfig, {"optimizer": "lamb"}, "unknown optimizer 'lamb': choose from sgd, adam"),
    (TrainConfig, {"head": "big"}, "unknown head 'big'"),
    (EvalConfig, {"split": "dev"}, "unknown split 'dev'"),
    (EvalConfig, {"workers": -1}, "--workers must be in \\[0, 1024\\]"),
    (ExportSettings, {"calibration_images": 0}, "--calibration-images must be a positive integer"),
    (VerifySettings, {"atol": -1e-3}, "--atol must be 0 or more"),
    (VerifySettings, {"device": "auto"}, "unknown device 'auto': use cpu, cuda or cuda:N"),
    (Suite, {"min_time_s": math.inf}, "min_time_s must be a finite number"),
    (Suite, {"warmup_time_s": -1}, "warmup_time_s must be 0 or more"),
    (Suite, {"max_iters": 0}, "max_iters must be at least 1"),
    (OrtSettings, {"optimization": "max"}, "unknown optimization 'max'"),
    (TrtSettings, {"workspace_gib": 0}, "workspace_gib must be in (0, 1024]"),
    (OvSettings, {"streams": 0}, "streams must be in \\[1, "),
])
def test_vggbench_settings_check_their_values(cls, kwargs, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(")):
        cls(**kwargs)


def test_a_backend_setting_given_to_a_suite_names_its_backend():
    with pytest.raises(ConfigError, match="^onnxruntime: unknown optimization 'max'"):
        Suite().override(ort_optimization="max")
    with pytest.raises(ConfigError, match="^openvino: streams must be in"):
        Suite(backend={"ov": {"streams": 0}})


def test_devices_are_stored_canonical():
    assert TrainConfig(device="CPU").device == "cpu" and EvalConfig().device == "auto"
    assert Suite(device=" cuda:1 ").device == "cuda:1" and VerifySettings(device="Cuda").device == "cuda"


def test_model_settings_are_declared_once_and_shared():
    declared = {f.name: f.metadata["vggbench.setting"] for f in dataclasses.fields(ModelSettings)}
    assert set(declared) == {"weights", "seed", "num_classes", "width", "hidden", "dropout", "head", "init",
                             "model_config"}
    for cls in (TrainConfig, EvalConfig, Suite, ExportSettings):
        inherited = {f.name: f.metadata["vggbench.setting"] for f in dataclasses.fields(cls) if f.name in declared}
        assert all(inherited[name] is declared[name] for name in declared), cls


def test_suite_files_and_overrides_go_through_the_same_checks():
    with pytest.raises(ConfigError, match="^min_time_s must be a finite number"):
        parse_suite("min_time_s = inf")
    with pytest.raises(ConfigError, match="^threads must be in \\[1, 1024\\]"):
        Suite().override(threads=0)
    assert parse_suite('batch_sizes = "1..8"').batch_sizes == (1, 2, 4, 8)


def test_every_setting_is_an_option_of_its_command():
    commands = {"train": TrainConfig, "eval": EvalConfig, "run": Suite, "export": ExportSettings,
                "verify": VerifySettings}
    for name, cls in commands.items():
        params = {p.name for p in main.commands[name].params}
        wanted = {f.name for f in dataclasses.fields(cls) if f.metadata["vggbench.setting"].cli}
        assert wanted <= params, (name, wanted - params)


@pytest.mark.parametrize("args,message", [
    (("train", "vgg11", "--momentum", "-1"), "error: --momentum must be 0 or more, got -1.0"),
    (("train", "vgg11", "--color-jitter", "nan"), "error: --color-jitter must be a finite number, got nan"),
    (("eval", "vgg11", "--device", "gpu"), "error: unknown device 'gpu': use auto, cpu, cuda or cuda:N"),
    (("run", "--min-time", "-1"), "error: min_time_s must be 0 or more, got -1.0"),
    (("verify", "nowhere", "--batch-sizes", "0"), "error: --batch-size must be a positive integer, got 0"),
    (("verify", "nowhere", "--batch-size", "0"), "error: --batch-size must be a positive integer, got 0"),
    (("train", "vgg11", "--precision", "fp32", "--amp"),
     "error: --precision fp32 and --amp say different precisions: give one of them"),
])
def test_checks_reach_the_command_line_as_one_line_and_exit_2(args, message, tmp_path):
    result = CliRunner().invoke(main, [*args, *(("--out", str(tmp_path)) if args[0] in ("train", "run") else ())])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == message


def test_overriding_every_list_of_a_matrix_keeps_the_suite_valid():
    suite = parse_suite('[[matrix]]\nbackends = ["eager"]\n[[matrix]]\nbackends = ["onnxruntime"]\nbatch_sizes = [2]')
    both = suite.override(backends="eager", batch_sizes="4")
    assert both.matrix == ({}, {}) and [g[:5] for g in both.groups()] == [("vgg16", "eager", "fp32", "contiguous", (4,))]
    with pytest.raises(ConfigError, match="matrix must be a list of tables"):
        parse_suite("matrix = [{}]")


@pytest.mark.parametrize("command", ["train", "eval"])
@pytest.mark.parametrize("args,amp,channels_last", [
    (("--precision", "amp"), True, False), (("--amp",), True, False), (("--precision", "fp32"), False, False),
    (("--memory-format", "channels_last"), False, True), (("--channels-last",), False, True), ((), False, False)])
def test_one_spelling_per_concept_with_the_older_ones_kept(command, args, amp, channels_last, monkeypatch):
    """--precision and --memory-format as run, verify and export spell them; --amp and --channels-last still work."""
    from vggbench.core.errors import ConfigError

    def seen(config):
        raise ConfigError(f"amp={config.amp} channels_last={config.channels_last}")

    monkeypatch.setattr(f"vggbench.training.{'loop.train' if command == 'train' else 'evaluation.evaluate'}", seen)
    result = CliRunner().invoke(main, [command, "vgg11", *args])
    assert result.output.strip() == f"error: amp={amp} channels_last={channels_last}"


def test_run_and_verify_take_batch_size_as_every_command_does():
    from vggbench.bench.suite import Suite

    for spelling in ("--batch-size", "--batch-sizes"):
        ctx = main.commands["run"].make_context("run", [spelling, "1,8"])
        assert Suite(batch_sizes=ctx.params["batch_sizes"]).batch_sizes == (1, 8)
        assert main.commands["verify"].make_context("verify", ["x", spelling, "2"]).params["batch_sizes"] == "2"
