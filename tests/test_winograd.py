from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from tests.conftest import TINY, TINY_IMAGE
from tests.test_native import kernels_in_a_temp_cache
from vggbench.backends import make_runner
from vggbench.backends.runner import RunnerOptions
from vggbench.backends.winograd import native, onednn
from vggbench.backends.winograd.model import WinogradConv2d, _fastest, variants, winograd_model
from vggbench.backends.winograd.runner import WinogradRunner, WinogradSettings
from vggbench.core.device import CPU
from vggbench.core.errors import UnsupportedError
from vggbench.core.timing import make_timer, sample
from vggbench.parity.checked import export
from vggbench.parity.verify import verify
from vggbench.zoo.weights import load_model

# one worker builds the C++ kernels (about 11 s of compiler), the other runs other tests meanwhile
pytestmark = pytest.mark.xdist_group("native_kernels")

# both implementations: transforms in torch ops, and in C++ (naming them builds nothing)
ALL_VARIANTS = {**variants(native=False), **variants(native=True)}


@pytest.fixture(scope="session", autouse=True)
def kernels(tmp_path_factory):
    with kernels_in_a_temp_cache(tmp_path_factory) as lib:
        yield lib


def needs_kernels(cpp: bool, kernels) -> None:
    if cpp and kernels is None:
        pytest.skip(f"no C++ kernels: {native.unavailable_reason()}")


@pytest.mark.parametrize("variant", list(ALL_VARIANTS))
@pytest.mark.parametrize("size", [1, 5, 12, 13, 28])
def test_winograd_conv_equals_direct_conv_with_relu(variant, size, kernels):
    needs_kernels(ALL_VARIANTS[variant].get("native", False), kernels)
    torch.manual_seed(size)
    conv = nn.Conv2d(12, 20, 3, padding=1)  # channel counts that are not multiples of the kernels' 16
    x = torch.randn(3, 12, size, size)
    layer = WinogradConv2d(conv, **ALL_VARIANTS[variant])
    with torch.inference_mode():
        expected = torch.relu(conv(x))
        for _ in range(2):  # the second call reuses the first call's tensors
            got = layer(x.contiguous(memory_format=torch.channels_last))
            assert got.shape == expected.shape
            # F(4x4)'s and F(6x6)'s larger transform constants cost a little more rounding than F(2x2)
            assert (got - expected).abs().max() <= (2e-6 if layer.m == 2 else 1e-5) * expected.abs().max()
    # NHWC memory; in torch ops a crop of the tiled output where m does not divide the size
    assert got.permute(0, 2, 3, 1).is_contiguous() == (size % layer.m == 0 or layer.native)


def test_kept_padding_stays_zero_when_the_image_size_changes():
    conv = nn.Conv2d(4, 4, 3, padding=1)
    layer = WinogradConv2d(conv, 4)
    with torch.inference_mode():
        for size in (16, 13, 16):  # 13 and 16 round up to the same 4 x 4 tiles
            x = torch.randn(2, 4, size, size) + 5  # large values: stale pixels in the padding would show
            assert (layer(x) - torch.relu(conv(x))).abs().max() <= 1e-5 * conv(x).abs().max()


@pytest.mark.parametrize("cpp", [False, True])
def test_winograd_bands_cover_several_images_and_partial_bands(cpp, kernels):
    needs_kernels(cpp, kernels)
    conv = nn.Conv2d(8, 8, 3, padding=1)
    x = torch.randn(5, 8, 20, 20).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = torch.relu(conv(x))
        # torch ops: 1 row, 2 rows, 2 images; C++: bands of 1, 10 (rows that end mid-image), 50 (2 images) tiles
        for chunk_bytes in (1, 6 * 6 * 5 * 8 * 4 * 2, 6 * 6 * 5 * 8 * 4 * 5 * 2):
            got = WinogradConv2d(conv, 4, chunk_bytes=chunk_bytes, native=cpp)(x)
            assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_rectangular_inputs_and_no_relu():
    conv = nn.Conv2d(4, 6, 3, padding=1)
    x = torch.randn(2, 4, 9, 17)
    with torch.inference_mode():
        got = WinogradConv2d(conv, 4, relu=False)(x)
        assert (got - conv(x)).abs().max() <= 1e-5 * conv(x).abs().max()


@pytest.mark.parametrize("conv", [nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 3, stride=2, padding=1),
                                  nn.Conv2d(3, 4, 3, padding=0)])
def test_only_3x3_stride_1_pad_1(conv):
    with pytest.raises(ValueError, match="3x3 convs with stride 1, padding 1"):
        WinogradConv2d(conv)


@pytest.mark.parametrize("choose", ["direct", "F2", "F4", "F6-sep-whole", None])
def test_winograd_vgg_matches_eager(choose):
    model = load_model("vgg16c_bn", seed=2, **TINY).module  # BN, and 1x1 convs that must stay direct
    x = torch.randn(2, 3, TINY_IMAGE, TINY_IMAGE)
    fast, rows = winograd_model(model, x, choose=choose)
    # the 3x3 convs (BN sits between conv and ReLU in _bn models), then the classifier's Linears
    assert [r["layer"] for r in rows] == [f"conv{i}" for i in range(1, 11)] + ["fc1", "fc2", "fc3"]
    with torch.inference_mode():
        expected, got = model(x), fast(x.contiguous(memory_format=torch.channels_last))
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_plain_vgg_layers_are_replaced():
    model = load_model("vgg11", seed=2, **TINY).module
    fast, rows = winograd_model(model, torch.randn(1, 3, TINY_IMAGE, TINY_IMAGE), choose="F4")
    assert [r["choice"] for r in rows] == ["F4"] * 8 + ["onednn"] * 3
    assert [type(m).__name__ for m in fast.classifier] == ["LinearReLU", "Identity", "Dropout"] * 2 + ["LinearReLU"]
    assert sum(isinstance(m, WinogradConv2d) for m in fast.modules()) == 8
    assert model.features[0].__class__ is nn.Conv2d  # the original is untouched
    timed, rows = winograd_model(model, torch.randn(1, 3, TINY_IMAGE, TINY_IMAGE))
    convs, linears = rows[:8], rows[8:]
    assert all(r["choice"] in ("direct", *variants()) and r["direct_ms"] > 0 for r in convs)
    assert [r["layer"] for r in linears] == ["fc1", "fc2", "fc3"]
    assert all(r["choice"] in ("torch", "onednn") and r["torch_ms"] > 0 and r["onednn_ms"] > 0 for r in linears)
    with pytest.raises(ValueError, match="unknown Winograd variant 'F5'"):
        winograd_model(model, torch.randn(1, 3, TINY_IMAGE, TINY_IMAGE), choose="F5")


def test_tuned_model_output_is_fresh_and_grad_free():
    model = load_model("vgg11", seed=3, **TINY).module
    x = torch.randn(2, 3, TINY_IMAGE, TINY_IMAGE)
    fast, _ = winograd_model(model, x, choose="F4-whole")
    xc = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():  # outside inference mode too
        first = fast(xc)
        kept = first.clone()
        second = fast(xc * 2)
    assert first.data_ptr() != second.data_ptr() and torch.equal(first, kept)  # not overwritten
    assert not any(p.requires_grad for p in fast.parameters())


def test_winograd_backend_passes_verify(tmp_path):
    model = load_model("vgg13", seed=1, **TINY)
    export(model, tmp_path / "w", image_size=TINY_IMAGE, formats=["onnx"], verify=False)
    report = verify(tmp_path / "w", backends=["winograd"], memory_formats=["channels_last"])
    assert report.passed and len(report.results) == 3
    runner = make_runner("winograd", model, memory_format="channels_last")
    runner(torch.randn(2, 3, TINY_IMAGE, TINY_IMAGE))
    runner(torch.randn(5, 3, TINY_IMAGE, TINY_IMAGE))
    assert set(runner.choices) == {(2, 3, 32, 32), (5, 3, 32, 32)}  # tuned once per input shape
    with pytest.raises(UnsupportedError, match="winograd does not support bf16"):
        make_runner("winograd", model, precision="bf16", memory_format="channels_last")


def test_a_plan_names_each_conv():
    model = load_model("vgg11", seed=2, **TINY).module
    x = torch.randn(1, 3, TINY_IMAGE, TINY_IMAGE)
    plan = ["direct", "F2", "F4", "F6", "F4-sep", "F6-sep-whole", "direct", None]  # None: timed
    fast, rows = winograd_model(model, x, choose=plan)
    assert [r["choice"] for r in rows[:7]] == plan[:7] and "direct_ms" in rows[7]
    with torch.inference_mode():
        expected, got = model(x), fast(x.contiguous(memory_format=torch.channels_last))
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()
    with pytest.raises(ValueError, match="the plan names 7 convs; this model has more"):
        winograd_model(model, x, choose=plan[:7])
    with pytest.raises(ValueError, match="the plan names 9 convs; this model has 8"):
        winograd_model(model, x, choose=plan + ["F4"])


# --- the tuner's timing ---------------------------------------------------------------------------------

class Sleeper(nn.Module):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds, self.calls = seconds, 0

    def forward(self, x):
        self.calls += 1
        time.sleep(self.seconds)
        return x


def test_the_tuner_times_finalists_more_within_a_budget():
    candidates = {"a": Sleeper(0), "b": Sleeper(0), "c": Sleeper(0.05), "d": Sleeper(0.2), "e": Sleeper(0.2)}
    stats = _fastest(candidates, torch.zeros(1), repeats=3)
    # every one: a warm-up call and a timed one; the 3 fastest then 3 more, or up to 12 within 0.1 s
    assert {k: c.calls for k, c in candidates.items()} == {"a": 14, "b": 14, "c": 5, "d": 2, "e": 2}
    assert [len(stats[k].samples_ms) for k in "abcde"] == [13, 13, 4, 1, 1]
    assert stats["c"].median_ms >= 50 and stats["d"].median_ms >= 200


def test_sample_calls_until_the_budget_and_the_minimum_are_met():
    now = [0.0]

    def clock():
        return now[0]

    def call():
        now[0] += 0.25

    timer = make_timer(CPU, lambda: None, clock=clock)
    assert sample(call, timer, min_calls=2, clock=clock).samples_ms == (250.0, 250.0)
    assert len(sample(call, timer, 2, min_time_s=1.0, clock=clock).samples_ms) == 4
    assert len(sample(call, timer, 2, min_time_s=10.0, max_calls=6, clock=clock).samples_ms) == 6
    with pytest.raises(ValueError, match="min_calls <= max_calls"):
        sample(call, timer, 3, max_calls=2)


# --- the runner's cache of tuned models -----------------------------------------------------------------

def _batch(n: int) -> torch.Tensor:
    return torch.randn(n, 3, TINY_IMAGE, TINY_IMAGE, generator=torch.Generator().manual_seed(n))


def test_the_runner_keeps_the_recently_used_shapes_within_its_bound():
    runner = WinogradRunner(load_model("vgg11", seed=4, **TINY).module, max_cache_bytes=2**40)
    first = {n: runner(_batch(n)) for n in (1, 2, 3)}
    size = {shape[0]: held for shape, held in runner.cached.items()}  # each shape's plan has its own weights
    runner.max_cache_bytes = size[2] + max(size[1], size[3])
    assert list(runner.cached) == [(n, 3, TINY_IMAGE, TINY_IMAGE) for n in (2, 3)]  # 1, the least recent, went
    runner(_batch(2))  # now 3 is the least recently used
    again = runner(_batch(1))  # rebuilt from its plan: 3 goes
    assert runner.cached == {(n, 3, TINY_IMAGE, TINY_IMAGE): size[n] for n in (2, 1)}
    assert runner.cache_bytes == size[1] + size[2] <= runner.max_cache_bytes
    assert torch.equal(again, first[1])  # the same layers as before eviction, so the same numbers
    assert set(runner.choices) == {(n, 3, TINY_IMAGE, TINY_IMAGE) for n in (1, 2, 3)}


def test_a_shape_runs_its_plan_built_afresh_not_the_model_its_tuning_built(monkeypatch):
    from vggbench.backends.winograd import runner as runner_module

    built = []
    original = runner_module.winograd_model

    def recording(*args, **kwargs):
        model, rows = original(*args, **kwargs)
        built.append((model, kwargs.get("choose")))
        return model, rows

    monkeypatch.setattr(runner_module, "winograd_model", recording)
    runner = WinogradRunner(load_model("vgg11", seed=4, **TINY).module)
    out = runner(_batch(2))
    (tuned, tuned_choice), (kept, plan) = built  # tuned (every layer timed), then built from the plan, untimed
    convs = [row["choice"] for row in runner.choices[(2, 3, TINY_IMAGE, TINY_IMAGE)] if row["layer"].startswith("conv")]
    assert tuned_choice is None and plan == convs
    assert runner._tuned[(2, 3, TINY_IMAGE, TINY_IMAGE)][0] is kept and kept is not tuned
    assert torch.equal(runner(_batch(2)), out) and len(built) == 2  # and kept: no third build


def test_a_bound_of_zero_keeps_only_the_model_in_use():
    model = load_model("vgg11", seed=4, **TINY).module
    runner = WinogradRunner(model, max_cache_bytes=0)
    for n in (2, 1, 2):
        runner(_batch(n))
        assert list(runner.cached) == [(n, 3, TINY_IMAGE, TINY_IMAGE)] and runner.cache_bytes > 0
    with pytest.raises(ValueError, match="must not be negative"):
        WinogradRunner(model, max_cache_bytes=-1)


def test_the_runner_notes_a_private_op_that_failed_its_probe(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("unexpected keyword")

    onednn.problem.cache_clear()
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", broken)
    try:
        runner = WinogradRunner(load_model("vgg11", seed=4, **TINY).module)
        batch = _batch(2)
        runner(batch)
        plan, fallback = runner.notes(batch).split("; ")
        assert plan.endswith("fc1 torch, fc2 torch, fc3 torch")  # oneDNN's Linear is not offered
        assert fallback == ("torch fallback: mkldnn._linear_pointwise failed on a probe call "
                            "(RuntimeError: unexpected keyword)")
    finally:
        monkeypatch.undo()
        onednn.problem.cache_clear()


def test_a_plan_names_each_linear():
    model = load_model("vgg11", seed=2, **TINY).module
    x = torch.randn(2, 3, TINY_IMAGE, TINY_IMAGE)
    fast, rows = winograd_model(model, x, choose="F2", linears=["torch", "onednn", None])  # None: timed
    assert [r["choice"] for r in rows[8:10]] == ["torch", "onednn"] and "torch_ms" in rows[10]
    assert [type(m).__name__ for m in fast.classifier[:4]] == ["Linear", "ReLU", "Dropout", "LinearReLU"]
    with torch.inference_mode():
        expected, got = model(x), fast(x.contiguous(memory_format=torch.channels_last))
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()
    with pytest.raises(ValueError, match="must name torch, onednn or None for each of 3 Linears"):
        winograd_model(model, x, choose="F2", linears=["torch", "mkl", "torch"])
    with pytest.raises(ValueError, match="for each of 3 Linears"):
        winograd_model(model, x, choose="F2", linears=["torch"])


# --- a plan given (--winograd-plan): every shape follows it, none is tuned ----------------------------------------

PLAN = ("conv1 direct, conv2 F4, conv3 F2-whole, conv4 direct, conv5 F4-sep, conv6 direct, conv7 direct, conv8 F2, "
        "fc1 onednn, fc2 torch, fc3 onednn")


def test_a_given_plan_is_followed_for_every_shape_without_timing(monkeypatch):
    from vggbench.backends.winograd import runner as runner_module

    original, chosen = runner_module.winograd_model, []

    def untimed(*args, choose=None, linears=None, **kwargs):
        assert choose is not None and None not in choose and None not in linears, "a given plan times nothing"
        chosen.append((list(choose), list(linears)))
        return original(*args, choose=choose, linears=linears, **kwargs)

    monkeypatch.setattr(runner_module, "winograd_model", untimed)
    model = load_model("vgg11", seed=4, **TINY).module
    settings = WinogradSettings(plan=f"a model note; {PLAN}")
    runner = make_runner("winograd", model, memory_format="channels_last", options=RunnerOptions.of(settings))
    for n in (1, 2):
        out = runner(_batch(n))
        with torch.inference_mode():
            expected = model(_batch(n))
        assert (out - expected).abs().max() <= 1e-4 * expected.abs().max()
        assert runner.notes(_batch(n)) == PLAN
    assert chosen == [(["direct", "F4", "F2-whole", "direct", "F4-sep", "direct", "direct", "F2"],
                       ["onednn", "torch", "onednn"])] * 2


@pytest.mark.parametrize(("plan", "message"), [
    ("weights: random", "no winograd plan in"),
    ("conv1 direct, conv2", "not a winograd plan entry: 'conv2'"),
    ("conv1 F9, fc1 torch", "the plan's conv1 'F9' is none of"),
    ("conv1 direct, fc1 F4", "the plan's fc1 'F4' is none of onednn, torch"),
])
def test_a_bad_plan_is_refused_when_the_settings_are_read(plan, message):
    from vggbench.core.errors import ConfigError
    from vggbench.core.settings import from_mapping

    with pytest.raises(ConfigError, match=message):
        from_mapping(WinogradSettings, {"plan": plan}, "winograd")
    with pytest.raises(ConfigError, match=r"conv2 F6-cpp uses F\(6x6\), which the tiles setting leaves out \(2, 4\)"):
        WinogradSettings(tiles=(2, 4), plan="conv1 F4, conv2 F6-cpp, fc1 torch")
    assert WinogradSettings(tiles=(4,), plan="conv1 F4-sep-whole, conv2 direct, fc1 torch").plan


def test_run_follows_the_plan_given_and_refuses_a_bad_one_in_one_line(tmp_path):
    from click.testing import CliRunner

    from vggbench.bench.results import read_run
    from vggbench.cli import main

    common = ["run", "--models", "vgg11", "--width", str(TINY["width"]), "--hidden", str(TINY["hidden"]),
              "--image-size", str(TINY_IMAGE), "--batch-sizes", "2", "--backends", "winograd",
              "--memory-format", "channels_last", "--threads", "1", "--warmup-time", "0", "--min-time", "0.05",
              "--rounds", "1"]
    result = CliRunner().invoke(main, [*common, "--winograd-plan", PLAN, "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    (row,) = read_run(next((tmp_path / "a").glob("run-*.json")))["results"]
    assert row["status"] == "ok" and row["notes"] == PLAN and row["backend_settings"]["plan"] == PLAN
    bad = CliRunner().invoke(main, [*common, "--winograd-plan", "conv1 F9", "--out", str(tmp_path / "b")])
    assert bad.exit_code == 2 and bad.output.startswith("error: ") and len(bad.output.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()
    # a plan for another model is the case's error, named
    wrong = CliRunner().invoke(main, [*common, "--winograd-plan", "conv1 direct, fc1 torch", "--out", str(tmp_path / "c")])
    (row,) = read_run(next((tmp_path / "c").glob("run-*.json")))["results"]
    assert wrong.exit_code == 1 and row["status"] == "error" and "the plan names 1 convs" in row["reason"]
