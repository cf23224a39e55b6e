"""The claims of the case study, in the order a learner meets them (LeNet-5 -> AlexNet -> VGG -> ResNet).

Torch-free, so ``classicnets claims`` lists them instantly. Each claim names the function that runs its
experiment (``module:function`` inside :mod:`classicnets.claims`), a default budget, and the verdict of the
last run, read from ``runs/claims/NAME/verdict.json``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLAIMS_DIR = Path("runs") / "claims"

# The four verdicts (the words), from means and spreads over seeds, never from one run.
HOLDS = "holds"
PARTLY = "holds partly"
NOT_AT_BUDGET = "does not hold at this budget"
FALSE = "false"
VERDICTS = (HOLDS, PARTLY, NOT_AT_BUDGET, FALSE)


@dataclass(frozen=True)
class Claim:
    name: str
    net: str  # "LeNet-5", "AlexNet", "VGG", "ResNet"
    kind: str  # "counting" (instant, exact) or "training" (a controlled experiment over seeds)
    statement: str  # the claim as a learner meets it
    source: str  # where it comes from
    experiment: str  # what is run, and what differs between the twins (one thing only)
    runner: str  # "module:function" in classicnets.claims
    default_budget: float = 0.0  # seconds; 0 for counting claims

    def status(self, root: Path | None = None) -> dict[str, Any] | None:
        """The last run's verdict.json, or None if the claim has not been run (or its file is unreadable)."""
        path = (root or CLAIMS_DIR) / self.name / "verdict.json"
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return record if _well_formed(record) else None


def _well_formed(record: Any) -> bool:
    """A verdict.json the listing and the case study can read (a hand-edited or truncated one is 'not run')."""
    if not isinstance(record, dict) or record.get("verdict") not in VERDICTS:
        return False
    kinds = {"date": str, "command": str, "reading": list, "device": str, "threads": int, "elapsed_s": (int, float)}
    if not all(isinstance(record.get(k), t) for k, t in kinds.items()):
        return False
    budget, seeds = record.get("budget_s"), record.get("seeds")
    return (budget is None or isinstance(budget, (int, float))) and (seeds is None or isinstance(seeds, list))


CLAIMS: tuple[Claim, ...] = (
    Claim("lenet5-params", "LeNet-5", "counting",
          "LeNet-5 has about 60,000 trainable parameters.",
          "LeCun et al. 1998, Section II.B",
          "count the parameters of lenet5 (paper form) and lenet5_modern, layer by layer", "counting:lenet5_params"),
    Claim("alexnet-size", "AlexNet", "counting",
          "AlexNet has about 60 million parameters and 650,000 neurons (some course notes say 650 million).",
          "Krizhevsky et al. 2012, abstract and Section 3",
          "count the parameters of alexnet_paper and alexnet, and the neurons (every unit of every conv and FC "
          "layer's output, one 227x227 image)", "counting:alexnet_size"),
    Claim("vgg16-fc-share", "VGG", "counting",
          "VGG-16 has about 138 million parameters, most of them in the fully connected layers.",
          "Simonyan and Zisserman 2015, Table 2",
          "count vgg16's parameters per layer and the share of its three FC layers", "counting:vgg16_fc_share"),
    Claim("shrink-grow", "all", "counting",
          "Through every classic net, height and width shrink while the number of channels grows.",
          "the course's summary of LeNet-5 -> AlexNet -> VGG -> ResNet",
          "the per-stage output shapes of lenet5, alexnet_paper, vgg16 and resnet50 (one forward pass)",
          "counting:shrink_grow"),
    Claim("stacked-3x3", "VGG", "counting",
          "Two stacked 3x3 convolutions see the same 5x5 field as one 5x5 convolution with fewer parameters "
          "(18C^2 vs 25C^2); three 3x3 see 7x7 (27C^2 vs 49C^2).",
          "Simonyan and Zisserman 2015, Section 2.3",
          "receptive fields from classicnets.summary's RF column and parameter counts of 3x3 stacks vs one "
          "big conv, C = 64", "counting:stacked_3x3"),
    Claim("resnet-skips", "ResNet", "counting",
          "A ResNet with L layers has on the order of L/2 skip connections, not L^2.",
          "He et al. 2016; the contrast is DenseNet's L(L+1)/2",
          "count the skip connections classicnets.summary sees in the CIFAR ResNets and ResNet-18...152",
          "counting:resnet_skips"),
    Claim("activations", "LeNet-5", "training",
          "ReLU trains a LeNet-5 better than tanh, and tanh better than the sigmoid of the early nets.",
          "LeCun et al. 1998 (scaled tanh); Glorot and Bengio 2010; Krizhevsky et al. 2012",
          "lenet5_modern's layout with sigmoid, tanh or ReLU, everything else equal (max-pooling, init seed, "
          "batches, optimizer)", "training:activations", 120.0),
    Claim("relu-6x", "AlexNet", "training",
          "A ReLU network reaches 25% training error about 6x faster than the same network with tanh.",
          "Krizhevsky et al. 2012, Figure 1 (a four-layer conv net on CIFAR-10)",
          "a four-layer conv net with ReLU or tanh, each with its best learning rate from a grid (as in the "
          "paper), steps until the running training error first reaches 25%", "training:relu_speed", 120.0),
    Claim("lrn", "AlexNet", "training",
          "Local response normalization does not help (VGG: A-LRN is no better than A).",
          "Simonyan and Zisserman 2015, Table 3; Krizhevsky et al. 2012, Section 3.3 claims it helps",
          "an AlexNet-style conv net and a VGG-A-style net, each with and without LRN, everything else equal",
          "training:lrn", 150.0),
    Claim("3x3-vs-5x5", "VGG", "training",
          "A stack of two 3x3 convolutions beats one 5x5 convolution with the same receptive field, with fewer "
          "parameters.",
          "Simonyan and Zisserman 2015, Section 2.3 (the argument) and Section 4.1 (B with its 3x3 pairs replaced "
          "by single 5x5 convs: 7% higher top-1 error)",
          "a VGG-style net with 3x3 pairs vs the same net with one 5x5 conv per pair (equal receptive field)",
          "training:stacks", 120.0),
    Claim("vgg-depth", "VGG", "training",
          "Deeper VGGs are better, up to a point: VGG-19 is barely better than VGG-16.",
          "Simonyan and Zisserman 2015, Table 3/4",
          "VGG-11/13/16/19 with BN (the paper's configs A, B, D, E at a quarter of the width), the same "
          "budget, data and optimizer", "training:vgg_depth", 180.0),
    Claim("plain-vs-residual", "ResNet", "training",
          "Plain nets get worse as they get deeper (degradation); residual nets keep improving with depth.",
          "He et al. 2016, Figure 6 (CIFAR-10, 20/32/44/56 layers)",
          "plain and residual CIFAR nets of depth 20, 32, 44 and 56 (option A: the twins share their initial "
          "weights and batches), training error at the end, 20 vs 56 decides", "resnet:plain_vs_residual", 420.0),
    Claim("shortcuts-ab", "ResNet", "training",
          "Projection shortcuts (B) are marginally better than parameter-free zero-padding (A); A is enough.",
          "He et al. 2016, Table 3 (ResNet-34: A 25.03%, B 24.52% top-1 error)",
          "resnet20 with option A vs option B shortcuts, same init seed for every shared layer, same batches",
          "resnet:shortcuts", 120.0),
    Claim("identity", "ResNet", "training",
          "A residual block learns the identity easily; a plain block finds it hard.",
          "He et al. 2016, Section 3.1",
          "fit one block (with or without its skip) to y = x; steps to 1% relative error (the identity study)",
          "resnet:identity", 45.0),
    Claim("gradient-flow", "ResNet", "training",
          "Skips let the gradient reach every layer of a deep net evenly; in a deep plain net the per-layer "
          "gradients vanish or explode (spread over orders of magnitude).",
          "He et al. 2016; Glorot and Bengio 2010; Veit et al. 2016",
          "per-layer weight-gradient norms of plain56 vs resnet56 (same initial weights) at initialization and "
          "after training steps: their spread max/min over the layers (the gradient study)",
          "resnet:gradient_flow", 60.0),
)


def claim_names() -> list[str]:
    return [c.name for c in CLAIMS]


def get_claim(name: str) -> Claim:
    for c in CLAIMS:
        if c.name == name:
            return c
    import difflib

    close = difflib.get_close_matches(name, claim_names(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown claim {name!r}{hint} (`classicnets claims` lists them)")


def parse_budget(text: str | float | int) -> float:
    """``"10m"`` -> 600.0, ``"90s"`` / ``"90"`` -> 90.0, ``"1h"`` -> 3600.0, ``"1m30s"`` -> 90.0."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        s = str(text).strip().lower()
        parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", s)
        if not s or parts is None or not any(parts.groups()):
            raise ValueError(f"budget must look like 90s, 10m, 1m30s or 1h, got {text!r}")
        h, m, sec = (float(g) if g else 0.0 for g in parts.groups())
        seconds = 3600 * h + 60 * m + sec
    if not seconds > 0:
        raise ValueError(f"budget must be positive, got {text!r}")
    return seconds


def format_budget(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    if seconds >= 60:
        return f"{int(seconds // 60)}m{seconds % 60:.0f}s"
    return f"{seconds:g}s"
