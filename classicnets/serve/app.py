"""The web app: the page (``static/``), and the JSON API it calls, documented by FastAPI at ``/docs``.

    GET  /api/models                 the models offered (opaque ids), each with its twins; unreadable runs
    GET  /api/models/{id}/layers     the layer table (shape, parameters with formula, MACs, receptive field)
    POST /api/predict                top-5 classes          } an image: multipart (file 'image', field
    POST /api/features               every stage's maps     } 'model') or JSON {"model": ID, "image":
    POST /api/gradcam                Grad-CAM over the input} "data:image/png;base64,..."}
    GET  /api/claims                 the case studies under runs/claims/ (or how to make them)
    GET  /api/health                 workers, queue, loaded models

Every refusal is ``{"error": "..."}`` with a 4xx status (503 + Retry-After when the workers are full).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from .. import __version__
from . import views
from .catalog import Catalog, ModelEntry
from .engine import EXPLAIN, PREDICT, ModelCache, WorkerPool
from .errors import ApiError
from .uploads import (
    MAX_BODY_BYTES,
    MAX_PIXELS,
    ImageRequest,
    check_image,
    image_request,
)

STATIC = Path(__file__).parent / "static"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
log = logging.getLogger("classicnets.serve")

# The page runs only its own script and styles; images come from the API as data: URLs.
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")  # fmt: skip


@dataclass(frozen=True)
class ServeConfig:
    """What ``classicnets serve`` offers and how much work it takes on at once."""

    runs_dir: str | Path = "runs"  # run checkpoints: */best.pt and */*/best.pt; claims/*/ for the case studies
    weights: tuple[str, ...] | None = None  # shipped weights offered (None: all of them)
    workers: int = 2  # PyTorch worker threads, one intra-op thread each
    queue: int = 16  # requests waiting for a worker at most; more get 503 + Retry-After
    cache: int = 4  # models kept loaded (least recently used dropped first)
    loopback_only: bool = True  # answer only requests addressed to 127.0.0.1 / localhost (DNS rebinding)
    engine: str = "torch"  # predictions: "torch", or "onnxruntime" (the views still run the torch model)


_IMAGE_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["model", "image"], "properties": {
            "model": {"type": "string", "description": "an id from GET /api/models"},
            "image": {"type": "string", "format": "binary", "description": "PNG, JPEG, BMP, GIF or WebP, <= 5 MB"},
            "target": {"type": "string", "description": "gradcam: class name or index (default: predicted)"},
            "max_channels": {"type": "integer", "description": "features: maps shown per stage (1-64, default 8)"},
        }}},
        "application/json": {"schema": {"type": "object", "required": ["model", "image"], "properties": {
            "model": {"type": "string"},
            "image": {"type": "string", "description": "a data URL: data:image/png;base64,..."},
            "target": {"type": "string"}, "max_channels": {"type": "integer"},
        }}},
    },
}  # fmt: skip


def create_app(config: ServeConfig = ServeConfig()) -> FastAPI:
    """The FastAPI app for ``config``: lists the models at once (a ValueError for an unknown weight name)."""
    if config.engine not in ("torch", "onnxruntime"):
        raise ValueError(f"unknown engine {config.engine!r}; choose --engine torch or --engine onnxruntime")
    if config.engine == "onnxruntime":  # a missing package is said at start, not on the first prediction
        from ..inference import _check_engine

        _check_engine("onnxruntime", "cpu")
    catalog = Catalog(config.runs_dir, config.weights)
    pool = WorkerPool(config.workers, config.queue)
    models = ModelCache(config.cache, replicas=config.workers, engine=config.engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        pool.close()

    app = FastAPIOffline(
        title="classicnets serve", version=__version__, lifespan=lifespan,
        description="The classic CNNs on your own drawings and images: top-5 classes, feature maps, Grad-CAM, "
                    f"layer tables, case studies. Uploads up to {MAX_BODY_BYTES // 2**20} MB and "
                    f"{MAX_PIXELS:,} pixels; models are named only by the ids GET /api/models lists.",
    )  # fmt: skip
    app.state.catalog, app.state.pool, app.state.models = catalog, pool, models

    if config.loopback_only:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(LOOPBACK_HOSTS))
    _errors(app)

    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _routes(app, catalog, pool, models)
    return app


def _routes(app: FastAPI, catalog: Catalog, pool: WorkerPool, models: ModelCache) -> None:
    """The page and every JSON endpoint. Each image endpoint checks cheap things first (fields, model,
    image header) and only then asks a worker for anything."""
    async def read_image_request(request: Request) -> tuple[ImageRequest, ModelEntry]:
        """The request's fields, then its model (400/404), then its image's header (413/415): cheap checks
        first, all before a worker is asked for anything."""
        req = await image_request(request)
        entry = catalog.get(req.model)
        check_image(req.image)
        return req, entry

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/api/models", summary="The models this server offers")
    def list_models() -> dict[str, Any]:
        """Shipped weights and the run checkpoints under the runs folder (looked for again on every call),
        each under an opaque id, with the ids of its plain/residual twins; checkpoints that could not be
        read are listed under ``skipped`` with the reason."""
        catalog.refresh()
        entries = catalog.entries()
        return {"models": [{**e.public(), "twins": [t.id for t in catalog.twins(e)]} for e in entries],
                "skipped": catalog.skipped}  # fmt: skip

    @app.get("/api/models/{model_id}/layers", summary="The layer table of a model")
    async def model_layers(model_id: str) -> dict[str, Any]:
        """Output shape, parameters with the formula behind each count, MACs and receptive field of every
        layer, at the size the model was trained at (``classicnets summary``)."""
        entry = catalog.get(model_id)
        return await pool.run(lambda: views.layers(models.get(entry)))

    @app.post("/api/predict", summary="Top-5 classes for an image", openapi_extra={"requestBody": _IMAGE_BODY})
    async def predict(request: Request) -> dict[str, Any]:
        """The top-5 classes with probabilities, the image prepared as the model's test images were."""
        req, entry = await read_image_request(request)
        return await pool.run(lambda: views.predict(models.get(entry), req.image), priority=PREDICT)

    @app.post("/api/features", summary="Feature maps of every stage", openapi_extra={"requestBody": _IMAGE_BODY})
    async def features(request: Request) -> dict[str, Any]:
        """Each stage's shape and its first ``max_channels`` maps as PNG data URLs, and the input as the
        model sees it."""
        req, entry = await read_image_request(request)
        return await pool.run(lambda: views.features(models.get(entry), req.image, req.max_channels))

    @app.post("/api/gradcam", summary="Grad-CAM over the input", openapi_extra={"requestBody": _IMAGE_BODY})
    async def gradcam(request: Request) -> dict[str, Any]:
        """Where the evidence for ``target`` (default: the predicted class) lies: the Grad-CAM map at the
        last stage that is still a map, over the input (PNG data URLs)."""
        req, entry = await read_image_request(request)
        return await pool.run(lambda: views.gradcam(models.get(entry), req.image, req.target), priority=EXPLAIN)

    @app.get("/api/claims", summary="Case studies: the papers' claims and their verdicts")
    def claims() -> dict[str, Any]:
        """The reports (markdown) and verdict JSON files under ``runs/claims/*/``; if there are none, a
        message saying which command makes them."""
        return catalog.claims()

    @app.get("/api/health", summary="Workers, queue and loaded models")
    async def health() -> dict[str, Any]:
        return {"ok": True, "workers": pool.workers, "queue": pool.queue, "loaded": models.loaded_ids()}


class SecurityHeaders:
    """``nosniff`` on every answer, and the page's Content-Security-Policy on the page and its files. Plain
    ASGI (not ``@app.middleware("http")``, whose per-request task and streams cost ~0.5 ms each call)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        page = scope["path"] == "/" or scope["path"].startswith("/static/")

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"x-content-type-options", b"nosniff")]
                if page:
                    extra.append((b"content-security-policy", PAGE_CSP.encode()))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _errors(app: FastAPI) -> None:
    """Every error as ``{"error": message}``: refusals with their status, bugs as 500 (logged)."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = f"no such page: {request.url.path} (the API is under /api, documented at /docs)" \
            if exc.status_code == 404 else str(exc.detail)  # fmt: skip
        return JSONResponse({"error": message}, exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": f"bad request: {where}: {first.get('msg', 'invalid')}"}, 400)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("error serving %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); the server log has the details"}, 500)
