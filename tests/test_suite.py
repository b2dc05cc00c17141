"""Suites: bundled and project TOML files, validation with one-line errors, overrides, expansion."""

from __future__ import annotations

import pytest

from vggbench.backends import OrtSettings
from vggbench.backends.compile import CompileSettings
from vggbench.bench.suite import Suite, available_suites, load_suite, parse_suite, resolve_suite
from vggbench.core.errors import ConfigError, UnknownModelError, UnsupportedError, VggbenchError


def test_bundled_default_suites_load_from_the_package(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./benchmarks here: the package alone must do
    assert {"cpu", "cuda"} <= set(available_suites())
    cpu = load_suite("cpu")
    assert cpu.name == "cpu" and cpu.device == "cpu" and cpu.models == ("vgg16",) and cpu.image_size == 224
    # eager in both layouts, onnxruntime only where it can run: no unsupported rows by default
    assert [g[:5] for g in cpu.groups()] == [("vgg16", "eager", "fp32", "contiguous", (1, 8)),
                            ("vgg16", "eager", "fp32", "channels_last", (1, 8)),
                            ("vgg16", "onnxruntime", "fp32", "contiguous", (1, 8))]
    assert cpu.case_count() == 6 and cpu.min_iters >= 5
    cuda = load_suite("cuda")
    assert cuda.device == "cuda" and ("vgg16", "compile", "amp", "channels_last", (1, 8, 32, 128, 256)) in \
        [g[:5] for g in cuda.groups()]


def test_project_suites_are_found_relative_to_the_working_directory(tmp_path, monkeypatch):
    folder = tmp_path / "benchmarks" / "suites"
    folder.mkdir(parents=True)
    (folder / "mine.toml").write_text('models = ["E"]\nbatch_sizes = [2]\n')
    monkeypatch.chdir(tmp_path)
    assert load_suite("mine").models == ("vgg19",)  # the paper's letter, made canonical
    assert available_suites()["mine"].endswith("mine.toml")


def test_repository_suites_are_valid():
    from pathlib import Path

    for path in sorted((Path(__file__).parent.parent / "benchmarks" / "suites").glob("*.toml")):
        suite = load_suite(path)
        assert suite.case_count() > 0 and suite.description, path


def test_a_suite_file_by_path_and_matrix_union(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('''
models = ["vgg11", "vgg13"]
batch_sizes = [1, 4]
[[matrix]]
backends = ["eager"]
memory_formats = ["contiguous", "channels_last"]
[[matrix]]
backends = ["ort", "eager"]
batch_sizes = [4, 16]
''')
    suite = load_suite(path)
    assert suite.name == "s"
    assert [g[:5] for g in suite.groups()[:3]] == [
        ("vgg11", "eager", "fp32", "contiguous", (1, 4, 16)),
        ("vgg11", "eager", "fp32", "channels_last", (1, 4)),
        ("vgg11", "onnxruntime", "fp32", "contiguous", (4, 16))]
    assert suite.case_count() == 2 * (3 + 2 + 2)


def test_overrides_replace_a_key_everywhere_including_matrices():
    suite = load_suite("cpu").override(memory_formats=["channels_last"], batch_sizes="2", min_time_s=0.5,
                                       threads=None)
    # asked for explicitly: onnxruntime channels_last is now a case (it will be an 'unsupported' row)
    assert [g[1:4] for g in suite.groups()] == [("eager", "fp32", "channels_last"),
                                                ("onnxruntime", "fp32", "channels_last")]
    assert {g[4] for g in suite.groups()} == {(2,)} and suite.min_time_s == 0.5 and suite.threads is None
    assert resolve_suite(None, device="cuda", models=["vgg11"]).name == "cuda"
    assert resolve_suite(Suite(), models="A,B").models == ("vgg11", "vgg13")


@pytest.mark.parametrize("text,error,match", [
    ('bach_sizes = [1]', ConfigError, "unknown key 'bach_sizes' in suite; did you mean batch_sizes?"),
    ('models = ["vgg17"]', UnknownModelError, "unknown model 'vgg17'; did you mean"),
    ('backends = ["tflite"]', UnsupportedError, "unknown backend 'tflite'"),
    ('precisions = ["fp4"]', ConfigError, "unknown precision 'fp4'"),
    ('memory_formats = ["nhwc"]', ConfigError, "unknown memory format 'nhwc'"),
    ('batch_sizes = [0, 1]', ConfigError, "batch sizes must be at least 1"),
    ('batch_sizes = ["8"]', ConfigError, "batch_sizes must be a list of ints"),
    ('image_size = 16', ConfigError, "image size 16 is too small for vgg16"),
    ('min_iters = 10\nmax_iters = 5', ConfigError, "min_iters <= max_iters"),
    ('min_time_s = "long"', ConfigError, "min_time_s must be a number"),
    ('device = "tpu"', ConfigError, "unknown device 'tpu'"),
    ('threads = 0', ConfigError, "threads must be in \\[1, 1024\\]"),
    ('width = 0', ConfigError, "width must be in \\(0, 4\\], got 0"),
    ('compile_mode = "fast"', ConfigError, "compile: unknown mode 'fast'"),
    ('[backend.compile]\nmode = "fast"', ConfigError, "compile: unknown mode 'fast'"),
    ('[backend.onnxruntime]\nthreads = 2', ConfigError, "unknown key 'threads' in backend.onnxruntime"),
    ('[backend.onnx]\nspeed = 2', ConfigError, "unknown key 'speed' in backend.onnx"),
    ('[backend.eager]\nmode = "x"', ConfigError, "backend eager has no settings"),
    ('[backend.nosuch]\nmode = "x"', ConfigError, "unknown backend 'nosuch'"),
    ('[[matrix]]\nmodels = ["vgg11"]', ConfigError, "unknown key 'models' in a \\[\\[matrix\\]\\] table"),
    ('models = [', ConfigError, "suite is not valid TOML"),
])
def test_invalid_suites_say_what_is_wrong_in_one_line(text, error, match):
    with pytest.raises(error, match=match) as info:
        parse_suite(text)
    assert isinstance(info.value, VggbenchError) and "\n" not in str(info.value).strip()


def test_unknown_suite_names_list_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown suite 'cpuu'; did you mean cpu.*suites: .*cpu.*cuda"):
        load_suite("cpuu")
    with pytest.raises(ConfigError, match="suite file .*missing.toml does not exist"):
        load_suite(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        Suite().override(colour="red")


def test_matrix_tables_give_backends_their_own_settings(tmp_path):
    """torch.compile in two modes and onnxruntime with and without CUDA graphs: separate groups, and a setting
    that concerns another backend does not split eager's."""
    path = tmp_path / "modes.toml"
    path.write_text('''
device = "cuda"
batch_sizes = [1, 8]
[[matrix]]
backends = ["eager", "compile"]
[[matrix]]
backends = ["compile", "eager"]
compile_mode = "max-autotune"
batch_sizes = [8]
[[matrix]]
backends = ["onnxruntime"]
ort_cuda_graph = true
''')
    suite = load_suite(path)
    assert [(g.backend, g.batch_sizes, g.settings) for g in suite.groups()] == [
        ("eager", (1, 8), None),
        ("compile", (1, 8), CompileSettings()),
        ("compile", (8,), CompileSettings(mode="max-autotune")),
        ("onnxruntime", (1, 8), OrtSettings(cuda_graph=True))]
    assert suite.case_count() == 7
    with pytest.raises(ConfigError, match="compile: unknown mode 'fastest'"):
        parse_suite('[[matrix]]\nbackends = ["compile"]\ncompile_mode = "fastest"\n')
    # the command line replaces a matrix's setting too
    assert {g.settings for g in suite.override(compile_mode="reduce-overhead").groups() if g.backend == "compile"} \
        == {CompileSettings(mode="reduce-overhead")}
    # a [backend.<name>] table (or a matrix's backend table) says the same as the flat keys
    tables = parse_suite('[backend.compile]\nmode = "max-autotune"\n[[matrix]]\nbackends = ["onnxruntime"]\n'
                         '[[matrix]]\nbackends = ["onnxruntime"]\nbackend.ort.cuda_graph = true\n')
    assert tables.backend["compile"] == CompileSettings(mode="max-autotune")
    assert [g.settings for g in tables.groups()] == [OrtSettings(), OrtSettings(cuda_graph=True)]
    assert tables.to_dict()["backend"] == {"compile": {"mode": "max-autotune", "freezing": False}}


def test_best_cuda_plans_every_fast_gpu_path():
    groups = load_suite("best-cuda").groups()
    compile_modes = {g.settings.mode for g in groups if g.backend == "compile"}
    assert compile_modes == {None, "reduce-overhead", "max-autotune"}
    assert {g.settings.cuda_graph for g in groups if g.backend == "onnxruntime"} == {False, True}
    assert {g.precision for g in groups if g.backend == "tensorrt"} == {"fp16", "int8", "fp8"}
    from vggbench.backends import resolve_target

    for g in groups:  # every combination is one the backends accept (planned as on a GPU machine)
        resolve_target(g.backend, "cuda", g.precision, g.memory_format, available=False)


def test_native_only_skips_emulated_bf16_with_a_reason(monkeypatch):
    from vggbench.bench import sweep
    from vggbench.bench.suite import Suite
    from vggbench.core.device import parse_device

    suite = Suite(models=("vgg11",), backends=("eager",), precisions=("fp32", "bf16"), native_only=True)
    monkeypatch.setattr(sweep, "cpu_bf16_instructions", lambda: False)
    plan = sweep._plan(suite, parse_device("cpu"))
    assert "no bf16 instructions" in str(plan["vgg11", "eager", "bf16", "contiguous"])
    assert plan["vgg11", "eager", "fp32", "contiguous"].precision == "fp32"
    monkeypatch.setattr(sweep, "cpu_bf16_instructions", lambda: True)
    assert sweep._plan(suite, parse_device("cpu"))["vgg11", "eager", "bf16", "contiguous"].precision == "bf16"
    plain = Suite(models=("vgg11",), backends=("eager",), precisions=("bf16",))
    monkeypatch.setattr(sweep, "cpu_bf16_instructions", lambda: False)
    assert sweep._plan(plain, parse_device("cpu"))["vgg11", "eager", "bf16", "contiguous"].precision == "bf16"
