"""classicnets: the classic convolutional networks (LeNet-5, AlexNet, VGG, ResNet), faithful to the papers,
runnable and understandable.

    import classicnets as cn
    model = cn.create_model("resnet20", num_classes=10, in_chans=1)

The public names are imported on first use (PEP 562), so ``import classicnets`` and ``classicnets --help``
do not load torch; the training commands re-exec themselves under jemalloc before torch is imported.
"""

__version__ = "0.1.0"
__all__ = ["ClassicNet", "ModelCard", "create_model", "list_models", "model_card", "__version__"]


def __getattr__(name: str):
    if name in __all__:
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module 'classicnets' has no attribute {name!r}")
