"""Layer-by-layer summary of a model: output shapes, parameters (with the formula behind each count),
multiply-accumulates and receptive field, from one forward pass with batch size 1.

By default the pass runs on the ``meta`` device: no memory for weights or activations, no arithmetic,
so VGG-16 summarises in milliseconds. Receptive fields follow the tensors, not the row order, so a
ResNet shortcut is measured from the block input it really reads.
"""

from __future__ import annotations

import ast
import copy
import csv
import io
import itertools
import json
import math
import operator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any, Iterator

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from .models.base import count_skip_connections

GLOBAL = "global"  # receptive field of a unit that sees the whole input (after global pooling / flatten)

Meta = tuple[float, float | None]  # (receptive field, jump); rf = inf means global, then jump is None

_CONV = {"conv1d", "conv2d", "conv3d"}
_CONV_T = {"conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}
_POOL = {
    "max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices",
    "max_pool3d_with_indices", "avg_pool1d", "avg_pool2d", "avg_pool3d",
}  # fmt: skip
_ADAPTIVE = {
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
    "adaptive_max_pool2d", "adaptive_max_pool3d", "adaptive_max_pool1d_with_indices",
    "adaptive_max_pool2d_with_indices",
}  # fmt: skip


@dataclass
class Row:
    """One executed leaf layer. ``formula`` evaluates to ``params + non_trainable``."""

    name: str
    type: str
    output_shape: tuple[int, ...] | None  # without the batch dim; None: owns parameters but never ran
    params: int  # trainable parameters owned by this layer (shared ones counted at first use)
    non_trainable: int
    formula: str
    macs: int
    receptive_field: int | str | None  # input pixels (along H); "global"; None when not input-derived
    stride: int | float | None  # the jump: distance in input pixels between neighbouring outputs


@dataclass
class Summary:
    """What :func:`summary` measured, with text, CSV and JSON renderers."""

    rows: list[Row]
    total_params: int
    non_trainable_params: int
    total_macs: int
    input_size: tuple[int, ...]
    output_shape: tuple[int, ...]
    paper_params: int | None = None
    skip_connections: int = 0
    params_kind: str = "paper"  # where paper_params comes from: a key of models.registry.PARAMS_KINDS
    model_name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        names = [f.name for f in Row.__dataclass_fields__.values()]
        writer.writerow(names)
        for row in self.rows:
            writer.writerow(_cell(getattr(row, n)) for n in names)
        return buf.getvalue()

    def paper_note(self) -> str:
        """``paper: 60,000 (matches)``, ``torchvision: 138,357,544 (matches)``, ``... (differs by +357,544)``
        or ``''``: the reference count, labelled with where it comes from (the card's ``params_kind``)."""
        if self.paper_params is None:
            return ""
        diff = self.total_params - self.paper_params
        verdict = "matches" if diff == 0 else f"differs by {diff:+,}"
        label = {"torchvision": "torchvision", "exact-of-rounded": "exact count of the paper's layout",
                 "exact-of-reference": "reference layout"}.get(self.params_kind, "paper")  # fmt: skip
        return f"{label}: {self.paper_params:,} ({verdict})"

    def to_table(self) -> str:
        frozen = any(r.non_trainable for r in self.rows)
        header = ["Layer", "Type", "Output shape", "Params"] + (["Frozen"] if frozen else [])
        header += ["Formula", "MACs", "RF", "Jump"]
        body = [_table_cells(r, frozen) for r in self.rows]
        widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
        numeric = {"Params", "Frozen", "MACs", "RF", "Jump"}

        def fmt(cells: list[str]) -> str:
            parts = [c.rjust(w) if h in numeric else c.ljust(w) for c, w, h in zip(cells, widths, header)]
            return "  ".join(parts).rstrip()

        rule = "-" * len(fmt(["-" * w for w in widths]))
        lines = [f"{self.model_name}  input {_shape(self.input_size)}", rule, fmt(header), rule]
        lines += [fmt(cells) for cells in body] + [rule]
        note = self.paper_note()
        lines.append(f"Trainable params:     {self.total_params:,}" + (f"   {note}" if note else ""))
        lines.append(f"Non-trainable params: {self.non_trainable_params:,}")
        lines.append(f"Skip connections:     {self.skip_connections}")
        lines.append(f"Total MACs:           {human(self.total_macs)} ({self.total_macs:,})")
        lines.append(f"Output shape:         {_shape(self.output_shape)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_table()


def _cell(value: Any) -> Any:
    if isinstance(value, tuple):
        return _shape(value)
    return "" if value is None else value


def _shape(shape: tuple[int, ...] | None) -> str:
    return "-" if shape is None else "x".join(str(d) for d in shape) or "scalar"


def _table_cells(r: Row, frozen: bool) -> list[str]:
    stride = "" if r.stride is None else f"{r.stride:g}"
    rf = "" if r.receptive_field is None else str(r.receptive_field)
    cells = [r.name, r.type, _shape(r.output_shape), f"{r.params:,}"]
    cells += [f"{r.non_trainable:,}"] if frozen else []
    return cells + [r.formula, f"{r.macs:,}", rf, stride]


def human(n: float) -> str:
    """``15470264320 -> '15.47 G'``."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:g}"


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def eval_formula(formula: str) -> int:
    """Evaluate a parameter formula (integers, ``+ - * /`` and parentheses only); ``''`` is 0."""
    if not formula.strip():
        return 0

    def ev(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        raise ValueError(f"formula {formula!r} may only hold integers, + - * / and parentheses")

    value = ev(ast.parse(formula, mode="eval").body)
    if value.denominator != 1:
        raise ValueError(f"formula {formula!r} is not a whole number: {value}")
    return int(value)


# ----------------------------------------------------------------------------------------------------
# Receptive field and MAC tracking
# ----------------------------------------------------------------------------------------------------


def _first(v: Any) -> int:
    return int(v[0]) if isinstance(v, (tuple, list)) else int(v)


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any = None) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


def _tensors(obj: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(obj)[0] if isinstance(t, torch.Tensor)]


def _spatial(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape[2:])


def _window(meta: Meta, k: int, s: float, d: int, pool_collapses: bool) -> Meta:
    """r_out = r_in + (k-1)*d*j_in, j_out = j_in*s; a pooling window over the whole map is global."""
    rf, jump = meta
    if jump is None or pool_collapses:
        return (math.inf, None)
    return (rf + (k - 1) * d * jump, jump * s)


def _collapses(x: torch.Tensor, y: torch.Tensor, k: int) -> bool:
    """A pooling whose single output window spans the whole (non-trivial) input map."""
    sx, sy = _spatial(x), _spatial(y)
    return bool(sx) and math.prod(sx) > 1 and all(d == 1 for d in sy) and k >= sx[0]


def _adaptive(meta: Meta, x: torch.Tensor, y: torch.Tensor) -> Meta:
    """Adaptive pooling: identity if sizes agree, global if it pools to 1, else its widest bin."""
    n, o = x.shape[2], y.shape[2]
    if _spatial(x) == _spatial(y):
        return meta
    if all(d == 1 for d in _spatial(y)):
        return (math.inf, None)
    k = max(math.ceil((i + 1) * n / o) - (i * n) // o for i in range(o))
    s = n // o if n % o == 0 else n / o
    return _window(meta, k, s, 1, False)


class _Tracker(TorchFunctionMode):
    """Propagates (rf, jump) from the inputs to the outputs of every torch op and counts conv/linear MACs.

    The metadata is keyed by tensor identity through weak references: a freed tensor drops its entry,
    so a recycled ``id()`` can never inherit stale metadata, and intermediates are not kept alive.
    """

    def __init__(self) -> None:
        super().__init__()
        self.meta: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.macs = 0

    def get(self, t: torch.Tensor) -> Meta | None:
        return self.meta.get(t)

    def set(self, t: torch.Tensor, meta: Meta) -> None:
        self.meta[t] = meta

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        inputs = _tensors((args, kwargs))
        outputs = _tensors(out)
        if not outputs:
            return out
        self.macs += _op_macs(name, args, kwargs, outputs[0])
        metas = [(m, t) for t in inputs if (m := self.get(t)) is not None]
        if not metas:
            return out
        meta, src = max(metas, key=lambda mt: (mt[0][0], mt[0][1] or 0))
        new = self._rule(name, args, kwargs, meta, src, outputs[0])
        for t in outputs:
            self.set(t, new)
        return out

    def _rule(self, name: str, args: tuple, kwargs: dict, meta: Meta, x: torch.Tensor, y: torch.Tensor) -> Meta:
        """The (rf, jump) of an op's output from its widest-seeing input ``x``."""
        if name in _CONV and args and args[0] is x:
            k = int(_arg(args, kwargs, 1, "weight").shape[2])
            s, d = _first(_arg(args, kwargs, 3, "stride", 1)), _first(_arg(args, kwargs, 5, "dilation", 1))
            return _window(meta, k, s, d, False)
        if name in _POOL and args and args[0] is x:
            k = _first(_arg(args, kwargs, 1, "kernel_size"))
            s = _arg(args, kwargs, 2, "stride") or k  # None or () means stride = kernel
            d = _arg(args, kwargs, 4, "dilation", 1) if "max" in name else 1
            return _window(meta, k, _first(s), _first(d), _collapses(x, y, k))
        if name in _ADAPTIVE and args and args[0] is x:
            return _adaptive(meta, x, y)
        if name == "__getitem__":
            return _getitem(meta, args)
        return _reshape(meta, x, y)


def _getitem(meta: Meta, args: tuple) -> Meta:
    """``x[:, :, ::2, ::2]`` (ResNet option-A shortcut) multiplies the jump by the step."""
    index = args[1] if len(args) > 1 else None
    rf, jump = meta
    if jump is None or not isinstance(index, tuple) or len(index) < 3 or Ellipsis in index:
        return meta
    step = index[2].step if isinstance(index[2], slice) else None
    return (rf, jump * step) if step else meta


def _reshape(meta: Meta, x: torch.Tensor, y: torch.Tensor) -> Meta:
    """Element-wise ops keep the metadata; flattening or reducing a map bigger than 1x1 makes it global."""
    sx = _spatial(x)
    if x.dim() < 3 or math.prod(sx) <= 1 or y.dim() > x.dim():
        return meta
    if y.dim() == x.dim():
        collapsed = all(d == 1 for d in _spatial(y))  # e.g. x.mean((2, 3), keepdim=True)
        return (math.inf, None) if collapsed else meta
    keeps_map = y.dim() >= len(sx) and tuple(y.shape[-len(sx) :]) == sx  # e.g. x.mean(1)
    return meta if keeps_map else (math.inf, None)


def _op_macs(name: str, args: tuple, kwargs: dict, y: torch.Tensor) -> int:
    """MACs of one conv / linear call, per sample: conv = out_elements * (cin/groups) * prod(kernel)."""
    if name in _CONV or name == "linear":
        per_sample = y.numel() // y.shape[0] if y.dim() > 1 and y.shape[0] else y.numel()
        return per_sample * math.prod(_arg(args, kwargs, 1, "weight").shape[1:])
    if name in _CONV_T:
        x, w = args[0], _arg(args, kwargs, 1, "weight")
        return (x.numel() // x.shape[0]) * math.prod(w.shape[1:])
    return 0


# ----------------------------------------------------------------------------------------------------
# Parameters and formulas
# ----------------------------------------------------------------------------------------------------


def _formula(module: nn.Module) -> str:
    """The arithmetic behind the module's parameter count, written with its actual numbers."""
    custom = getattr(module, "param_formula", None)
    if callable(custom):
        return custom()
    params = list(module.parameters())
    if not params:
        return ""
    if isinstance(module, nn.modules.conv._ConvNd):
        k = "*".join(str(d) for d in module.kernel_size)
        cin = module.in_channels if module.groups == 1 else f"({module.in_channels}/{module.groups})"
        bias = f" + {module.out_channels}" if module.bias is not None else ""
        return f"{k}*{cin}*{module.out_channels}{bias}"
    if isinstance(module, nn.Linear):
        bias = f" + {module.out_features}" if module.bias is not None else ""
        return f"{module.in_features}*{module.out_features}{bias}"
    return _generic_formula(params)


def _generic_formula(params: list[torch.Tensor]) -> str:
    """``2*64`` for weight + bias of one length (BatchNorm, LayerNorm), else the product of each shape."""
    if all(p.dim() == 1 for p in params) and len({p.numel() for p in params}) == 1:
        n = params[0].numel()
        return f"{len(params)}*{n}" if len(params) > 1 else str(n)
    return " + ".join("*".join(str(d) for d in p.shape) or "1" for p in params)


def _count(params: list[nn.Parameter]) -> tuple[int, int]:
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return trainable, sum(p.numel() for p in params) - trainable


def _leaves(model: nn.Module) -> dict[nn.Module, str]:
    """Modules without children, plus modules with ``param_formula()`` (their children are folded in)."""
    leaves: dict[nn.Module, str] = {}
    folded: list[str] = []
    for name, m in model.named_modules():
        if any(p == "" or name.startswith(p + ".") for p in folded):
            continue
        if callable(getattr(m, "param_formula", None)):
            leaves[m] = name
            folded.append(name)
        elif not any(True for _ in m.children()):
            leaves[m] = name
    return leaves


def _params_kind(model: nn.Module) -> str:
    name = getattr(model, "model_name", None)
    if getattr(model, "paper_params", None) is not None or not isinstance(name, str):
        return "paper"
    try:
        from classicnets.models.registry import model_card

        return model_card(name).params_kind
    except (ImportError, ValueError):
        return "paper"


def _paper_params(model: nn.Module) -> int | None:
    own = getattr(model, "paper_params", None)
    if own is not None:
        return int(own)
    name = getattr(model, "model_name", None)
    if not isinstance(name, str):
        return None
    try:
        from classicnets.models.registry import model_card

        return model_card(name).paper_params
    except (ImportError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------------
# The pass
# ----------------------------------------------------------------------------------------------------


def _device_of(model: nn.Module) -> torch.device:
    for t in itertools.chain(model.parameters(), model.buffers()):
        return t.device
    return torch.device("cpu")


def _dtype_of(model: nn.Module) -> torch.dtype:
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` on the meta device that never copies (or allocates) the weights.

    Pre-filling deepcopy's memo with meta stand-ins for every parameter and buffer skips their data:
    VGG-16 copies in milliseconds instead of duplicating 528 MB.
    """
    memo: dict[int, Any] = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        stand_in = torch.empty_like(t, device="meta")
        if isinstance(t, nn.Parameter):
            stand_in = nn.Parameter(stand_in, requires_grad=t.requires_grad)
        memo[id(t)] = stand_in
    return copy.deepcopy(model, memo)


def _runnable(model: nn.Module, device: str | torch.device | None) -> nn.Module:
    own = _device_of(model)
    if device is not None and torch.device(device).type == "meta":
        return model if own.type == "meta" else meta_copy(model)
    if device is not None and torch.device(device) != own:
        raise ValueError(f"the model is on {own}, not {device}; move it there first or pass device=None")
    return model


def _input_size(model: nn.Module, input_size: tuple[int, ...] | None) -> tuple[int, ...]:
    size = input_size if input_size is not None else getattr(model, "default_input_size", None)
    if size is None:
        raise ValueError(f"{type(model).__name__} has no default_input_size; pass input_size=(C, H, W)")
    if not all(isinstance(d, int) and d > 0 for d in size):
        raise ValueError(f"input_size must be positive integers such as (3, 224, 224), got {size!r}")
    return tuple(size)


@dataclass
class _Recorder:
    """Forward hooks on the leaves: one Row per call, MACs counted between pre-hook and hook."""

    tracker: _Tracker
    names: dict[nn.Module, str]
    rows: list[Row] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)  # ids of parameters already attributed
    starts: list[int] = field(default_factory=list)
    leaf_macs: int = 0  # MACs the tracker counted inside leaves (the rest ran outside any leaf)

    def pre(self, module: nn.Module, args: tuple) -> None:
        self.starts.append(self.tracker.macs)

    def post(self, module: nn.Module, args: tuple, output: Any) -> None:
        counted = self.tracker.macs - self.starts.pop()
        self.leaf_macs += counted
        x, y = next(iter(_tensors(args)), None), next(iter(_tensors(output)), None)
        if x is not None and y is not None:
            self._window_from_attributes(module, x, y)
        macs = counted
        if callable(getattr(module, "macs", None)) and x is not None and y is not None:
            macs = int(module.macs(tuple(x.shape[1:]), tuple(y.shape[1:])))
        self.rows.append(self._row(module, y, macs))

    def _window_from_attributes(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        """Conv/pool-like layers (``kernel_size`` and ``stride`` attributes) set the output's (rf, jump)."""
        k, s = getattr(module, "kernel_size", None), getattr(module, "stride", None)
        meta = self.tracker.get(x)
        transposed = isinstance(module, nn.modules.conv._ConvTransposeNd)  # upsamples: not modelled
        if k is None or s is None or meta is None or x.dim() < 3 or transposed:
            return
        k, s, d = _first(k), _first(s), _first(getattr(module, "dilation", 1))
        pool = "pool" in type(module).__name__.lower()
        self.tracker.set(y, _window(meta, k, s, d, pool and _collapses(x, y, k)))

    def _row(self, module: nn.Module, y: torch.Tensor | None, macs: int) -> Row:
        fresh = [p for p in module.parameters() if id(p) not in self.seen]
        self.seen.update(id(p) for p in fresh)
        trainable, frozen = _count(fresh)
        rf = stride = None
        meta = self.tracker.get(y) if y is not None else None
        if meta is not None:
            rf = GLOBAL if math.isinf(meta[0]) else int(meta[0])
            stride = None if meta[1] is None else (int(meta[1]) if float(meta[1]).is_integer() else meta[1])
        shape = tuple(y.shape[1:]) if y is not None else None
        formula = _formula(module) if fresh else ""
        return Row(self.names[module], type(module).__name__, shape, trainable, frozen, formula, macs, rf, stride)


def _unexecuted_rows(model: nn.Module, rec: _Recorder) -> Iterator[Row]:
    """Parameters no executed leaf owns: leaves that never ran, then parameters of containers."""
    for module, name in rec.names.items():
        fresh = [p for p in module.parameters() if id(p) not in rec.seen]
        if fresh:
            rec.seen.update(id(p) for p in fresh)
            yield Row(name, type(module).__name__, None, *_count(fresh), _formula(module), 0, None, None)
    for name, module in model.named_modules():
        fresh = [p for p in module.parameters(recurse=False) if id(p) not in rec.seen]
        if fresh:
            rec.seen.update(id(p) for p in fresh)
            yield Row(name, type(module).__name__, None, *_count(fresh), _generic_formula(fresh), 0, None, None)


def _forward(model: nn.Module, x: torch.Tensor, rec: _Recorder) -> torch.Tensor:
    handles = []
    for leaf in rec.names:
        handles.append(leaf.register_forward_pre_hook(rec.pre))
        handles.append(leaf.register_forward_hook(rec.post))
    modes = [(m, m.training) for m in model.modules()]
    model.eval()  # dropout off, BatchNorm on running stats: batch size 1 is always valid
    try:
        with torch.no_grad(), rec.tracker:
            rec.tracker.set(x, (1, 1))
            out = model(x)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training
    y = next(iter(_tensors(out)), None)
    if y is None:
        raise TypeError(f"{type(model).__name__} returned no tensor")
    return y


def summary(
    model: nn.Module, input_size: tuple[int, ...] | None = None, *, device: str | torch.device | None = "meta"
) -> Summary:
    """Run one forward pass with a batch of one and tabulate every executed leaf layer.

    ``input_size`` is (C, H, W) without the batch dim, default ``model.default_input_size``.
    ``device="meta"`` (default) runs a weightless meta copy (or the model itself if already on meta);
    ``device=None`` runs the model where it is, on a zero input under ``torch.no_grad()``.
    The model's own input errors (``ValueError`` for a wrong channel count or a too-small image) propagate.
    """
    size = _input_size(model, input_size)
    run = _runnable(model, device)
    rec = _Recorder(_Tracker(), _leaves(run))
    x = torch.zeros((1, *size), device=_device_of(run), dtype=_dtype_of(run))
    y = _forward(run, x, rec)
    outside = rec.tracker.macs - rec.leaf_macs
    rows = rec.rows + list(_unexecuted_rows(run, rec))
    trainable, frozen = _count(list(model.parameters()))
    return Summary(
        rows=rows,
        total_params=trainable,
        non_trainable_params=frozen,
        total_macs=sum(r.macs for r in rows) + outside,
        input_size=size,
        output_shape=tuple(y.shape[1:]),
        paper_params=_paper_params(model),
        params_kind=_params_kind(model),
        skip_connections=count_skip_connections(model),
        model_name=str(getattr(model, "model_name", type(model).__name__)),
    )
