"""Where a unit of a layer looks in the input: the theoretical receptive field, traced through every op.

Along each spatial axis a feature map is a lattice over the input: unit ``i`` sees input pixels
``lo + i * jump`` to ``hi + i * jump`` (inclusive; outside ``0..size-1`` is padding). A convolution or
pooling window (kernel ``k``, stride ``s``, padding ``p``, dilation ``d``) makes

    lo' = lo - p * jump,   hi' = hi + ((k - 1) * d - p) * jump,   jump' = jump * s

(Araujo, Norris, Sim, "Computing Receptive Fields of Convolutional Neural Networks", Distill 2019). Where
paths meet (a residual addition) the field is the union of theirs, so a ResNet unit's field is the
widest path's (He et al.'s shortcuts never widen it). ``classicnets.summary`` tracks the field's size the
same way; the views also need where it lies, hence ``lo``/``hi``. A ``TorchFunctionMode`` sees every op,
so the trace follows the tensors (a shortcut reads the block input), not the order of the modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary


@dataclass(frozen=True)
class Axis:
    """Unit ``i`` of the map sees input pixels ``lo + i * jump`` .. ``hi + i * jump`` along this axis."""

    lo: float
    hi: float
    jump: float

    @property
    def size(self) -> float:
        return self.hi - self.lo + 1

    def window(self, k: int, s: int, p: int, d: int) -> Axis:
        return Axis(self.lo - p * self.jump, self.hi + ((k - 1) * d - p) * self.jump, self.jump * s)


Field = tuple[Axis, Axis] | None  # (rows, columns); None: the unit sees the whole input (after global pooling)

_WINDOWS = {  # op name -> positions of (kernel, stride, padding, dilation) after the input; None: not an argument
    "conv2d": (None, 3, 4, 5),  # kernel from the weight (argument 1)
    "max_pool2d": (1, 2, 3, 4),
    "max_pool2d_with_indices": (1, 2, 3, 4),
    "avg_pool2d": (1, 2, 3, None),
}
_KEYWORDS = ("kernel_size", "stride", "padding", "dilation")


def _window(name: str, args: tuple, kwargs: dict) -> tuple[tuple[int, int], ...]:
    """(kernel, stride, padding, dilation) of a conv or pooling call, each as (rows, columns)."""
    where = _WINDOWS[name]
    k, s, p, d = (args[i] if i is not None and len(args) > i else kwargs.get(key) for i, key in zip(where, _KEYWORDS))
    kernel = tuple(args[1].shape[2:]) if name == "conv2d" else _pair(k, 1)
    dilation = _pair(d, 1)
    if isinstance(p, str):  # "valid", or "same" (stride 1): the span split evenly, the extra pixel after
        p = (0, 0) if p == "valid" else tuple((kk - 1) * dd // 2 for kk, dd in zip(kernel, dilation))
    stride = _pair(s, 1) if name == "conv2d" else (_pair(s, 0) if s else kernel)  # pooling: stride None = kernel
    return kernel, stride, _pair(p, 0), dilation


def _pair(v: object, default: int) -> tuple[int, int]:
    if v is None or (isinstance(v, (tuple, list)) and len(v) == 0):
        return (default, default)
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[-1]))
    return (int(v), int(v))


class _Tracer(TorchFunctionMode):
    """Carries a :data:`Field` from the input to every tensor computed from it (weak references: a freed
    tensor drops its entry, so a recycled ``id`` never inherits a stale field)."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor) and t in self.fields]
        if outputs and inputs:
            new = self._rule(getattr(func, "__name__", ""), args, kwargs, inputs, outputs[0])
            for t in outputs:
                self.fields[t] = new
        return out

    def _rule(self, name: str, args: tuple, kwargs: dict, inputs: list[torch.Tensor], y: torch.Tensor) -> Field:
        x = inputs[0]
        field = self.fields[x]
        if field is not None and name in _WINDOWS and args and args[0] is x:
            k, s, p, d = _window(name, args, kwargs)
            return (field[0].window(k[0], s[0], p[0], d[0]), field[1].window(k[1], s[1], p[1], d[1]))
        if field is not None and name == "__getitem__" and args and args[0] is x:
            return _sliced(field, args[1] if len(args) > 1 else None, x, y)
        if field is not None and name == "pad" and args and args[0] is x:
            pad = list(args[1] if len(args) > 1 else kwargs["pad"]) + [0] * 4
            rows, cols = field
            return (Axis(rows.lo - pad[2] * rows.jump, rows.hi - pad[2] * rows.jump, rows.jump),
                    Axis(cols.lo - pad[0] * cols.jump, cols.hi - pad[0] * cols.jump, cols.jump))  # fmt: skip
        return self._merge(inputs, y)

    def _merge(self, inputs: list[torch.Tensor], y: torch.Tensor) -> Field:
        """Element-wise ops keep the field; where paths meet it is the union; anything that changes the map's
        size otherwise (flatten, global or adaptive pooling, resizing) gives the whole input."""
        fields = [self.fields[t] for t in inputs if t.dim() == 4 and y.dim() == 4 and t.shape[2:] == y.shape[2:]]
        if not fields or any(f is None for f in fields):
            return None
        rows = [f[0] for f in fields]
        cols = [f[1] for f in fields]
        assert len({a.jump for a in rows}) == 1 and len({a.jump for a in cols}) == 1, "paths on different lattices"
        return (Axis(min(a.lo for a in rows), max(a.hi for a in rows), rows[0].jump),
                Axis(min(a.lo for a in cols), max(a.hi for a in cols), cols[0].jump))  # fmt: skip


def _sliced(field: tuple[Axis, Axis], index: object, x: torch.Tensor, y: torch.Tensor) -> Field:
    """``x[:, :, ::2, ::2]`` (ResNet shortcut option A) keeps unit 0 and multiplies the jump by the step."""
    if not isinstance(index, tuple) or len(index) != 4 or not all(isinstance(i, slice) for i in index):
        return field if y.shape[2:] == x.shape[2:] else None
    axes = []
    for axis, sl in zip(field, index[2:]):
        start, step = sl.start or 0, sl.step or 1
        axes.append(Axis(axis.lo + start * axis.jump, axis.hi + start * axis.jump, axis.jump * step))
    return tuple(axes)  # type: ignore[return-value]


@torch.no_grad()
def trace(model: nn.Module, x: torch.Tensor, layer: str) -> Field:
    """The receptive-field lattice of ``layer``'s output (its last call) for the input ``x`` (1, C, H, W)."""
    tracer = _Tracer()
    seen: list[Field] = []

    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        seen.append(tracer.fields.get(out))

    handle = model.get_submodule(layer).register_forward_hook(hook)
    try:
        with tracer:
            tracer.fields[x] = (Axis(0, 0, 1), Axis(0, 0, 1))
            model(x)
    finally:
        handle.remove()
    assert seen, f"{layer} did not run"
    return seen[-1]


def box(field: Field, y: int, x: int, height: int, width: int) -> tuple[int, int, int, int]:
    """The pixels (top, left, bottom, right), inclusive and unclipped, that unit (y, x) sees; the whole
    ``height`` x ``width`` input when the field is global."""
    if field is None:
        return (0, 0, height - 1, width - 1)
    rows, cols = field
    top, bottom = rows.lo + y * rows.jump, rows.hi + y * rows.jump
    left, right = cols.lo + x * cols.jump, cols.hi + x * cols.jump
    assert all(float(v).is_integer() for v in (top, bottom, left, right)), "a fractional receptive field"
    return (int(top), int(left), int(bottom), int(right))




def upsample(grid: torch.Tensor, field: Field, size: tuple[int, int]) -> torch.Tensor:
    """A map ``grid`` (h, w) drawn over the input (size[0], size[1]): each unit at the centre of its receptive
    field, bilinear between the centres, the edge units' values beyond them.

    A plain resize stretches the map over the whole image, which is right only for "same"-padded nets: the
    units of LeNet-5's unpadded S4 are centred on pixels 7.5, 11.5, .., 23.5 of its 32x32 input, not spread
    over 0..31. Without a field (after global pooling) the map is resized.
    """
    if field is None:
        return F.interpolate(grid[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    coords = []
    for axis, n, length in zip(field, grid.shape, size):
        u = (torch.arange(length, dtype=torch.float64) - (axis.lo + axis.hi) / 2) / axis.jump  # in units
        coords.append(2 * u / (n - 1) - 1 if n > 1 else torch.zeros(length, dtype=torch.float64))
    gy, gx = torch.meshgrid(coords[0], coords[1], indexing="ij")
    where = torch.stack([gx, gy], -1)[None].to(grid.dtype)  # (1, H, W, 2), x first as grid_sample wants
    return F.grid_sample(grid[None, None], where, mode="bilinear", padding_mode="border", align_corners=True)[0, 0]
