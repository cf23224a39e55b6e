"""The model zoo. Importing this package registers every model, in the order the papers appeared."""

# isort: off
from . import lenet, alexnet, vgg, resnet, cifar_resnet, speedrun  # noqa: F401  (registration side effects)

# isort: on
from .base import ClassicNet
from .registry import PARAMS_KINDS, ModelCard, StageInfo, create_model, list_models, model_card, register_model

__all__ = [
    "PARAMS_KINDS",
    "ClassicNet",
    "ModelCard",
    "StageInfo",
    "create_model",
    "list_models",
    "model_card",
    "register_model",
]
