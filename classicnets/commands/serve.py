"""``classicnets serve``: the local web app (classicnets.serve) on a loopback port."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="a local web page: draw or upload an image, see predictions, feature maps, "
                                     "Grad-CAM, layer tables and case studies")  # fmt: skip
    p.add_argument("--weights", nargs="+", default=None, metavar="NAME",
                   help="shipped weights to offer (default: all of them; `classicnets weights` lists them)")
    p.add_argument("--runs", default="runs", metavar="DIR",
                   help="offer the checkpoints DIR/*/best.pt and DIR/*/*/best.pt, and the case studies in "
                        "DIR/claims/ (default: ./runs)")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 shares it)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--engine", default="torch", choices=("torch", "onnxruntime"),
                   help="run predictions in torch (default) or in ONNX Runtime (the model exported once, cached; "
                        "faster per image on a CPU); feature maps and Grad-CAM stay in torch")  # fmt: skip
    p.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be 0..65535, got {args.port}")
    from ..serve import ServeConfig, Server

    weights = tuple(args.weights) if args.weights is not None else None
    config = ServeConfig(runs_dir=args.runs, weights=weights, engine=args.engine)
    server = Server(config, host=args.host, port=args.port)
    models = server.app.state.catalog.entries()
    print(f"{len(models)} models: {sum(m.kind == 'weight' for m in models)} shipped weights, "
          f"{sum(m.kind == 'run' for m in models)} checkpoints under {args.runs}/")
    print(server.announcement(), flush=True)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn shuts down gracefully on Ctrl-C, then re-raises it
        pass
    print("stopped")
    return 0
