"""``classicnets serve``: a local web app for the trained nets, served by classicnets itself (FastAPI +
uvicorn), offline: draw or upload an image, see the top-5 classes, every stage's feature maps, a Grad-CAM
overlay, the layer table, a residual net beside its plain twin, and the case studies. docs/serve.md.

    from classicnets.serve import Server, ServeConfig
    Server(ServeConfig(runs_dir="runs"), port=0).run()

    catalog.py   what may be read: the models offered (opaque ids) and the claims reports
    uploads.py   a request's body, form and image header, checked before anything is decoded
    engine.py    the bounded worker pool and the loaded models (LRU, one replica per worker)
    views.py     what each call computes: top-5, feature maps, Grad-CAM, layer table
    pictures.py  arrays as PNG data URLs
    app.py       the FastAPI routes and error handling;  server.py  uvicorn on a socket bound up front
"""

from __future__ import annotations

__all__ = ["ServeConfig", "Server", "create_app"]


def __getattr__(name: str):
    if name in ("ServeConfig", "create_app"):
        from . import app

        return getattr(app, name)
    if name == "Server":
        from .server import Server

        return Server
    raise AttributeError(f"module 'classicnets.serve' has no attribute {name!r}")
