"""The lean install: every optional package belongs to an extra that pyproject.toml declares, a feature whose
package is missing says which extra to install in one `error:` line (exit 2), and the main job and every
command's --help import none of them. Missing packages are simulated with sys.modules[name] = None (what
`import name` then refuses), in this process or in a child one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch
from packaging.requirements import Requirement

from tests.conftest import REPO
from vggbench.core.documents import loads_toml
from vggbench.core.errors import EXIT_USAGE, UnsupportedError
from vggbench.core.extras import EXTRAS, MissingExtra, require

OPTIONAL = sorted({*EXTRAS, "scipy"})  # scipy: `report --compare` has its own Mann-Whitney U now
TOML = loads_toml((REPO / "pyproject.toml").read_text(encoding="utf-8"), "pyproject.toml")
PYPROJECT = TOML["project"]


def _names(requirements: list[str]) -> set[str]:
    return {Requirement(r).name.lower() for r in requirements}


def _expanded(extra: str) -> set[str]:
    """The distributions an extra installs, its self-references (vggbench[a,b]) followed."""
    names = set()
    for line in PYPROJECT["optional-dependencies"][extra]:
        req = Requirement(line)
        if req.name == "vggbench":
            for inner in req.extras:
                names |= _expanded(inner)
        else:
            names.add(req.name.lower())
    return names


# --- the extras table ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("module", sorted(EXTRAS))
def test_every_optional_package_is_in_the_extra_its_message_names(module):
    dist, extra = EXTRAS[module]
    assert dist.lower() in _names(PYPROJECT["optional-dependencies"][extra])
    assert dist.lower() not in _names(PYPROJECT["dependencies"])


def test_the_default_install_is_the_main_jobs_and_the_test_extra_has_every_cpu_extra():
    default = _names(PYPROJECT["dependencies"])
    assert {"torch", "torchvision", "onnx", "onnxruntime", "click", "tabulate", "tqdm", "matplotlib",
            "safetensors"} <= default
    assert not default & {"onnxruntime-gpu", "openvino", "nncf", "scikit-learn", "scipy", "mlcommons-loadgen",
                          "pandas", "pyarrow", "ray", "optuna", "tensorrt-cu13", "polygraphy"}
    assert "torchvision>=0.29.1" in PYPROJECT["dependencies"]
    tested = _expanded("test")
    for extra in PYPROJECT["optional-dependencies"]:
        if extra not in ("gpu", "tensorrt", "test"):
            assert _expanded(extra) <= tested, extra
    assert not tested & (_expanded("gpu") | _expanded("tensorrt"))  # CUDA wheels: not on a CPU test machine
    assert {"pytest", "scipy"} <= tested


def test_py_typed_ships_with_the_package():
    assert (REPO / "vggbench" / "py.typed").is_file()
    assert "py.typed" in TOML["tool"]["setuptools"]["package-data"]["vggbench"]


# --- require ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("module", sorted(EXTRAS))
def test_a_missing_package_is_one_line_naming_its_extra(module, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)
    dist, extra = EXTRAS[module]
    with pytest.raises(MissingExtra) as caught:
        require(f"{module}.sub" if module == "sklearn" else module, "the feature")
    assert str(caught.value) == f'the feature: {dist} is not installed; pip install "vggbench[{extra}]"'
    assert caught.value.exit_code == EXIT_USAGE and caught.value.extra == extra


def test_a_package_that_is_there_but_broken_says_so_with_the_reason(tmp_path, monkeypatch):
    fake = tmp_path / "mlperf_loadgen"
    fake.mkdir()
    (fake / "__init__.py").write_text('raise ImportError("libmlperf.so: cannot open shared object file")\n')
    monkeypatch.delitem(sys.modules, "mlperf_loadgen", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtra, match=r"^LoadGen: mlcommons-loadgen is installed but cannot be imported "
                                           r"\(ImportError: libmlperf.so: cannot open shared object file\); "
                                           r'reinstall it: pip install "vggbench\[loadgen\]"$'):
        require("mlperf_loadgen", "LoadGen")


# --- the features, in this process ----------------------------------------------------------------------------

def test_without_scikit_learn_parity_checks_go_on_without_the_photos_and_say_so(monkeypatch):
    from vggbench.data.inputs import sample_photos
    from vggbench.parity.verify import verify_inputs

    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(MissingExtra, match=r'pip install "vggbench\[data\]"'):
        sample_photos(32, (0.5,) * 3, (0.25,) * 3)
    manifest = SimpleNamespace(input=SimpleNamespace(image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3),
                               weights=SimpleNamespace(meta={}))
    skipped: list[str] = []
    inputs = verify_inputs(manifest, [1, 2], photos=True, data=None, data_images=8, skipped=skipped)
    assert [label for label, _ in inputs] == ["random x1", "random x2"]
    assert skipped == ['the sample photos: scikit-learn is not installed; pip install "vggbench[data]"']


def test_without_scikit_learn_the_digits_name_the_data_extra(monkeypatch):
    from vggbench.data.datasets import load_data

    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(MissingExtra, match=r'^the digits dataset: scikit-learn is not installed; '
                                           r'pip install "vggbench\[data\]"$'):
        load_data("digits", image_size=32)


def test_without_nncf_its_quantization_names_the_openvino_extra(tmp_path, monkeypatch):
    from vggbench.exporters import quantize

    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(MissingExtra, match=r'^NNCF\'s int8 quantization: nncf is not installed; '
                                           r'pip install "vggbench\[openvino\]"$'):
        quantize._quantize_nncf(tmp_path / "model.onnx", tmp_path / "int8.onnx", torch.zeros(1, 3, 8, 8), "input")


def test_onnxruntime_without_the_cuda_provider_names_the_gpu_extra(tmp_path, monkeypatch):
    import onnxruntime

    from vggbench.backends.onnxruntime import OrtRunner

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    target = SimpleNamespace(backend="onnxruntime", device=SimpleNamespace(kind="cuda", index=0),
                             precision="fp32", memory_format="contiguous")
    with pytest.raises(UnsupportedError, match=r'has no CUDAExecutionProvider here \(available: CPUExecutionProvider\); '
                                               r'pip install "vggbench\[gpu\]" && pip install '
                                               r'--force-reinstall --no-deps onnxruntime-gpu$'):
        OrtRunner(tmp_path / "model.onnx", target)


def test_without_pandas_a_dataframe_names_the_pandas_extra(monkeypatch):
    import vggbench

    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(MissingExtra, match=r'pip install "vggbench\[pandas\]"$'):
        vggbench.results_frame(REPO / "benchmarks" / "results" / "h200-vgg16-eager-20261126.json")


# --- the command line, in a child process without the optional packages ----------------------------------------

CHILD = textwrap.dedent("""
    import json, sys
    blocked = sys.argv[1].split(",")
    sys.modules.update(dict.fromkeys(blocked))  # import refuses a name whose sys.modules entry is None
    from click.testing import CliRunner
    from vggbench.cli import main

    out = []
    for args in json.loads(sys.argv[2]):
        result = CliRunner().invoke(main, args)
        imported = sorted({m.split(".")[0] for m, v in sys.modules.items() if v is not None} & set(blocked))
        out.append({"args": args, "exit": result.exit_code, "output": result.output, "imported": imported})
    print(json.dumps(out))
""")


def _child(commands: list[list[str]], cwd) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", CHILD, ",".join(OPTIONAL), json.dumps(commands)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_help_imports_no_optional_package_and_each_feature_names_its_extra(tmp_path):
    from vggbench.cli import main

    helps = [["--help"]] + [[name, "--help"] for name in main.commands]
    tiny = ["--models", "vgg11", "--width", "0.0625", "--image-size", "32", "--batch-sizes", "1"]
    features = {
        "openvino": ["run", *tiny, "--backends", "eager,openvino", "--out", str(tmp_path / "ov")],
        "tensorrt": ["run", *tiny, "--backends", "tensorrt", "--device", "cuda", "--out", str(tmp_path / "trt")],
        "loadgen": ["loadgen", "--models", "vgg11", "--width", "0.0625", "--image-size", "32",
                    "--out", str(tmp_path / "lg")],
        "data": ["train", "vgg11", "--data", "digits", "--width", "0.0625", "--image-size", "32", "--epochs", "1",
                 "--out", str(tmp_path / "train")],
    }
    results = _child(helps + list(features.values()), tmp_path)
    for r in results[:len(helps)]:
        assert r["exit"] == 0 and r["imported"] == [], r
    for extra, r in zip(features, results[len(helps):], strict=True):
        lines = r["output"].strip().splitlines()
        assert r["exit"] == EXIT_USAGE and len(lines) == 1, r
        assert lines[0].startswith("error: ") and lines[0].endswith(f'pip install "vggbench[{extra}]"'), r
    # nothing was claimed or written for the commands that stopped
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_exit_code_and_line_of_a_real_process(tmp_path):
    code = ("import sys; sys.modules['openvino'] = None; from vggbench.cli import main; "
            "main(['run', '--backends', 'openvino', '--out', 'x'])")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == EXIT_USAGE and done.stdout == ""
    assert done.stderr == 'error: the openvino backend: openvino is not installed; pip install "vggbench[openvino]"\n'


@pytest.mark.slow
def test_the_main_job_runs_without_any_optional_package(tmp_path):
    run = ["run", "--models", "vgg11", "--width", "0.0625", "--hidden", "32", "--image-size", "32",
           "--batch-sizes", "1", "--backends", "eager,onnxruntime", "--memory-format", "contiguous",
           "--min-time", "0.02", "--warmup-time", "0", "--out", str(tmp_path / "out.json")]
    (result,) = _child([run], tmp_path)
    assert result["exit"] == 0 and result["imported"] == [], result
    data = json.loads((tmp_path / "out.json").read_text())
    assert [r["status"] for r in data["results"]] == ["ok", "ok"]


def test_an_export_that_needs_a_missing_extra_is_an_unsupported_case_not_a_failed_one(tmp_path, monkeypatch):
    from vggbench.backends import resolve_target
    from vggbench.bench import cache as cache_module
    from vggbench.bench.prepare import classify
    from vggbench.zoo.weights import load_model

    def export(*args, **kwargs):  # what int8's calibration on the digits raises without the [data] extra
        require("sklearn.datasets", "the digits dataset")

    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setattr(cache_module, "export", export)
    loaded = load_model("vgg11", weights="random", width=0.0625, hidden=32, head="compact", num_classes=10)
    cache = cache_module.ExportCache(tmp_path, loaded, 32)
    with pytest.raises(MissingExtra) as caught:
        cache.folder(resolve_target("onnxruntime", "cpu", "fp32"))
    assert classify(caught.value, building=True) == (
        "unsupported", 'the digits dataset: scikit-learn is not installed; pip install "vggbench[data]"')
