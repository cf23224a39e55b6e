"""torch.hub entry points: every classicnets model, with the weights that ship inside the package.

    import torch
    model = torch.hub.load("path/to/classicnets", "resnet20", source="local", pretrained=True)   # offline
    model = torch.hub.load("path/to/classicnets", "lenet5", source="local", pretrained="mnist-5k")

``pretrained=True`` loads the model's default shipped weights (``classicnets weights`` lists them),
``pretrained="<dataset>"`` a given one, ``pretrained=False`` (the default) a freshly initialised net; any
other keyword goes to ``classicnets.create_model``. The weights' record is ``model.pretrained_cfg``.
"""

dependencies = ["torch", "torchvision", "safetensors", "yaml"]


def _entry(name: str):
    def entry(pretrained: bool | str = False, **kwargs):
        from classicnets import create_model

        return create_model(name, pretrained=pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = f"classicnets' {name}; ``pretrained=True`` or a dataset name loads its shipped weights."
    return entry


def _register() -> list[str]:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # torch.hub imports this file from the checkout
    from classicnets import list_models

    names = list_models()
    globals().update({name: _entry(name) for name in names})
    return names


__all__ = _register()
