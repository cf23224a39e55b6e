"""Arrays as the small PNG images the page shows (``data:`` URLs): feature maps, the model's view of the
input, and the Grad-CAM heat map over it. The page scales them up with ``image-rendering: pixelated``, so
the pixels it shows are the model's own."""

from __future__ import annotations

import base64
import io
import math

import numpy as np

OVERLAY_SCALE = 4  # the Grad-CAM overlay is drawn at 4x the input (a 32x32 input: 128x128), the map smooth


def png_url(pixels: np.ndarray) -> str:
    """uint8 (H, W) grey or (H, W, 3) RGB -> ``data:image/png;base64,...``."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Stretch ``values`` to 0..255 by its own minimum and maximum (a constant map is black)."""
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-12:
        return np.zeros(values.shape, np.uint8)
    return np.round((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def feature_tiles(maps: np.ndarray, limit: int) -> list[str]:
    """The first ``limit`` channels of a stage's output (C, H, W), each stretched on its own, as PNGs."""
    return [png_url(to_uint8(m)) for m in maps[:limit]]


def vector_tile(values: np.ndarray) -> str:
    """A stage whose output is 1x1 (LeNet-5's C5: 120 units) as one image, its units in a near-square grid
    (row by row; the last row padded black)."""
    n = values.size
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.zeros(rows * cols, np.uint8)
    grid[:n] = to_uint8(values.reshape(-1))
    return png_url(grid.reshape(rows, cols))


def jet(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (H, W) -> uint8 RGB (H, W, 3) on the jet colour map (blue low, red high)."""
    v = np.clip(values, 0, 1)[..., None]
    rgb = np.clip(1.5 - np.abs(4 * v - np.array([3.0, 2.0, 1.0])), 0, 1)
    return np.round(rgb * 255).astype(np.uint8)


def overlay(pixels: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> str:
    """The Grad-CAM ``heat`` map (H, W) in [0, 1] over the input picture, both at OVERLAY_SCALE x: the
    picture's pixels kept square (nearest), the map smooth (bilinear)."""
    from PIL import Image

    h, w = heat.shape
    size = (w * OVERLAY_SCALE, h * OVERLAY_SCALE)
    base = Image.fromarray(pixels).convert("RGB").resize(size, Image.NEAREST)
    smooth = np.asarray(Image.fromarray(heat.astype(np.float32)).resize(size, Image.BILINEAR))
    mixed = (1 - alpha) * np.asarray(base, np.float32) + alpha * jet(smooth).astype(np.float32)
    return png_url(np.clip(np.round(mixed), 0, 255).astype(np.uint8))


def heat_tile(heat: np.ndarray) -> str:
    """The map alone, on the jet colour map, at its own resolution."""
    return png_url(jet(heat))
