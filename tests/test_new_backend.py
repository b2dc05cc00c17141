"""Issue 26's measure of "a backend is one module": a new backend with one setting is one module in
vggbench/backends/ plus one line in registry.BUILTIN, and with nothing else touched it is in `run --help`, a suite
TOML, `run`, `loadgen` and `verify`, its setting reaching its runner. The module is written to a temp folder that
the test adds to the package's path, as if it were a file of the package."""

from __future__ import annotations

import json
import sys

import pytest
from click.testing import CliRunner

import vggbench
import vggbench.backends
import vggbench.backends.registry as registry
from tests.conftest import TINY_IMAGE
from vggbench.cli import main

TOY = '''
"""toy: the eager model with its logits multiplied by a setting (a scale other than 1 breaks parity)."""

from dataclasses import dataclass

from ..core.settings import setting
from .registry import Backend, register
from .runner import RunnerOptions, TorchRunner, place
from .settings import BackendSettings


@dataclass(frozen=True, kw_only=True)
class ToySettings(BackendSettings):
    scale: float = setting(1.0, "toy: multiply the logits by this.", above=0)


class ToyRunner(TorchRunner):
    def __init__(self, module, target, settings):
        super().__init__(place(module, target), target)
        self.scale = settings.scale

    def run(self, prepared):
        return super().run(prepared) * self.scale


def toy_factory(module, target, options=None):
    return ToyRunner(module, target, (options or RunnerOptions()).settings_for(target))


BACKEND = register(Backend("toy", None, ("cpu",), ("fp32",), ("contiguous",), toy_factory, settings=ToySettings))
'''

TINY_OPTIONS = ["--models", "vgg11", "--width", "0.0625", "--hidden", "32", "--image-size", str(TINY_IMAGE)]
FAST = ["--batch-sizes", "1", "--min-time", "0", "--min-iters", "1", "--warmup", "0", "--warmup-time", "0"]


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy module in the package's path and its one line in BUILTIN; the registry as it was afterwards."""
    registry._load()  # the built-in backends first, as they are, and the registry kept as it was without toy
    backends, aliases = dict(registry._BACKENDS), dict(registry._ALIASES)
    folder = tmp_path / "package"
    folder.mkdir()
    (folder / "toy.py").write_text(TOY)
    monkeypatch.setattr(vggbench.backends, "__path__", [*vggbench.backends.__path__, str(folder)])
    monkeypatch.setattr(registry, "BUILTIN", (*registry.BUILTIN, "toy"))
    monkeypatch.setattr(registry, "_loaded", False)
    yield
    registry._BACKENDS.clear()
    registry._BACKENDS.update(backends)
    registry._ALIASES.clear()
    registry._ALIASES.update(aliases)
    sys.modules.pop("vggbench.backends.toy", None)  # the next test imports (and registers) it afresh
    vars(vggbench.backends).pop("toy", None)


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_its_setting_is_an_option_of_run_loadgen_and_verify(toy):
    for command in ("run", "loadgen", "verify"):
        text = cli(command, "--help").output
        assert "--toy-scale FLOAT" in text and "multiply the logits" in text, command
    assert "toy" in cli("run", "--help").output.split("--backends TEXT", 1)[1].split("--", 1)[0]


def test_a_run_and_a_suite_reach_its_runner(toy, tmp_path):
    suite = tmp_path / "toy.toml"
    suite.write_text('backends = ["toy"]\n[backend.toy]\nscale = 1.0\n')
    result = cli("run", "--suite", suite, *TINY_OPTIONS, *FAST, "--out", tmp_path / "ok.json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads((tmp_path / "ok.json").read_text())["results"]
    assert row["status"] == "ok" and row["backend_settings"] == {"scale": 1.0}
    # the option overrides the suite's table; doubled logits are a parity failure (exit 1, rows written)
    result = cli("run", "--suite", suite, *TINY_OPTIONS, *FAST, "--toy-scale", "2", "--out", tmp_path / "x2.json")
    assert result.exit_code == 1, result.output
    (row,) = json.loads((tmp_path / "x2.json").read_text())["results"]
    assert row["status"] == "parity_failed" and row["backend_settings"] == {"scale": 2.0}
    bad = cli("run", "--suite", suite, *TINY_OPTIONS, *FAST, "--toy-scale", "-1")
    assert bad.exit_code == 2 and "toy: scale must be positive" in bad.output


def test_loadgen_reaches_its_runner(toy, tmp_path):
    pytest.importorskip("mlperf_loadgen")
    result = cli("loadgen", *TINY_OPTIONS, "--backends", "toy", "--toy-scale", "2", "--scenario", "singlestream",
                 "--short", "--images", "digits", "--count", "8", "--out", tmp_path / "lg.json")
    (row,) = json.loads((tmp_path / "lg.json").read_text())["results"]
    assert row["status"] == "parity_failed" and row["backend_settings"] == {"scale": 2.0}, result.output


def test_verify_reaches_its_runner(toy, tmp_path):
    out = tmp_path / "exp"
    vggbench.export(vggbench.load_model("vgg11", width=1 / 16, hidden=32), out, formats=["onnx"],
                    image_size=TINY_IMAGE, verify=False)
    same = cli("verify", out, "--backends", "toy", "--no-photos", "--data", "none")
    assert same.exit_code == 0, same.output
    doubled = cli("verify", out, "--backends", "toy", "--toy-scale", "2", "--no-photos", "--data", "none")
    assert doubled.exit_code == 1 and "toy" in doubled.output
