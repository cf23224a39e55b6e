"""The model zoo. Importing this package registers every model, in the order the papers appeared."""

# isort: off
from . import lenet, alexnet, vgg, resnet, cifar_resnet  # noqa: F401  (registration side effects)

# isort: on
from .base import ClassicNet
from .registry import ModelCard, create_model, list_models, model_card, register_model

__all__ = ["ClassicNet", "ModelCard", "create_model", "list_models", "model_card", "register_model"]
