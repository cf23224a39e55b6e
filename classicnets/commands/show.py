"""``classicnets show VIEW``: see inside a trained net (filters, features, gradcam, errors, rf); each view
writes one PNG and prints its path. The views themselves are in :mod:`classicnets.viz`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the commands import torch (through viz) inside the handlers
    from ..viz import TrainedNet

SOURCE_HELP = "a checkpoint written by `classicnets train` (or a shipped weight's name)"
TWIN_HELP = "a checkpoint of the plain/residual twin (e.g. plain20 for resnet20), drawn beside SOURCE"


def register(sub: argparse._SubParsersAction) -> None:
    show = sub.add_parser("show", help="see inside a trained net: filters, features, gradcam, errors, rf (PNG)")
    views = show.add_subparsers(dest="view", metavar="VIEW")
    views.required = True

    p = views.add_parser("filters", help="the first convolution's kernels (or any convolution's) as an image grid")
    p.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    p.add_argument("--layer", default=None, help="a convolution's module name (default: the first conv)")
    _out(p, cmd_filters)

    p = views.add_parser("features", help="every stage's feature maps for one image, with shapes")
    p.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    p.add_argument("image", metavar="IMAGE", help="an image file (PNG/JPEG/BMP)")
    p.add_argument("--twin", metavar="SOURCE2", default=None, help=TWIN_HELP)
    p.add_argument("--channels", type=int, default=8, help="channels shown per stage (default 8)")
    _out(p, cmd_features)

    p = views.add_parser("gradcam", help="Grad-CAM: where the evidence for a class lies in the image")
    p.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    p.add_argument("image", metavar="IMAGE", help="an image file (PNG/JPEG/BMP)")
    p.add_argument("--class", dest="target", metavar="NAME|INDEX", default=None,
                   help="the class to explain (default: the predicted one)")  # fmt: skip
    p.add_argument("--layer", default=None, help="module name (default: the last stage that is still a map)")
    _out(p, cmd_gradcam)

    p = views.add_parser("errors", help="the images the net gets wrong, beside the confusion matrix")
    p.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    p.add_argument("--data", default=None, help="dataset or folder:PATH (default: the one it was trained on)")
    p.add_argument("--split", default="test", choices=("test", "val", "train"))
    p.add_argument("--max", dest="max_images", type=int, default=36, help="images shown, 1 to 100 (default 36)")
    p.add_argument("--device", default="auto", help="where to evaluate: auto (default), cpu, cuda")
    _out(p, cmd_errors)

    p = views.add_parser("rf", help="a unit's theoretical receptive field over the image, and its effective one")
    p.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    p.add_argument("image", metavar="IMAGE", nargs="?", default=None,
                   help="an image file (default: the effective field over 16 noise inputs)")  # fmt: skip
    p.add_argument("--layer", default=None, help="module name (default: the last stage that is still a map)")
    p.add_argument("--unit", metavar="Y,X", default=None, help="the unit in the layer's map (default: its centre)")
    p.add_argument("--twin", metavar="SOURCE2", default=None, help=TWIN_HELP)
    _out(p, cmd_rf)


def _out(p: argparse.ArgumentParser, handler: Callable[[argparse.Namespace], int]) -> None:
    p.add_argument("--out", metavar="PNG", default=None, help="where to write (default: runs/show/VIEW-MODEL.png)")
    p.set_defaults(handler=handler)


def _path(args: argparse.Namespace, *models: str) -> Path:
    return Path(args.out) if args.out else Path("runs/show") / f"{args.view}-{'-vs-'.join(models)}.png"


def _twin(net: TrainedNet, source: str | None) -> TrainedNet | None:
    from ..viz import check_twin, load

    if source is None:
        return None
    twin = load(source)
    check_twin(net, twin)
    return twin


def _done(path: Path) -> int:
    print(f"wrote {path}")
    return 0


def cmd_filters(args: argparse.Namespace) -> int:
    from ..viz import filters, load, plot_filters

    net = load(args.source)
    return _done(plot_filters(filters(net, args.layer), _path(args, net.name)))


def cmd_features(args: argparse.Namespace) -> int:
    from ..viz import features, load, plot_features

    net = load(args.source)
    twin = _twin(net, args.twin)
    maps = features(net, args.image, args.channels)
    other = features(twin, args.image, args.channels) if twin is not None else None
    return _done(plot_features(maps, _path(args, *[n.name for n in (net, twin) if n is not None]), other))


def cmd_gradcam(args: argparse.Namespace) -> int:
    from ..viz import gradcam, load, plot_gradcam

    net = load(args.source)
    return _done(plot_gradcam(gradcam(net, args.image, args.target, args.layer), _path(args, net.name)))


def cmd_errors(args: argparse.Namespace) -> int:
    from ..viz import errors, load, plot_errors

    net = load(args.source)
    gallery = errors(net, args.data, split=args.split, max_images=args.max_images, device=args.device)
    return _done(plot_errors(gallery, _path(args, net.name)))


def cmd_rf(args: argparse.Namespace) -> int:
    from ..viz import load, plot_receptive_field, receptive_field

    net = load(args.source)
    twin = _twin(net, args.twin)
    unit = parse_unit(args.unit) if args.unit is not None else None
    rf = receptive_field(net, args.image, args.layer, unit)
    other = receptive_field(twin, args.image, args.layer, unit) if twin is not None else None
    return _done(plot_receptive_field(rf, _path(args, *[n.name for n in (net, twin) if n is not None]), other))


def parse_unit(text: str) -> tuple[int, int]:
    """``"3,4"`` -> (3, 4); a ValueError naming the expected form otherwise."""
    try:
        y, x = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--unit takes Y,X (two integers, e.g. --unit 4,4), got {text!r}") from None
    return y, x
