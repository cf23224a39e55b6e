"""The case study, tested: every claim about LeNet-5, AlexNet, VGG and ResNet as an experiment with a verdict.

    from classicnets.claims import CLAIMS, run_claim
    run_claim("activations", budget=120, seeds=3)   # -> runs/claims/activations/{report.md, verdict.json, ...}

``registry`` lists the claims (torch-free); ``counting`` holds the exact ones, ``training`` and ``resnet`` the
controlled experiments (``experiment``: twins that differ in one thing, the same initial weights and batches,
sized to a budget from a measured throughput); ``verdict`` decides from means and spreads over seeds;
``run`` writes the report. The command line is ``classicnets claims`` (``classicnets/commands/claims.py``).
"""

from .registry import CLAIMS, FALSE, HOLDS, NOT_AT_BUDGET, PARTLY, VERDICTS, Claim, get_claim, parse_budget
from .run import run_claim

__all__ = ["CLAIMS", "FALSE", "HOLDS", "NOT_AT_BUDGET", "PARTLY", "VERDICTS", "Claim", "get_claim", "parse_budget",
           "run_claim"]  # fmt: skip
