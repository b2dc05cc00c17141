from __future__ import annotations

import inspect

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tests.conftest import TINY, TINY_IMAGE, slow_except
from vggbench.core.errors import ConfigError, UnknownModelError
from vggbench.zoo.models import CONFIGS, ModelOptions, build, get_spec, list_models
from vggbench.zoo.profiling import profile

# ../shared/FACTS.md: exact parameter counts for 1000 classes.
PARAMS = {
    "vgg11": 132_863_336, "vgg11_bn": 132_868_840, "vgg11_lrn": 132_863_336, "vgg16c": 133_638_952,
    "vgg13": 133_047_848, "vgg13_bn": 133_053_736, "vgg16": 138_357_544, "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240, "vgg19_bn": 143_678_248,
}
GMACS = {"vgg11": 7.61, "vgg13": 11.31, "vgg16": 15.47, "vgg19": 19.63}
# (config, depth, 3x3 convs, 1x1 convs)
STRUCTURE = {"A": (11, 8, 0), "A-LRN": (11, 8, 0), "B": (13, 10, 0), "C": (16, 10, 3), "D": (16, 13, 0),
             "E": (19, 16, 0)}


def test_zoo_has_every_config_with_and_without_bn():
    assert list_models() == ["vgg11", "vgg11_bn", "vgg11_lrn", "vgg13", "vgg13_bn", "vgg16c", "vgg16c_bn",
                             "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"]
    assert {get_spec(n).config for n in list_models()} == set(CONFIGS)
    assert list_models(include="vgg16*", exclude="*_bn") == ["vgg16c", "vgg16"]


@pytest.mark.parametrize("name", list(PARAMS))
def test_parameter_counts_match_the_paper_models(name):
    assert profile(name).params == PARAMS[name]


def test_vgg16c_bn_adds_batch_norm_parameters_only():
    # two parameters (gamma, beta) per conv channel: 13 convs with 64..512 channels
    convs = [c if isinstance(c, int) else c[0] for c in CONFIGS["C"] if c not in ("M", "LRN")]
    assert profile("vgg16c_bn").params == PARAMS["vgg16c"] + 2 * sum(convs)


@pytest.mark.parametrize("name", list(GMACS))
def test_gmacs_at_224_are_computed_and_match_published_figures(name):
    assert round(profile(name).gmacs, 2) == GMACS[name]
    assert round(profile(f"{name}_bn").gmacs, 2) == GMACS[name]


@pytest.mark.parametrize("name", list_models())
def test_structure_of_every_config(name):
    spec = get_spec(name)
    depth, n3, n1 = STRUCTURE[spec.config]
    model = build(spec, ModelOptions(**TINY))
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert spec.depth == depth == len(convs) + 3
    assert sum(c.kernel_size == (3, 3) for c in convs) == n3
    assert sum(c.kernel_size == (1, 1) for c in convs) == n1
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == 5
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.features) == (len(convs) if spec.batch_norm else 0)
    lrn = [m for m in model.features if isinstance(m, nn.LocalResponseNorm)]
    assert len(lrn) == (1 if spec.config == "A-LRN" else 0)
    if lrn:  # right after the first conv's ReLU, with Krizhevsky's constants
        assert isinstance(model.features[1], nn.ReLU) and model.features[2] is lrn[0]
        # torch's LocalResponseNorm divides alpha by size: Krizhevsky's 1e-4 is given as 5e-4
        assert (lrn[0].size, lrn[0].alpha, lrn[0].beta, lrn[0].k) == (5, 5e-4, 0.75, 2.0)
    # width 1/16 scales every conv: 64 -> 4 ... 512 -> 32
    assert convs[0].out_channels == 4 and convs[-1].out_channels == 32
    out = model.eval()(torch.randn(2, 3, TINY_IMAGE, TINY_IMAGE))
    assert out.shape == (2, 1000) and torch.isfinite(out).all()


def test_config_c_puts_1x1_convs_at_the_end_of_blocks_3_to_5():
    model = build("vgg16c", ModelOptions(**TINY))
    kinds = []
    for m in model.features:
        if isinstance(m, nn.Conv2d):
            kinds.append(m.kernel_size[0])
        elif isinstance(m, nn.MaxPool2d):
            kinds.append("M")
    assert kinds == [3, 3, "M", 3, 3, "M", 3, 3, 1, "M", 3, 3, 1, "M", 3, 3, 1, "M"]


@pytest.mark.parametrize("name", slow_except(["vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19",
                                                "vgg19_bn"], "vgg11"))
def test_torchvision_state_dict_loads_strict_and_gives_the_same_logits(name):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(weights=None).eval()
    if get_spec(name).batch_norm:  # non-trivial running statistics, so eval-mode BN does something
        for m in reference.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    with torch.device("meta"):  # no time spent initialising weights that are replaced anyway
        ours = build(name).eval()
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        diff = (ours(x) - reference(x)).abs().max().item()
    assert diff <= 1e-6


@pytest.mark.parametrize("alias,name", [("A", "vgg11"), ("a-lrn", "vgg11_lrn"), ("A_LRN", "vgg11_lrn"),
                                        ("B", "vgg13"), ("c", "vgg16c"), ("D", "vgg16"), ("e", "vgg19"),
                                        ("D_bn", "vgg16_bn"), ("VGG16", "vgg16"), (" vgg19_bn ", "vgg19_bn")])
def test_letters_and_case_are_aliases(alias, name):
    assert get_spec(alias).name == name


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownModelError, match=r"unknown model 'vgg17'; did you mean vgg19, vgg16"):
        get_spec("vgg17")
    with pytest.raises(UnknownModelError, match="vgg16_bn"):
        get_spec("vgg16-bm")
    with pytest.raises(UnknownModelError) as info:
        get_spec("resnet50")
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize("kwargs,match", [
    ({"num_classes": 0}, "num_classes"), ({"num_classes": 2.5}, "num_classes"), ({"width": 0}, "width"),
    ({"width": -1}, "width"), ({"width": float("nan")}, "width"), ({"hidden": 0}, "hidden"),
    ({"dropout": 1.0}, "dropout"), ({"head": "resnet"}, "head"), ({"init": "xavier"}, "init"),
])
def test_bad_options_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ModelOptions(**kwargs)


def test_image_too_small_names_the_minimum():
    from vggbench.zoo.models import check_image_size
    with pytest.raises(ConfigError, match="image size 16 is too small for vgg16: .* at least 32x32"):
        check_image_size(get_spec("vgg16"), 16)
    with pytest.raises(ConfigError):
        profile("vgg11", image_size=31)


def test_hidden_defaults_scale_with_width_and_head():
    assert ModelOptions().hidden_features == (4096, 4096)
    assert ModelOptions(width=0.25).hidden_features == (1024, 1024)
    assert ModelOptions(head="compact").hidden_features == (512, 512)
    assert ModelOptions(head="compact", width=0.125, hidden=100).hidden_features == (100, 100)


def test_compact_head_pools_to_1x1():
    model = build("vgg16", ModelOptions(width=0.125, head="compact", num_classes=10))
    assert model.classifier[0].in_features == 64
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, 10)


def test_paper_init_is_normal_001_with_zero_bias():
    torch.manual_seed(0)
    model = build("vgg11", ModelOptions(width=0.5, init="paper"))
    conv = model.features[3]
    assert abs(conv.weight.std().item() - 0.01) < 5e-4
    assert torch.count_nonzero(conv.bias) == 0
    kaiming = build("vgg11", ModelOptions(width=0.5)).features[3]
    # kaiming fan_out: std = sqrt(2 / (out * 3 * 3)) with 128 channels at width 0.5 -> 64
    assert abs(kaiming.weight.std().item() - (2 / (64 * 9)) ** 0.5) < 3e-3


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(list_models()), width=st.sampled_from([1 / 64, 1 / 32, 1 / 16, 0.1, 0.2]),
       size=st.integers(32, 80), head=st.sampled_from(["imagenet", "compact"]),
       classes=st.integers(1, 20))
def test_any_config_width_size_and_head_gives_one_logit_per_class(name, width, size, head, classes):
    options = ModelOptions(num_classes=classes, width=width, head=head, hidden=8)
    model = build(name, options).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, classes)
    prof = profile(name, options, size)
    assert prof.layers[-1].out_shape == (classes,)
    assert prof.params == sum(p.numel() for p in model.parameters())
    # five max-pools floor-halve the input
    assert prof.stages()[4].out_shape[1:] == (size // 32, size // 32)


def test_public_names_survive_submodule_imports():
    import vggbench
    import vggbench.bench.sweep
    import vggbench.exporters.export
    import vggbench.parity.verify
    import vggbench.training.loop  # noqa: F401  importing submodules sets package attributes; none may shadow a function

    assert vggbench.profile("vgg16").gmacs == pytest.approx(15.47, abs=0.01)
    for name in ("benchmark", "load_model", "export", "verify", "train", "evaluate"):
        assert inspect.isfunction(getattr(vggbench, name)), name


ARITHMETIC_OPTIONS = [ModelOptions(), ModelOptions(num_classes=10, width=0.0625, head="compact"),
                      ModelOptions(num_classes=7, width=0.3, hidden=(40, 12, 5), dropout=0.25)]


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("options,size", [(o, s) for o in ARITHMETIC_OPTIONS for s in (32, 71, 224)])
def test_the_layer_list_arithmetic_is_what_the_built_model_has(name, options, size):
    """`models`/`info` compute every row without torch; each must equal the hooked forward of the built net."""
    from vggbench.zoo.profiling import profile_module

    with torch.device("meta"):
        model = build(name, options).eval()
    built = profile_module(model, size, name)
    assert profile(name, options, size) == built
    assert built.params == sum(p.numel() for p in model.parameters())


def test_the_arithmetic_of_a_custom_layer_list_matches_its_built_model():
    from vggbench.zoo.custom import register_custom
    from vggbench.zoo.profiling import profile_module

    spec = register_custom("arith_check", [16, "LRN", "M", [8, 1], 24, "M"], batch_norm=True)
    options = ModelOptions(num_classes=3, width=0.5, head="compact", hidden=9)
    with torch.device("meta"):
        model = build(spec, options).eval()
    assert profile(spec, options, 20) == profile_module(model, 20, spec.name)


def test_models_and_info_never_import_torch(tmp_path):
    import subprocess
    import sys

    config = tmp_path / "mine.toml"
    config.write_text('name = "mine"\nlayers = [8, "M", 16, "M"]\n')
    code = ("import sys; from vggbench.cli import main\n"
            "for args in (['models'], ['models', 'vgg16_bn'], ['info', 'mine', '--config', sys.argv[1]]):\n"
            "    try: main(args)\n"
            "    except SystemExit as e: assert not e.code, (args, e.code)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'numpy')))\n")
    out = subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "[]", out.stdout[-500:]
    assert "mine: config custom, 5 weight layers" in out.stdout
