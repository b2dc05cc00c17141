"""The training recipes (default vs the paper's), net A's pre-initialisation, the chance warning, and the blog
posts' options: --mean/--std, --hidden per layer, --monitor, --keep-every, folder layouts, --config, export's size."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from vggbench.cli import main
from vggbench.core.errors import ConfigError, DataError
from vggbench.data.datasets import load_data
from vggbench.training import recipe
from vggbench.training.config import RECIPES, TrainConfig
from vggbench.training.loop import train
from vggbench.zoo.custom import read_config, register_custom
from vggbench.zoo.specs import ModelOptions, get_spec
from vggbench.zoo.weight_files import infer_options
from vggbench.zoo.weights import load_model, save_weights

TINY = dict(width=1 / 16, hidden=(32,), head="compact", progress=False, device="cpu")


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def make_images(root: Path, counts: dict[str, int], size=(36, 36)) -> None:
    for i, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for j in range(count):
            Image.new("RGB", size, (60 * i, 20 * j, 120)).save(root / name / f"{j}.png")


# --- models: hidden widths per layer, Glorot's init -------------------------------------------------------

def test_hidden_per_layer_builds_torchvision_indices_and_round_trips_through_a_checkpoint(tmp_path):
    model = load_model("vgg16", width=1 / 16, head="compact", hidden=(4096, 1000), num_classes=10)
    linears = [(i, m.in_features, m.out_features) for i, m in enumerate(model.module.classifier)
               if isinstance(m, torch.nn.Linear)]
    assert linears == [(0, 32, 4096), (3, 4096, 1000), (6, 1000, 10)]  # post 000's head
    assert model.options.hidden == (4096, 1000) and model.options.to_dict()["hidden"] == [4096, 1000]
    three = load_model("vgg11", width=1 / 16, head="compact", hidden=(16, 8, 4), num_classes=3)
    assert [m.out_features for m in three.module.classifier if isinstance(m, torch.nn.Linear)] == [16, 8, 4, 3]
    assert infer_options(three.module.state_dict())["hidden"] == (16, 8, 4)
    assert ModelOptions(hidden=[64]).hidden == 64 and ModelOptions(hidden=(64,)).hidden_features == (64, 64)
    path = save_weights(three, tmp_path / "w.pt")
    again = load_model("vgg11", path)
    assert again.options.hidden == (16, 8, 4)
    assert all(torch.equal(a, b) for a, b in zip(again.module.state_dict().values(),
                                                  three.module.state_dict().values(), strict=True))
    with pytest.raises(ConfigError, match="hidden must be an integer"):
        ModelOptions(hidden=(4, 0))


def test_glorot_init_is_uniform_in_glorots_bound_with_zero_biases():
    model = load_model("vgg11", width=1 / 16, init="glorot", seed=1).module
    conv = model.features[3]  # 4 -> 8 channels, 3x3
    bound = math.sqrt(6 / (conv.in_channels * 9 + conv.out_channels * 9))
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.9 * bound
    fc = model.classifier[0]
    assert fc.weight.abs().max() <= math.sqrt(6 / (fc.in_features + fc.out_features))
    assert all(float(m.bias.detach().abs().max()) == 0 for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def test_glorot_relu_is_glorots_draw_scaled_by_the_relu_gain_except_the_last_layer():
    plain = load_model("vgg11", width=1 / 16, init="glorot", seed=2).module
    relu = load_model("vgg11", width=1 / 16, init="glorot_relu", seed=2).module
    layers = [(a, b) for a, b in zip(plain.modules(), relu.modules(), strict=True)
              if isinstance(a, (torch.nn.Conv2d, torch.nn.Linear))]
    for a, b in layers[:-1]:
        torch.testing.assert_close(b.weight, a.weight * math.sqrt(2))
    torch.testing.assert_close(layers[-1][1].weight, layers[-1][0].weight)  # the logits: no ReLU follows
    assert all(float(b.bias.detach().abs().max()) == 0 for _, b in layers)
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # zero biases and ReLUs: the gain of each of the 8 convs multiplies the features
        torch.testing.assert_close(relu.features(x), plain.features(x) * 2 ** 4)


# --- recipes ------------------------------------------------------------------------------------------

def test_the_paper_recipe_is_the_papers_exactly_and_the_default_adds_glorot_and_warm_up():
    paper = TrainConfig(recipe="paper")
    assert (paper.optimizer_value, paper.lr_value, paper.momentum, paper.weight_decay_value,
            paper.batch_size_value) == ("sgd", 0.01, 0.9, 5e-4, 256)
    assert (paper.schedule, paper.monitor, paper.init_value, paper.warmup_value) == ("plateau", "val_acc", "paper", 0)
    assert ModelOptions().dropout == 0.5
    default = TrainConfig()
    assert (default.init_value, default.warmup_value, default.optimizer_value, default.batch_size_value,
            TrainConfig(model="vgg16_bn").batch_size_value) == ("glorot_relu", 1, "adam", 32, 64)
    assert tuple(RECIPES["default"].values()) == ("glorot_relu", "glorot", 0.0, 0.0, 1, "adam", 32, 64)
    assert (TrainConfig(model="vgg16_bn").dropout_value, default.dropout_value,
            TrainConfig(model="vgg16_bn", recipe="paper").dropout_value, TrainConfig(recipe="paper").dropout_value,
            TrainConfig(model="vgg16_bn", dropout=0.3).dropout_value) == (0.0, 0.0, 0.5, 0.5, 0.3)
    bn = recipe.make_model(TrainConfig(model="vgg11_bn", width=1 / 16, image_size=32), 10)
    assert bn.options.dropout == 0.0 and bn.options.init == "glorot"
    assert all(m.p == 0.0 for m in bn.module.modules() if isinstance(m, torch.nn.Dropout))
    assert (TrainConfig(model="vgg16_bn").init_value, TrainConfig(model="vgg16_bn", recipe="paper").init_value,
            TrainConfig(model="vgg16_bn", init="kaiming").init_value) == ("glorot", "paper", "kaiming")
    assert TrainConfig(recipe="paper", init="glorot").init_value == "glorot"
    module = recipe.make_model(TrainConfig(recipe="paper", model="vgg11", width=0.25), 10).module
    weights = torch.cat([m.weight.detach().flatten() for m in module.modules() if isinstance(m, torch.nn.Conv2d)])
    assert abs(float(weights.std()) - 0.01) < 5e-4  # N(0, 0.01)
    optimizer = recipe.make_optimizer(paper, module)
    assert optimizer.defaults["lr"] == 0.01 and optimizer.defaults["momentum"] == 0.9
    scheduler = recipe.make_scheduler(paper, optimizer)
    assert scheduler.mode == "max" and scheduler.factor == 0.1
    assert recipe.make_scheduler(TrainConfig(monitor="val_loss"), optimizer).mode == "min"


def test_warm_up_rises_linearly_to_the_learning_rate_per_step():
    config = TrainConfig(warmup=2, lr=0.1)
    lrs = [recipe.warmup_lr(config, epoch, step, 4) for epoch in range(3) for step in range(4)]
    assert lrs[:8] == pytest.approx([0.1 * k / 8 for k in range(1, 9)]) and lrs[8:] == [None] * 4
    assert recipe.warmup_lr(TrainConfig(recipe="paper"), 0, 0, 4) is None


def test_a_run_at_chance_says_so_with_the_likely_fix(tmp_path, capsys):
    result = train(TrainConfig(model="vgg11", data="synthetic", recipe="paper", epochs=2, chance_epochs=2,
                               lr=1e-9, out=str(tmp_path / "run"), **TINY))
    (warning,) = result.warnings
    assert "stayed at chance" in warning and "--init glorot" in warning and "drop --recipe paper" in warning
    assert "warning: validation accuracy has stayed at chance" in capsys.readouterr().err
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["warnings"] == [warning] and history["monitor"] == "val_acc"
    history = [{"val_acc": 0.1}] * 3
    assert recipe.chance_warning(TrainConfig(chance_epochs=3), history, 10) is not None
    assert recipe.chance_warning(TrainConfig(chance_epochs=4), history, 10) is None
    assert recipe.chance_warning(TrainConfig(chance_epochs=3), [*history[:2], {"val_acc": 0.3}], 10) is None
    assert "--init-from" in recipe.chance_warning(TrainConfig(chance_epochs=3), history, 10)


# --- net A's weights in a deeper net ----------------------------------------------------------------------

def test_init_from_copies_net_a_first_four_convs_and_three_fc_layers(tmp_path):
    net_a = load_model("vgg11_bn", width=1 / 16, head="compact", hidden=32, num_classes=10, seed=5)
    path = save_weights(net_a, tmp_path / "a.pt")
    deep = recipe.make_model(TrainConfig(model="vgg16_bn", init_from=str(path)), 10)
    assert deep.options.width == 1 / 16 and deep.options.hidden == 32 and deep.options.head == "compact"
    a, d = net_a.module.features, deep.module.features
    # conv1_1, conv2_1, conv3_1, conv3_2: A's features 0, 4, 8, 11; D's 0, 7, 14, 17 (conv, bn, relu per layer)
    for ia, idd in ((0, 0), (4, 7), (8, 14), (11, 17)):
        assert torch.equal(a[ia].weight, d[idd].weight) and torch.equal(a[ia + 1].running_var, d[idd + 1].running_var)
    assert not torch.equal(d[3].weight, d[3].weight.new_zeros(d[3].weight.shape))  # conv1_2: its own init
    for i in (0, 3, 6):
        assert torch.equal(net_a.module.classifier[i].weight, deep.module.classifier[i].weight)
    assert deep.weights.meta["init_from_layers"][:4] == ["conv1_1", "conv1_1's batch norm", "conv2_1",
                                                         "conv2_1's batch norm"]
    plain = recipe.make_model(TrainConfig(model="vgg19", init_from=str(path)), 10)  # BN -> no BN: convs only
    assert torch.equal(plain.module.features[0].weight, a[0].weight)


@pytest.mark.slow
def test_init_from_is_recorded_in_the_checkpoints_metadata(tmp_path):
    net_a = load_model("vgg11", width=1 / 16, head="compact", hidden=32, num_classes=10, seed=5)
    path = save_weights(net_a, tmp_path / "a.pt")
    result = train(TrainConfig(model="vgg13", data="synthetic", epochs=1, init_from=str(path), progress=False,
                               out=str(tmp_path / "run")))
    for name in ("best.pt", "last.pt"):
        meta = torch.load(tmp_path / "run" / name, weights_only=True)["vggbench"]
        assert meta["init_from"] == str(path) and meta["init_from_layers"][:2] == ["conv1_1", "conv2_1"], name
    assert load_model("vgg13", result.best_path).weights.meta["init_from"] == str(path)


def test_init_from_refuses_other_nets_and_other_shapes(tmp_path):
    net_b = save_weights(load_model("vgg13", width=1 / 16, num_classes=10), tmp_path / "b.pt")
    with pytest.raises(ConfigError, match="it is a vgg13 checkpoint; the paper initialises deeper nets from net A"):
        recipe.make_model(TrainConfig(model="vgg16", init_from=str(net_b)), 10)
    net_a = save_weights(load_model("vgg11", width=1 / 16, num_classes=10), tmp_path / "a.pt")
    with pytest.raises(ConfigError, match=r"conv1_1 is \[4, 3, 3, 3\] in net A but \[8, 3, 3, 3\] in vgg16"):
        recipe.make_model(TrainConfig(model="vgg16", init_from=str(net_a), width=1 / 8), 10)
    with pytest.raises(ConfigError, match="fc8 is"):
        recipe.make_model(TrainConfig(model="vgg16", init_from=str(net_a), num_classes=12), 10)


# --- mean/std, monitor, snapshots -----------------------------------------------------------------------

def test_mean_and_std_options_parse_one_or_three_values():
    assert TrainConfig(mean="0.5", std="0.5,0.25,0.5").mean == (0.5, 0.5, 0.5)
    assert TrainConfig(std="0.5,0.25,0.5").std == (0.5, 0.25, 0.5)
    with pytest.raises(ConfigError, match="one number or three"):
        TrainConfig(mean="0.5,0.5")
    with pytest.raises(ConfigError, match="--std must be positive"):
        TrainConfig(std="0.5,0,0.5")


@pytest.mark.slow
def test_monitor_val_loss_keeps_the_lowest_loss_and_keep_every_keeps_snapshots(tmp_path):
    out = tmp_path / "run"
    result = train(TrainConfig(model="vgg11", data="synthetic", epochs=3, monitor="val_loss", keep_every=2,
                               mean=(0.5,), std=(0.5,), out=str(out), optimizer="adam", **TINY))
    losses = [e["val_loss"] for e in result.history]
    assert result.best_epoch == 1 + losses.index(min(losses))
    assert sorted(p.name for p in out.glob("*.pt")) == ["best.pt", "epoch_2.pt", "last.pt"]
    snapshot = torch.load(out / "epoch_2.pt", weights_only=True)
    assert snapshot["epoch"] == 2 and snapshot["vggbench"]["mean"] == [0.5, 0.5, 0.5]


# --- folder layouts -----------------------------------------------------------------------------------

@pytest.mark.parametrize("train_name,test_name", [("train_data", "test_data"), ("train", "test")])
def test_train_and_test_folders_are_splits_with_val_held_out_of_train(tmp_path, train_name, test_name):
    make_images(tmp_path / train_name, {"cat": 5, "dog": 5})
    make_images(tmp_path / test_name, {"cat": 2, "dog": 2})
    (tmp_path / "original_data").mkdir()  # post 003's project folder holds more than the splits
    data = load_data(f"folder:{tmp_path}", val_fraction=0.2)
    assert data.classes == ("cat", "dog") and data.sizes() == {"train": 8, "val": 2, "test": 4}


@pytest.mark.parametrize("layout,message", [
    ({"test_data/a": 1, "test_data/b": 1}, "has test_data/ but no training folder"),
    ({"train/train": 1, "train/test": 1}, "folders named test, train, which would become classes"),
    ({"train/a": 1, "train_data/a": 1}, "has train/ and train_data/: which is the train split"),
])
def test_layouts_that_would_turn_split_names_into_classes_are_refused(tmp_path, layout, message):
    for folder, count in layout.items():
        make_images(tmp_path / Path(folder).parent, {Path(folder).name: count})
    with pytest.raises(DataError, match=message):
        load_data(f"folder:{tmp_path}")


# --- a layer list of one's own ------------------------------------------------------------------------

@pytest.mark.slow
def test_a_custom_config_trains_exports_and_evaluates_by_name(tmp_path):
    config = tmp_path / "myvgg.toml"
    config.write_text('name = "myvgg"\nlayers = [8, "M", 16, [16, 1], "M", 32, "M", 32, "M", 32, "M"]\n'
                      'batch_norm = true\n')
    result = cli("train", "myvgg", "--config", config, "--data", "synthetic", "--epochs", 1, "--width", 0.5,
                 "--hidden", 16, "--image-size", 64, "--no-progress", "--device", "cpu", "--out", tmp_path / "run",
                 "--json")
    assert result.exit_code == 0, result.output
    meta = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["vggbench"]
    assert meta["spec"] == {"name": "myvgg", "layers": [8, "M", 16, [16, 1], "M", 32, "M", 32, "M", 32, "M"],
                            "batch_norm": True}
    # export and eval need no --config: the checkpoint rebuilds its model; export takes its image size (64)
    exported = cli("export", "myvgg", "--weights", tmp_path / "run" / "best.pt", "--format", "onnx",
                   "--out", tmp_path / "exp")
    assert exported.exit_code == 0, exported.output
    manifest = json.loads((tmp_path / "exp" / "manifest.json").read_text())
    assert manifest["input"]["shape"][-2:] == [64, 64] and manifest["model"]["spec"]["name"] == "myvgg"
    verified = cli("verify", tmp_path / "exp")
    assert verified.exit_code == 0, verified.output


@pytest.mark.parametrize("text,suffix,message", [
    ('{"name": "j1", "layers": [8, "M"], "batch_norm": false}', ".json", None),
    ('name = "t2"\nlayers = [8, "P"]\n', ".toml", r"layer 2 is 'P'; a layer is a conv's channels"),
    ('name = "t3"\nlayers = ["M"]\n', ".toml", "layers hold no convolution"),
    ('name = "vgg16"\nlayers = [8]\n', ".toml", "name 'vgg16' is already a model of the zoo"),
    ('name = "t4"\nlayer = [8]\n', ".toml", "unknown key 'layer'.*did you mean layers"),
    ('name = "t5"\nlayers = [[8, 5]]\n', ".toml", r"layer 1 is \[8, 5\]"),
    ('name = "t6"\nlayers = [8]\nbatch_norm = "yes"\n', ".toml", "batch_norm must be true or false"),
    ('name = "t7"\nlayers = [8', ".toml", "is not valid TOML"),
])
def test_custom_configs_are_checked_with_one_line_errors(tmp_path, text, suffix, message):
    path = tmp_path / f"model{suffix}"
    path.write_text(text)
    if message is None:
        spec = read_config(path)
        assert spec.layers == (8, "M") and get_spec("J1") is spec and read_config(path) is spec
        return
    with pytest.raises(ConfigError, match=message):
        read_config(path)
    result = cli("train", "x", "--config", path)
    assert result.exit_code == 2 and result.output.count("\n") == 1 and result.output.startswith("error: ")


def test_a_custom_name_cannot_be_redefined_with_other_layers():
    register_custom("twice", [8, "M"])
    with pytest.raises(ConfigError, match="already a custom model with other layers"):
        register_custom("twice", [16, "M"])


def test_export_defaults_to_the_image_size_the_weights_record(tmp_path):
    model = load_model("vgg11", width=1 / 16, hidden=16, num_classes=10)
    model.weights = type(model.weights)("random", seed=0, image_size=64)
    path = save_weights(model, tmp_path / "w.pt")
    result = cli("export", "vgg11", "--weights", path, "--format", "onnx", "--out", tmp_path / "e", "--no-verify")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "e" / "manifest.json").read_text())["input"]["shape"][-2:] == [64, 64]
