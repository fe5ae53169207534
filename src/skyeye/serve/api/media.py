"""The image of an API request, from its URL: a `data:` URL, or a `file://` URL under an allowed folder.

The server never fetches anything: http(s) and every other scheme are refused. Whatever the URL, the bytes
must be PNG, JPEG, WebP or TIFF (GeoTIFF included), told by their first bytes, not by the declared type, so
no other decoder PIL or GDAL carries is ever reached by an upload. Limits are checked before decoding: the
byte size from the base64 length or the file's size, then the pixel count from the header. The bytes go
through `skyeye.images.load_image`, as `skyeye ask` reads a file (multi-band rasters rendered to RGB the same
way), from a private temporary file that is deleted at once; the image is then kept as `skyeye chat` keeps its
own (`skyeye.serve.session.ConversationImage`: resized for the model, a TIFF's georeferencing read with it).

A `file://` path is checked twice: as written (`..` resolved without touching the disk, so a path outside the
folder is refused without revealing whether it exists) and with its symlinks resolved; the file is then
opened without following a symlink in its last part and read up to the byte limit.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from skyeye.images import ImageError, load_image
from skyeye.serve.session import ConversationImage

MB = 1024 * 1024
FORMATS = "PNG, JPEG, WebP or TIFF"
NO_FETCH = (
    "this server never fetches URLs; send the image inline as a data: URL (data:image/png;base64,...) or, "
    "for a file on the server, as a file:// URL under its --allowed-local-media-path"
)

# (first bytes, format, suffix): the suffix lets load_image read a multi-band TIFF with rasterio.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG", ".png"),
    (b"\xff\xd8\xff", "JPEG", ".jpg"),
    (b"II*\x00", "TIFF", ".tif"),
    (b"MM\x00*", "TIFF", ".tif"),
    (b"II+\x00", "TIFF", ".tif"),  # BigTIFF
    (b"MM\x00+", "TIFF", ".tif"),
)


class MediaError(ValueError):
    """An image part that cannot be used (HTTP 400); the message names the field and what is wrong."""


class MediaTooLarge(MediaError):
    """An image over the byte or pixel limit (HTTP 413)."""


@dataclass(frozen=True)
class MediaLimits:
    max_bytes: int
    max_pixels: int
    allowed_local_path: Path | None = None  # file:// URLs are refused without one


def open_image_url(url: str, limits: MediaLimits, model_side: int, field: str) -> ConversationImage:
    """The image an `image_url` names, read and checked as the module doc says; `field` names it in errors."""
    return decode_image(read_url(url, limits, field), limits, model_side, field)


def read_url(url: str, limits: MediaLimits, field: str) -> bytes:
    scheme = url.partition(":")[0].lower() if ":" in url else ""
    if scheme == "data":
        return _read_data_url(url, limits.max_bytes, field)
    if scheme == "file":
        return _read_file_url(url, limits, field)
    if scheme in ("http", "https"):
        raise MediaError(f"{field}: {scheme} image URL {_shorten(url)} refused: {NO_FETCH}")
    raise MediaError(f"{field}: unsupported image URL {_shorten(url)}: {NO_FETCH}")


def _read_data_url(url: str, max_bytes: int, field: str) -> bytes:
    header, comma, payload = url[len("data:") :].partition(",")
    media_type, *parameters = header.split(";")
    if not comma or "base64" not in (p.strip().lower() for p in parameters):
        raise MediaError(f"{field}: a data URL must be base64: data:image/png;base64,<base64 of the file>")
    if media_type and not media_type.strip().lower().startswith("image/"):
        raise MediaError(f"{field}: data URL of type {media_type!r}; send an image ({FORMATS})")
    payload = "".join(payload.split())  # line-wrapped base64 (76 columns) is common
    if len(payload) // 4 * 3 - payload[-2:].count("=") > max_bytes:
        raise MediaTooLarge(f"{field}: the image is over the limit of {_megabytes(max_bytes)}")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as err:
        raise MediaError(f"{field}: the data URL is not valid base64 ({err})") from None


def _read_file_url(url: str, limits: MediaLimits, field: str) -> bytes:
    allowed = limits.allowed_local_path
    if allowed is None:
        raise MediaError(f"{field}: file:// URLs are refused: the server runs without --allowed-local-media-path")
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        raise MediaError(f"{field}: a file:// URL names a local path only (file:///folder/image.png)")
    written = Path(os.path.normpath(unquote(parts.path)))
    outside = f"{field}: {written} is outside the allowed folder {allowed}"
    if not written.is_absolute() or not written.is_relative_to(allowed):
        raise MediaError(outside)
    try:
        resolved = written.resolve(strict=True)
    except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, a NUL byte
        raise MediaError(f"{field}: no such file in the allowed folder: {written}") from None
    if not resolved.is_relative_to(allowed):
        raise MediaError(f"{outside} (a symbolic link leads there)")
    if not resolved.is_file():  # a folder, or a pipe that would block the read
        raise MediaError(f"{field}: {written} is not a file")
    try:
        descriptor = os.open(resolved, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise MediaError(f"{field}: cannot open {written} ({err.strerror})") from None
    with os.fdopen(descriptor, "rb") as file:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):  # swapped since the check above
            raise MediaError(f"{field}: {written} is not a file")
        data = file.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:
        raise MediaTooLarge(f"{field}: {written} is over the limit of {_megabytes(limits.max_bytes)}")
    return data


def decode_image(data: bytes, limits: MediaLimits, model_side: int, field: str) -> ConversationImage:
    kind, suffix = _sniff(data, field)
    with tempfile.TemporaryDirectory(prefix="skyeye-serve-") as folder:
        path = Path(folder) / f"image{suffix}"
        path.write_bytes(data)
        _check_pixels(path, kind, limits.max_pixels, field)
        try:
            loaded = load_image(path, max_pixels=limits.max_pixels)
        except ImageError as err:  # its message names the temporary file; the client knows the field
            raise MediaError(str(err).replace(str(path), field)) from None
        return ConversationImage.of(loaded, model_side)  # while the file is there: its georeferencing is read


def _sniff(data: bytes, field: str) -> tuple[str, str]:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP", ".webp"
    for signature, kind, suffix in _SIGNATURES:
        if data.startswith(signature):
            return kind, suffix
    raise MediaError(f"{field}: not a {FORMATS} image (it starts with {data[:8]!r})")


def _check_pixels(path: Path, kind: str, max_pixels: int, field: str) -> None:
    """Refuses an image over `max_pixels` from its header, before any pixel is decoded."""
    from PIL import Image, UnidentifiedImageError
    from rasterio.errors import RasterioError

    try:
        if kind == "TIFF":
            width, height = _raster_size(path)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    width, height = image.size
    except Image.DecompressionBombError:
        raise MediaTooLarge(f"{field}: the image is over the limit of {max_pixels} pixels") from None
    except (UnidentifiedImageError, RasterioError, OSError, SyntaxError, ValueError) as err:
        raise MediaError(f"{field}: cannot be read as a {kind} image ({err})") from None
    if width * height > max_pixels:
        raise MediaTooLarge(f"{field}: the image is {width}x{height} pixels, over the limit of {max_pixels} pixels")


def _raster_size(path: Path) -> tuple[int, int]:
    import rasterio

    # Plain TIFFs without georeferencing are fine here; rasterio would warn about every one of them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path) as dataset:
            return dataset.width, dataset.height


def _megabytes(count: int) -> str:
    return f"{count / MB:g} MB"


def _shorten(url: str, keep: int = 60) -> str:
    return repr(url if len(url) <= keep else url[:keep] + "...")
