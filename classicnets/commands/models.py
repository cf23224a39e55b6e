"""``classicnets models`` and ``classicnets summary``: the zoo at a glance, and one net layer by layer."""

from __future__ import annotations

import argparse
import json

from .errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="table of every model: parameters, MACs, paper")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(handler=cmd_models)

    p = sub.add_parser("summary", help="layer-by-layer table: shape, params (with formula), MACs, receptive field")
    p.add_argument("model")
    p.add_argument("--input-size", type=input_size, default=None, metavar="CxHxW")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.set_defaults(handler=cmd_summary)


def input_size(text: str) -> tuple[int, int, int]:
    """``3x224x224`` -> (3, 224, 224), for argparse."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"input size must look like CxHxW, e.g. 3x224x224; got {text!r}") from None
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"input size must be three positive integers CxHxW, got {text!r}")
    return dims  # type: ignore[return-value]


def human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


# the models table's "source" column: where the count a model's parameters equal comes from (PARAMS_KINDS)
SOURCE_CODES = {"paper": "paper", "torchvision": "tv", "exact-of-rounded": "~paper", "exact-of-reference": "ref",
                "none": "-"}  # fmt: skip


def cmd_models(args: argparse.Namespace) -> int:
    import torch

    from ..models import create_model, list_models, model_card
    from ..summary import summary

    names = list_models(args.pattern)
    if not names:
        raise UserError(f"no model matches {args.pattern!r}; try `classicnets models` for all of them")
    rows = []
    for name in names:
        card = model_card(name)
        with torch.device("meta"):  # no weights are allocated: counting and MACs need shapes only
            model = create_model(name)
        s = summary(model)
        rows.append({
            "name": name, "params": s.total_params, "paper_params": card.paper_params, "macs": s.total_macs,
            "input": "x".join(map(str, card.default_input_size)), "skips": s.skip_connections,
            "year": card.year, "paper": card.paper, "notes": card.notes, "params_kind": card.params_kind,
            "params_source": card.params_source,
        })  # fmt: skip
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    header = f"{'model':<14} {'params':>13} {'source':>7} {'MACs':>10} {'input':>10} {'skips':>5}  {'year':<4}  notes"
    print(header)
    print("-" * len(header))
    for r in rows:
        check = "-" if r["paper_params"] is None else (SOURCE_CODES[r["params_kind"]] if r["paper_params"] == r["params"]
                                                      else "DIFF")  # fmt: skip
        print(
            f"{r['name']:<14} {r['params']:>13,} {check:>7} {human(r['macs']):>10} {r['input']:>10} "
            f"{r['skips']:>5}  {r['year']:<4}  {r['notes']}"
        )
    from ..models.registry import PARAMS_KINDS

    print(f"\n{len(rows)} models. 'source' says where the reference count that 'params' equals to the unit comes from:")
    for kind, code in SOURCE_CODES.items():
        print(f"  {code:>6}  {PARAMS_KINDS[kind]}")
    print("  (`classicnets summary NAME` and model_card(NAME).params_source give the exact source)")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    import torch

    from ..models import create_model, model_card
    from ..summary import summary

    card = model_card(args.model)
    kwargs = {}
    if args.num_classes is not None:
        kwargs["num_classes"] = args.num_classes
    in_chans = args.input_size[0] if args.input_size else card.default_input_size[0]
    with torch.device("meta"):
        model = create_model(args.model, in_chans=in_chans, **kwargs)
    s = summary(model, args.input_size)
    print({"table": s.to_table, "csv": s.to_csv, "json": s.to_json}[args.format]())
    return 0
