"""The speedrun nets and recipes, and the time-to-accuracy benchmark's options for them (evaluation from
epoch K, the time cap, the weight EMA)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from classicnets import create_model, model_card
from classicnets.models.resnet import BasicBlock
from classicnets.models.speedrun import DEFAULT_WIDTHS, SPEEDRUN_PARAMS
from classicnets.train.config import load_recipe

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "time_to_accuracy.py"


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_speedrun_nets_are_built_from_the_classic_blocks() -> None:
    """Both nets: a conv-BN-ReLU stem, three stages of conv-pool-BN-ReLU + a BasicBlock (with or without its
    shortcut); the same parameters, the card's exact count, and 28x28 in -> (w3, 3, 3) features."""
    res, plain = create_model("speedrun_resnet"), create_model("speedrun_plain")
    assert _params(res) == _params(plain) == SPEEDRUN_PARAMS == model_card("speedrun_resnet").paper_params
    assert res.num_skip_connections == 3 and plain.num_skip_connections == 0
    for net in (res, plain):
        blocks = [m for m in net.modules() if isinstance(m, BasicBlock)]
        assert len(blocks) == 3 and [b.conv1.in_channels for b in blocks] == list(DEFAULT_WIDTHS[1:])
        assert [type(m).__name__ for m in net.stem] == ["Conv2d", "BatchNorm2d", "ReLU"]
        assert [type(m).__name__ for m in net.layer1[0]] == ["Conv2d", "MaxPool2d", "BatchNorm2d", "ReLU"]
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert res.eval().forward_features(x).shape == (2, DEFAULT_WIDTHS[-1], 3, 3)
        assert res(x).shape == (2, 10)


def test_speedrun_widths_option() -> None:
    net = create_model("speedrun_resnet", num_classes=7, in_chans=3, widths=[8, 16, 24, 32])
    assert net.fc.out_features == 7 and net.stem[0].in_channels == 3 and net.num_features == 32
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 3, 8, 8)).shape == (1, 7)  # the smallest input: 8x8 -> 1x1
    for bad in ([16, 32, 64], [16, 32, 0, 128], [16, 32, 64.0, 128], [True, 32, 64, 128]):
        with pytest.raises(ValueError, match="widths must be 4 channel counts"):
            create_model("speedrun_plain", widths=bad)


@pytest.mark.parametrize("recipe, model", [("fashion-speedrun", "speedrun_resnet"),
                                           ("fashion-lenet-speedrun", "lenet5_modern")])
def test_speedrun_recipes_load(recipe: str, model: str) -> None:
    config = load_recipe(recipe)
    assert config.model == model and config.data == "fashion-mnist" and config.tta_flip
    create_model(config.model, num_classes=10, in_chans=1, **config.model_kwargs)  # the options build


def _tta(tmp_path: Path, *extra: str) -> tuple[dict, str]:
    out_json = tmp_path / "tta.json"
    cmd = [sys.executable, str(SCRIPT), "--model", "lenet5_modern", "--paths", "classicnets", "--seeds", "0",
           "--threads", "1", "--set", "subset=256", "--allocator", "glibc", "--json", str(out_json), *extra]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(out_json.read_text())["runs"]["classicnets"][0], result.stdout


@pytest.mark.processes
def test_time_to_accuracy_eval_from_and_ema(tmp_path: Path) -> None:
    """--eval-from 3 of 3 epochs: one evaluation, after the last epoch (an unreachable target); with the
    recipe's ema_decay the EMA weights are what is evaluated (the run records it in its config)."""
    run, stdout = _tta(tmp_path, "--set", "epochs=3", "--set", "ema_decay=0.9", "--eval-from", "3",
                       "--target", "0.999")
    assert [e for e, _, _ in run["history"]] == [3] and run["epochs"] == 3
    assert run["reached_s"] is None and run["config"]["ema_decay"] == 0.9 and not run["capped"]
    assert "not reached" in stdout and "not reached in" not in stdout  # no cap: it just ended its epochs


@pytest.mark.processes
def test_time_to_accuracy_max_minutes_stops_early(tmp_path: Path) -> None:
    """A 0-minute cap stops the run after its first epoch (evaluated even before --eval-from) and says so."""
    run, stdout = _tta(tmp_path, "--set", "epochs=5", "--eval-from", "5", "--max-minutes", "0",
                       "--target", "0.999")
    assert [e for e, _, _ in run["history"]] == [1] and run["reached_s"] is None and run["capped"]
    assert "not reached in 0 min" in stdout
