from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

import vggbench.zoo.weights as weights_module
from tests.conftest import TINY, TINY_IMAGE
from vggbench.core.errors import ConfigError, UnknownModelError, WeightsError
from vggbench.zoo import fingerprint, imagenet
from vggbench.zoo.models import ModelOptions, build
from vggbench.zoo.weights import (
    IMAGENET_MEAN,
    hub_cache_path,
    identify,
    imagenet_weights,
    infer_options,
    load_model,
    save_weights,
)

X = torch.randn(2, 3, TINY_IMAGE, TINY_IMAGE, generator=torch.Generator().manual_seed(1))


def logits(loaded):
    with torch.inference_mode():
        return loaded.module(X)


def test_random_weights_are_seeded_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = load_model("vgg11", seed=7, **TINY)
    after = torch.rand(1)
    assert torch.equal(before, after)
    b = load_model("vgg11", seed=7, **TINY)
    c = load_model("vgg11", seed=8, **TINY)
    assert torch.equal(logits(a), logits(b))
    assert not torch.equal(logits(a), logits(c))
    assert a.weights.source == "random" and a.weights.seed == 7
    assert not a.module.training


def test_plain_state_dict_file_gives_the_same_logits(tmp_path):
    src = load_model("vgg13_bn", seed=3, num_classes=10, **TINY)
    path = tmp_path / "plain.pth"
    torch.save(src.module.state_dict(), path)
    loaded = load_model("vgg13_bn", path)
    # options are read off the shapes: 10 classes, width 1/16, hidden 32
    assert loaded.options.num_classes == 10 and loaded.options.width == 1 / 16 and loaded.options.hidden == 32
    assert torch.equal(logits(loaded), logits(src))
    assert loaded.weights.source == "file" and len(loaded.weights.sha256) == 64


@pytest.mark.parametrize("wrap", ["model_state_dict", "state_dict", "model"])
def test_training_checkpoints_with_nested_and_prefixed_state_dicts(tmp_path, wrap):
    src = load_model("vgg11_lrn", seed=1, **TINY)
    state = {f"module.{k}": v for k, v in src.module.state_dict().items()}  # saved from DDP
    path = tmp_path / "seed.pt"
    torch.save({wrap: state, "epoch": 12, "optimizer_state_dict": {"lr": 0.01}, "best_acc": 0.9}, path)
    assert torch.equal(logits(load_model("vgg11_lrn", path)), logits(src))


def test_compiled_module_prefix_is_stripped(tmp_path):
    src = load_model("vgg16", seed=1, **TINY)
    torch.save({f"_orig_mod.{k}": v for k, v in src.module.state_dict().items()}, tmp_path / "c.pth")
    assert torch.equal(logits(load_model("vgg16", tmp_path / "c.pth")), logits(src))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_vggbench_files_carry_their_options_and_normalisation(tmp_path, suffix):
    src = load_model("vgg16c", seed=2, num_classes=7, head="compact", width=0.1, hidden=24)
    path = save_weights(src, tmp_path / f"model{suffix}", dataset="digits")
    loaded = load_model("C", path)
    assert loaded.options == src.options
    assert loaded.weights.mean == IMAGENET_MEAN and loaded.weights.meta["dataset"] == "digits"
    assert torch.equal(logits(loaded), logits(src))
    assert not list(tmp_path.glob(".*tmp"))


def test_plain_safetensors_file(tmp_path):
    src = load_model("vgg19", seed=4, **TINY)
    save_file(src.module.state_dict(), str(tmp_path / "w.safetensors"))
    assert torch.equal(logits(load_model("vgg19", tmp_path / "w.safetensors")), logits(src))


def test_infer_options_and_identify():
    state = build("vgg16_bn", ModelOptions(num_classes=10, width=0.25)).state_dict()
    assert infer_options(state) == {"num_classes": 10, "width": 0.25, "head": "imagenet"}
    assert identify(state) == ["vgg16_bn"]
    assert identify(build("vgg11_lrn", ModelOptions(**TINY)).state_dict()) == ["vgg11_lrn"]
    assert identify({"fc.weight": torch.zeros(2, 2)}) == []


def test_file_of_another_model_names_it(tmp_path):
    path = tmp_path / "bn.pth"
    torch.save(build("vgg16_bn", ModelOptions(**TINY)).state_dict(), path)
    with pytest.raises(WeightsError, match=r"holds a vgg16_bn state_dict .*you asked for vgg16$"):
        load_model("vgg16", path)
    with pytest.raises(WeightsError, match="holds a vgg16_bn state_dict"):
        load_model("vgg19_bn", path)


def test_explicit_options_that_contradict_the_file(tmp_path):
    path = tmp_path / "ten.pth"
    torch.save(build("vgg11", ModelOptions(num_classes=10, **TINY)).state_dict(), path)
    with pytest.raises(WeightsError, match=r"holds a vgg11 state_dict with num_classes=10.*you asked for vgg11 "
                                           r"with num_classes=1000"):
        load_model("vgg11", path, num_classes=1000)


def test_a_file_that_is_no_vgg(tmp_path):
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="does not hold a VGG state_dict"):
        load_model("vgg11", tmp_path / "other.pth")


def test_a_damaged_state_dict_lists_what_is_wrong(tmp_path):
    state = build("vgg11", ModelOptions(**TINY)).state_dict()
    state["features.3.weight"] = torch.zeros(8, 4, 5, 5)
    del state["classifier.3.bias"]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match=r"does not fit vgg11 .*missing classifier.3.bias.*features.3.weight "
                                           r"\[8, 4, 5, 5\] vs \[8, 4, 3, 3\]"):
        load_model("vgg11", tmp_path / "bad.pth")


def test_missing_folder_and_unknown_suffix(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_model("vgg11", tmp_path / "nope.pth")
    with pytest.raises(WeightsError, match="is a folder"):
        load_model("vgg11", tmp_path)
    (tmp_path / "w.h5").write_bytes(b"x")
    with pytest.raises(WeightsError, match=r"expected a \.pth"):
        load_model("vgg11", tmp_path / "w.h5")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_corrupt_files(tmp_path, suffix):
    src = load_model("vgg11", **TINY)
    good = save_weights(src, tmp_path / f"good{suffix}")
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(WeightsError, match="corrupt or truncated"):
        load_model("vgg11", bad)
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(WeightsError, match="corrupt or truncated"):
        load_model("vgg11", bad)


class NotATensor:
    pass


def test_pickles_with_python_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": build("vgg11", ModelOptions(**TINY)).state_dict(), "extra": NotATensor()}, path)
    with pytest.raises(WeightsError, match="refused to load .*weights-only load"):
        load_model("vgg11", path)
    # a hand-made pickle that would run code if it were unpickled without weights_only
    payload = tmp_path / "payload.pt"
    payload.write_bytes(pickle.dumps({"x": NotATensor()}))
    with pytest.raises(WeightsError):
        load_model("vgg11", payload)


def test_checkpoint_without_a_state_dict(tmp_path):
    torch.save({"epoch": 3, "optimizer": {"lr": torch.tensor(0.1)}}, tmp_path / "ckpt.pt")
    with pytest.raises(WeightsError, match="without a state_dict.*'epoch', 'optimizer'"):
        load_model("vgg11", tmp_path / "ckpt.pt")


def test_unknown_model_before_any_file_is_read(tmp_path):
    with pytest.raises(UnknownModelError):
        load_model("vgg12", tmp_path / "nope.pth")


# --- torchvision ImageNet weights, tested offline with files placed in an isolated hub cache -----------

def test_models_without_published_weights():
    with pytest.raises(WeightsError, match="vgg16c has no published ImageNet weights .*vgg11, vgg11_bn"):
        load_model("vgg16c", "imagenet")
    with pytest.raises(WeightsError, match="vgg16 has no weights 'nope'; available: IMAGENET1K_V1, IMAGENET1K_FEATURES"):
        load_model("vgg16", "imagenet:nope")


def test_imagenet_offline_names_the_file_to_place():
    expected = hub_cache_path(imagenet_weights(weights_module.get_spec("vgg11")).url)
    assert expected.name == "vgg11-8a719046.pth"
    with pytest.raises(WeightsError, match=rf"not in the torch hub cache.*place it at {expected}"):
        load_model("vgg11", "imagenet")


def test_imagenet_needs_the_full_model():
    with pytest.raises(ConfigError, match="drop --num-classes, --width"):
        load_model("vgg11", "imagenet", num_classes=10, width=0.5)


@pytest.fixture(scope="module")
def vgg11_file(tmp_path_factory):
    """A full-size vgg11 state_dict, saved as torchvision's cache file would be (random values)."""
    path = tmp_path_factory.mktemp("hub") / "vgg11.pth"
    torch.manual_seed(0)
    state = {k: v.to(torch.bfloat16) if v.is_floating_point() else v  # half the bytes, same keys
             for k, v in build("vgg11").state_dict().items()}
    torch.save(state, path)
    return path


def place(src, url):
    dest = hub_cache_path(url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(src.read_bytes())
    return dest


@pytest.mark.slow
def test_imagenet_cache_file_that_fails_its_checksum(vgg11_file):
    place(vgg11_file, imagenet_weights(weights_module.get_spec("vgg11")).url)
    with pytest.raises(WeightsError, match="does not match the published checksum .*start with 8a719046"):
        load_model("vgg11", "imagenet")


@pytest.mark.slow
def test_imagenet_weights_load_from_the_hub_cache(vgg11_file, monkeypatch):
    dest = place(vgg11_file, imagenet_weights(weights_module.get_spec("vgg11")).url)
    digest = weights_module.sha256_file(dest)
    # our file is not torchvision's, so accept its own checksum in place of the published one
    monkeypatch.setattr(imagenet, "_published_prefix", lambda filename: digest[:8])
    loaded = load_model("a", "imagenet")
    assert loaded.weights.source == "imagenet" and loaded.weights.tag == "IMAGENET1K_V1"
    assert loaded.weights.sha256 == digest and loaded.weights.image_size == 224
    assert loaded.weights.mean == IMAGENET_MEAN
    expected = torch.load(vgg11_file, weights_only=True)["features.0.weight"].float()
    assert torch.equal(loaded.module.features[0].weight, expected)


def test_weights_info_serialises():
    info = load_model("vgg11", **TINY).weights
    assert json.loads(json.dumps(info.to_dict()))["source"] == "random"


@pytest.mark.parametrize("text,expected", [
    ("random", weights_module.WeightsSource("random", seed=3)),
    ("imagenet", weights_module.WeightsSource("imagenet")),
    ("imagenet:IMAGENET1K_FEATURES", weights_module.WeightsSource("imagenet", tag="IMAGENET1K_FEATURES")),
    ("runs/x/best.pt", weights_module.WeightsSource("file", path=weights_module.Path("runs/x/best.pt"))),
])
def test_a_weights_string_is_parsed_once_into_a_source(text, expected):
    source = weights_module.parse_weights(text, seed=3)
    assert source == expected and weights_module.parse_weights(source) is source
    assert str(source) == text
    assert source.label == ("random (seed 3)" if text == "random" else text)


def test_a_source_loads_the_same_weights_as_its_string(tmp_path):
    a = load_model("vgg11", weights_module.WeightsSource("random", seed=5), **TINY)
    b = load_model("vgg11", "random", seed=5, **TINY)
    assert a.fingerprint == b.fingerprint
    assert load_model("vgg11", a.weights.as_source(), **TINY).fingerprint == a.fingerprint
    with pytest.raises(ConfigError, match="empty string"):
        weights_module.parse_weights(" ")


def test_the_fingerprint_is_computed_once_while_the_weights_stay(monkeypatch):
    model = load_model("vgg11", **TINY)
    calls = []
    real = fingerprint._digest
    monkeypatch.setattr(fingerprint, "_digest", lambda m: calls.append(1) or real(m))
    first = model.fingerprint
    assert model.fingerprint == first and fingerprint.state_sha256(model.module) == first and len(calls) == 1
    with torch.no_grad():
        model.module.classifier[6].bias.add_(1.0)  # in place: the version counter moves
    assert model.fingerprint != first and len(calls) == 2


def test_the_published_table_is_torchvisions_default():
    from vggbench.zoo.imagenet import PUBLISHED, published_weights
    from vggbench.zoo.specs import list_models

    names = [n for n in list_models() if weights_module.get_spec(n).torchvision_name]
    assert sorted(PUBLISHED) == sorted(weights_module.get_spec(n).torchvision_name for n in names)
    for name in names:
        default = imagenet_weights(weights_module.get_spec(name))
        assert published_weights(weights_module.get_spec(name)) == (default.name, default.url)


@pytest.mark.parametrize("env", [{}, {"XDG_CACHE_HOME": "/x/cache"}, {"TORCH_HOME": "~/th"},
                                 {"TORCH_HOME": "/t", "XDG_CACHE_HOME": "/x"}])
def test_the_hub_folder_without_torch_is_torch_hubs(env, monkeypatch):
    import sys

    import torch

    from vggbench.zoo.imagenet import hub_dir

    for key in ("TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    expected = torch.hub.get_dir()
    monkeypatch.delitem(sys.modules, "torch")  # as `vggbench models` runs: torch never imported
    assert hub_dir() == expected
