"""Why ResNet works, measured: gradient flow, the degradation experiment, the identity mapping, and a
side-by-side comparison of the classic nets.

    gradient_flow(["plain56", "resnet56"], steps=50)   -> GradientReport  (per-layer gradient norms)
    degradation([20, 32, 44, 56], recipe=Recipe())      -> DegradationReport (He et al. Fig. 6)
    identity_study(steps=1000)                          -> IdentityReport  (learning the identity)
    compare(["lenet5_modern", "resnet20"], "fashion-mnist", epochs=5) -> CompareReport

Each writes a run directory (``runs/study-<kind>-<time>`` or ``out``) with the raw numbers (CSV, JSON), PNG
figures and a report.md whose reading is computed from those numbers (``report.py`` writes them all). The
command line (``classicnets study ...``, ``classicnets compare``) is in ``classicnets/commands/studies.py``.
"""

from .compare import CompareReport, compare
from .degradation import DegradationReport, degradation
from .gradients import GradientReport, LayerGradients, gradient_flow, layer_gradients
from .identity import IdentityReport, identity_study, zero_init_checks
from .recipe import DEFAULT_MODELS, Recipe

__all__ = [
    "DEFAULT_MODELS", "CompareReport", "DegradationReport", "GradientReport", "IdentityReport", "LayerGradients",
    "Recipe", "compare", "degradation", "gradient_flow", "identity_study", "layer_gradients", "zero_init_checks",
]  # fmt: skip
