"""The ``classicnets`` command line, all of it: one parser, one dispatch (each subcommand's parser carries
its ``handler``), one place where library errors become one-line messages.

Each subcommand parses its arguments, calls one library function and prints the result. A
``ValueError``/``TypeError``/``FileNotFoundError`` from the library is a user error: it is printed as one
line that names the problem and the fix, and the command exits with status 2 (never a bare traceback);
a ``TrainingError`` (a run that stopped: divergence, a full disk) exits with status 1.

Nothing here imports torch at module level: ``classicnets --help`` answers without it, and the training
commands re-exec themselves under jemalloc before torch is ever loaded.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from . import claims as _claims
from . import export as _export
from . import inference as _inference
from . import models as _models
from . import serve as _serve
from . import show as _show
from . import studies as _studies
from . import train as _train
from .errors import UserError

__all__ = ["UserError", "build_parser", "main", "entry"]

# Each module adds its subcommands, in the order `classicnets --help` lists them.
_SUBCOMMANDS = (_models, _train, _inference, _show, _export, _studies, _claims, _serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="classicnets",
        description="The classic convolutional networks: build, inspect, train, compare and ship them.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in _SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (UserError, ValueError, TypeError, OSError) as exc:  # OSError: missing files, permissions, full disk
        print(f"classicnets {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        from ..train.engine import TrainingError

        if not isinstance(exc, TrainingError):
            raise
        print(f"classicnets {args.command}: stopped: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"classicnets {args.command}: interrupted", file=sys.stderr)
        return 130


# jemalloc that keeps freed pages: on VMs whose freed memory goes back to the host, glibc's allocator can
# page-fault on every training step (erratic, up to 10x slower steps were seen on one such machine;
# benchmarks/allocator.py measures 1.01-1.07x on ours, never slower). Commands that train re-exec under it.
JEMALLOC_PATHS = tuple(f"/usr/lib/{arch}-linux-gnu/libjemalloc.so.2" for arch in ("x86_64", "aarch64")) + (
    "/usr/lib/libjemalloc.so.2", "/usr/local/lib/libjemalloc.so.2")  # fmt: skip
TRAINING_COMMANDS = {"train", "finetune", "study", "compare", "claims"}


def reexec_with_jemalloc(argv: Sequence[str]) -> None:
    """Replace this process by the same command with jemalloc preloaded (same pid, so torchrun is unaffected).

    Only for training commands, only where jemalloc is installed and not already loaded; set
    ``CLASSICNETS_ALLOCATOR=system`` to keep the system allocator. Runs before torch is imported.
    """
    if os.environ.get("CLASSICNETS_ALLOCATOR", "jemalloc") != "jemalloc" or not argv or argv[0] not in TRAINING_COMMANDS:
        return
    if "jemalloc" in os.environ.get("LD_PRELOAD", ""):
        return
    lib = next((path for path in JEMALLOC_PATHS if os.path.exists(path)), None)
    if lib is None:
        return
    env = {**os.environ, "LD_PRELOAD": f"{lib} {os.environ.get('LD_PRELOAD', '')}".strip()}
    env.setdefault("MALLOC_CONF", "dirty_decay_ms:-1,muzzy_decay_ms:-1")
    os.execve(sys.executable, [sys.executable, "-m", "classicnets", *argv], env)


def entry() -> None:
    """The ``classicnets`` console script and ``python -m classicnets``."""
    reexec_with_jemalloc(sys.argv[1:])
    sys.exit(main())
