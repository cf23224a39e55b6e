"""classicnets: the classic convolutional networks (LeNet-5, AlexNet, VGG, ResNet), faithful to the papers,
runnable and understandable."""

from .models import ClassicNet, ModelCard, create_model, list_models, model_card

__version__ = "0.1.0"
__all__ = ["ClassicNet", "ModelCard", "create_model", "list_models", "model_card", "__version__"]
