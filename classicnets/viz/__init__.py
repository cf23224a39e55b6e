"""See inside a trained classic net: each view returns its data (numpy arrays in a dataclass) and has a
``plot_*`` function that writes one PNG (matplotlib, Agg). ``classicnets show VIEW`` is the command line.

    from classicnets import viz
    net = viz.load("runs/lenet/best.pt")           # anything classicnets.inference.load_trained takes
    viz.plot_filters(viz.filters(net), "filters.png")
    viz.plot_features(viz.features(net, "shoe.png"), "features.png")
    viz.plot_gradcam(viz.gradcam(net, "shoe.png", target="Sneaker"), "gradcam.png")
    viz.plot_errors(viz.errors(net), "errors.png")
    viz.plot_receptive_field(viz.receptive_field(net, "shoe.png"), "rf.png")

=================== ======================================================================================
filters             the kernels of the first convolution (colour patches for RGB) or of any convolution
features            every stage's feature maps for one input, with shapes; a net beside its plain twin
gradcam             Grad-CAM (Selvaraju et al. 2017) at the last stage that is still a map
errors              the misclassified images of a split, with the confusion matrix
receptive_field     a unit's theoretical receptive field (a rectangle) and its effective one (a gradient map)
=================== ======================================================================================
"""

from .errors import ErrorGallery, errors, plot_errors
from .features import FeatureMaps, StageMaps, features, plot_features
from .filters import FilterGrid, filters, plot_filters
from .gradcam import GradCam, gradcam, plot_gradcam
from .layers import conv_layers, default_layer, map_shapes, stage_shapes
from .receptive_field import ReceptiveField, plot_receptive_field, receptive_field
from .trained import TrainedNet, check_twin, load

__all__ = [
    "TrainedNet", "load", "check_twin", "FilterGrid", "filters", "plot_filters", "FeatureMaps", "StageMaps",
    "features", "plot_features", "GradCam", "gradcam", "plot_gradcam", "ErrorGallery", "errors", "plot_errors",
    "ReceptiveField", "receptive_field", "plot_receptive_field", "default_layer", "stage_shapes", "map_shapes",
    "conv_layers",
]  # fmt: skip
