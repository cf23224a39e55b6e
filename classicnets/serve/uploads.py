"""Reading a request that carries an image: the body (with a size cap, before it is all read), its form
(``multipart/form-data`` with a file, or JSON with a ``data:`` URL), and the image's header (format and
pixel count, checked before a single pixel is decoded, so a decompression bomb is refused cheaply).

Everything here refuses with an :class:`ApiError` whose message names the fix.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from .errors import ApiError

MAX_BODY_BYTES = 5 * 1024 * 1024  # an upload larger than this is refused with 413
MAX_PIXELS = 4096 * 4096  # an image declaring more pixels is refused before decoding (decompression bombs)
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")
DATA_URL = re.compile(r"^data:image/(png|jpeg|jpg|bmp|gif|webp);base64,", re.IGNORECASE)
FIELDS = {"model", "image", "target", "max_channels"}  # every field an image request may carry


@dataclass(frozen=True)
class ImageRequest:
    """A request to look at one image with one model."""

    model: str  # an id from GET /api/models
    image: bytes  # the encoded image file (PNG, JPEG, ...), not yet checked: see check_image
    target: str | None = None  # Grad-CAM: the class to explain (name or index), default the predicted one
    max_channels: int = 8  # features: channels shown per stage


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` (from Content-Length,
    or while streaming a body sent without one)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, f"Content-Length {declared[:20]!r} is not a number")
        if int(declared) > limit:
            raise ApiError(413, f"the upload is {int(declared):,} bytes; the limit is {limit:,} bytes (5 MB): "
                                "send a smaller image")  # fmt: skip
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the upload is over the limit of {limit:,} bytes (5 MB): send a smaller image")
        chunks.append(chunk)
    return b"".join(chunks)


async def image_request(request: Request) -> ImageRequest:
    """Parse a multipart or JSON image request (see the module docstring); 415 for any other content type."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ("application/json", "multipart/form-data"):
        raise ApiError(415, f"content type {ctype or 'none'!r} is not accepted: send multipart/form-data with a "
                            "file field 'image' and a field 'model', or application/json "
                            '{"model": ID, "image": "data:image/png;base64,..."}')  # fmt: skip
    body = await read_body(request)
    fields = await (_json_fields(body) if ctype == "application/json" else _form_fields(request, body))
    unknown = set(fields) - FIELDS
    if unknown:
        raise ApiError(400, f"unknown field(s) {', '.join(sorted(unknown))}; an image request takes "
                            f"{', '.join(sorted(FIELDS))}")  # fmt: skip
    for name in ("model", "image"):
        if fields.get(name) in (None, "", b""):
            raise ApiError(400, f"missing field {name!r}: send 'model' (an id from GET /api/models) and 'image'")
    if not isinstance(fields["model"], str):
        raise ApiError(400, "field 'model' must be a string: an id from GET /api/models")
    image = fields["image"]
    if isinstance(image, str):  # JSON, or a multipart text field: a data URL
        image = _data_url(image)
    if not isinstance(image, bytes):
        raise ApiError(400, "field 'image' must be a file (multipart) or a data URL string (JSON)")
    target = fields.get("target")
    if isinstance(target, bool) or (target is not None and not isinstance(target, (str, int))):
        raise ApiError(400, "field 'target' must be a class name or index")
    return ImageRequest(fields["model"], image, None if target is None else str(target),
                        _channels(fields.get("max_channels", 8)))  # fmt: skip


async def _json_fields(body: bytes) -> dict[str, Any]:
    try:
        fields = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"malformed JSON ({exc}); send {{\"model\": ID, \"image\": \"data:image/png;"
                            "base64,...\"}")  # fmt: skip
    if not isinstance(fields, dict):
        raise ApiError(400, f"the JSON body must be an object with 'model' and 'image', got {type(fields).__name__}")
    return fields


async def _form_fields(request: Request, body: bytes) -> dict[str, Any]:
    """The multipart form of ``body`` (already read and size-checked), parsed by Starlette."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=len(FIELDS))
    except (MultiPartException, HTTPException, ValueError) as exc:  # a malformed form, too many parts
        detail = getattr(exc, "detail", None) or getattr(exc, "message", None) or str(exc) or type(exc).__name__
        raise ApiError(400, f"malformed multipart form ({detail}); send a file field 'image' and a field 'model'")
    fields: dict[str, Any] = {}
    for key, value in form.multi_items():
        if key in fields:
            raise ApiError(400, f"field {key!r} is sent twice; send one image and one model per request")
        fields[key] = value if isinstance(value, str) else await value.read()
    await form.close()
    return fields


def _data_url(text: str) -> bytes:
    match = DATA_URL.match(text)
    if not match:
        raise ApiError(400, f"'image' must be a data URL such as data:image/png;base64,... (got "
                            f"{text[:40]!r}); to send a file, use multipart/form-data")  # fmt: skip
    try:
        return base64.b64decode(text[match.end():], validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "'image' is not valid base64 after its data:image/...;base64, prefix") from None


def _channels(value: Any) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if isinstance(value, bool) or not 1 <= n <= 64:
        raise ApiError(400, f"max_channels must be an integer from 1 to 64, got {value!r}")
    return n


def check_image(data: bytes) -> tuple[str, tuple[int, int]]:
    """``(format, (width, height))`` of an encoded image, from its header alone (cheap enough for the event
    loop): 415 if it is not an image in one of FORMATS, 413 if it declares more than MAX_PIXELS pixels. A
    file whose header is fine but whose pixels are corrupt fails later, in the worker (400)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            fmt, size = img.format, img.size
            if fmt not in FORMATS:
                raise ApiError(415, f"{fmt} images are not accepted; send one of {', '.join(FORMATS)}")
            if size[0] * size[1] > MAX_PIXELS:
                raise ApiError(413, f"the image declares {size[0]}x{size[1]} pixels; the limit is {MAX_PIXELS:,} "
                                    "pixels (4096x4096): send a smaller image")  # fmt: skip
    except Image.DecompressionBombError as exc:  # PIL's own cap, over twice its warning size, fires in open()
        raise ApiError(413, f"the image is too large to decode safely ({exc}); the limit is {MAX_PIXELS:,} pixels")
    except UnidentifiedImageError:
        raise ApiError(415, f"the upload is not an image PIL can read; send one of {', '.join(FORMATS)}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ApiError(400, f"the image header cannot be read ({exc}); send an intact {'/'.join(FORMATS)} file")
    return fmt, size
