"""Why ResNet works, measured: gradient flow, the degradation experiment, the identity mapping, and a
side-by-side comparison of the classic nets.

    gradient_flow(["plain56", "resnet56"], steps=50)   -> GradientReport  (per-layer gradient norms)
    degradation([20, 32, 44, 56], recipe=Recipe())      -> DegradationReport (He et al. Fig. 6)
    identity_study(steps=1000)                          -> IdentityReport  (learning the identity)
    compare(["lenet5_modern", "resnet20"], "fashion-mnist", epochs=5) -> CompareReport

Each writes a run directory (``runs/study-<kind>-<time>`` or ``out``) with the raw numbers (CSV, JSON), PNG
figures and a report.md whose reading is computed from those numbers. The CLI (``classicnets study ...``,
``classicnets compare``) is a thin layer over these functions, in ``cli.py``.
"""

from .compare import CompareReport, compare
from .degradation import DegradationReport, Recipe, degradation
from .gradients import DEFAULT_MODELS, GradientReport, LayerGradients, gradient_flow, layer_gradients
from .identity import IdentityReport, identity_study, zero_init_checks

__all__ = [
    "DEFAULT_MODELS", "CompareReport", "DegradationReport", "GradientReport", "IdentityReport", "LayerGradients",
    "Recipe", "compare", "degradation", "gradient_flow", "identity_study", "layer_gradients", "zero_init_checks",
]  # fmt: skip
