"""What each API call computes for one loaded model and one image, as JSON-ready dicts: the top-5 classes,
the feature maps of every stage, the Grad-CAM map, the layer table. Run on a worker thread (engine.py).

The image goes through the run's own preprocessing (``record.preprocessing.image``: the one path that
``classicnets eval`` and ``predict`` use), so a test image uploaded here is classified exactly as ``eval``
counted it. A drawing is sent as a PNG of the canvas and takes the same path: resized to the dataset's
native size, padded or resized to the model's input, normalised. The feature maps and Grad-CAM are
``classicnets.viz``'s (what ``classicnets show`` draws), turned into PNG data URLs here.
"""

from __future__ import annotations

import io
import math
import time
from typing import Any

import numpy as np
import torch

from . import pictures
from .engine import Loaded
from .errors import ApiError

TOPK = 5
ALL_CHANNELS = 1 << 16  # ask viz.features for every channel: a 1x1 stage is shown whole, a map stage cut here


def model_input(loaded: Loaded, data: bytes) -> torch.Tensor:
    """The encoded image ``data`` as this model's input (1, C, H, W), prepared as its test images were."""
    try:
        return loaded.record.preprocessing.image(io.BytesIO(data)).unsqueeze(0)
    except ValueError:  # read_image: a header that opened but pixels that do not decode
        raise ApiError(400, "the image cannot be decoded (truncated or corrupt); send an intact PNG or JPEG") from None


def _timed(result: dict[str, Any], started: float) -> dict[str, Any]:
    result["ms"] = round((time.perf_counter() - started) * 1000, 2)
    return result


def _top(loaded: Loaded, probs: torch.Tensor) -> list[dict[str, Any]]:
    values, indices = probs.topk(min(TOPK, probs.numel()))
    classes = loaded.record.classes
    pairs = zip(values.tolist(), indices.tolist())
    return [{"class": classes[i], "index": i, "prob": round(float(v), 6)} for v, i in pairs]


def predict(loaded: Loaded, data: bytes) -> dict[str, Any]:
    """The top-5 classes with probabilities, with the run's autocast and test-time flip (as ``eval``); with
    the onnxruntime engine, in ONNX Runtime (fp32)."""
    from ..train.step import predict_logits

    started = time.perf_counter()
    x = model_input(loaded, data)
    if loaded.fast is not None:
        probs = predict_logits(loaded.fast, x, None, loaded.record.tta_flip).softmax(1)[0]
        return _timed({"model": loaded.entry.id, "top": _top(loaded, probs)}, started)
    with loaded.borrow() as model, torch.no_grad():
        probs = predict_logits(model, x, loaded.amp, loaded.record.tta_flip).softmax(1)[0]
    return _timed({"model": loaded.entry.id, "top": _top(loaded, probs)}, started)


def features(loaded: Loaded, data: bytes, max_channels: int) -> dict[str, Any]:
    """Every stage's output (the model card's stages, ``classicnets.viz.features``) for the image: its shape
    and its first ``max_channels`` maps as PNGs; a 1x1 stage (LeNet-5's C5) as one image of all its units."""
    from ..viz import TrainedNet
    from ..viz import features as stage_maps

    started = time.perf_counter()
    x = model_input(loaded, data)
    with loaded.borrow() as model:
        maps = stage_maps(TrainedNet(model, loaded.record, loaded.entry.label), x, max_channels=ALL_CHANNELS)
    stages = []
    for stage in maps.stages:
        c, h, w = stage.shape
        if h * w > 1:
            images, kind = pictures.feature_tiles(stage.maps, max_channels), "maps"
        else:
            images, kind = [pictures.vector_tile(stage.maps.reshape(-1))], "units"
        stages.append({"name": stage.name, "label": stage.label, "shape": [c, h, w], "kind": kind, "images": images,
                       "shown": len(images) if kind == "maps" else c})  # fmt: skip
    seen = pictures.png_url(np.round(maps.picture * 255).astype(np.uint8))
    note = loaded.record.preprocessing.note()
    return _timed({"model": loaded.entry.id, "input": {"shape": list(x.shape[1:]), "image": seen, "note": note},
                   "stages": stages}, started)  # fmt: skip


def gradcam(loaded: Loaded, data: bytes, target: str | None) -> dict[str, Any]:
    """The Grad-CAM map (``classicnets.viz.gradcam``) for ``target`` (default: the predicted class) at the
    last stage that is still a map, over the input."""
    from ..viz import TrainedNet
    from ..viz import gradcam as grad_cam
    from ..viz.layers import stage_label

    started = time.perf_counter()
    x = model_input(loaded, data)
    index = _class_index(loaded, target)
    with loaded.borrow() as model:
        cam = grad_cam(TrainedNet(model, loaded.record, loaded.entry.label), x, target=index)
        label = stage_label(model, cam.layer)
    classes, probs = loaded.record.classes, cam.probs.tolist()
    seen = np.round(cam.picture * 255).astype(np.uint8)
    return _timed({
        "model": loaded.entry.id, "layer": cam.layer, "layer_label": label, "layer_shape": list(cam.layer_shape),
        "target": {"class": classes[cam.target], "index": cam.target, "prob": round(probs[cam.target], 6)},
        "predicted": {"class": classes[cam.predicted], "index": cam.predicted, "prob": round(probs[cam.predicted], 6)},
        "overlay": pictures.overlay(seen, cam.heatmap),
        "heatmap": pictures.heat_tile(cam.raw / cam.raw.max() if cam.raw.max() > 0 else cam.raw),
    }, started)  # fmt: skip


def _class_index(loaded: Loaded, target: str | None) -> int | None:
    if target is None:
        return None
    classes = list(loaded.record.classes)
    if target in classes:
        return classes.index(target)
    if target.isdigit() and int(target) < len(classes):
        return int(target)
    raise ApiError(400, f"unknown class {target[:40]!r}; this model's classes are {', '.join(classes)} (or an "
                        f"index 0..{len(classes) - 1})")  # fmt: skip


def layers(loaded: Loaded) -> dict[str, Any]:
    """The layer table of the model at its trained input size: shapes, parameters with the formula behind
    each count, MACs, receptive fields (``classicnets.summary``, on the meta device: no arithmetic)."""
    if "layers" not in loaded.cache:
        from ..summary import summary

        with loaded.borrow() as model:
            table = summary(model, loaded.record.input_size).to_dict()
        for row in table["rows"]:
            for key in ("stride", "receptive_field"):  # JSON has no infinity
                if isinstance(row[key], float) and not math.isfinite(row[key]):
                    row[key] = None
        table.update(model=loaded.entry.id, input_size=list(loaded.record.input_size))
        loaded.cache["layers"] = table
    return loaded.cache["layers"]

