"""Image decoding, resizing and the decoded-array cache, shared by the image dataset readers.

Conventions: decoded images are ``uint8`` arrays ``(height, width, channels)``;
readers convert to ``float32`` in ``[0, 1]`` only where they need to. The
cache holds one ``.npz`` file per (source file checksum, preprocessing
options); it lives in the user's cache directory, never beside the data.

Cache location, first match wins: the ``cache_dir`` argument, the
``METAJAX_CACHE`` environment variable, ``$XDG_CACHE_HOME/metajax``,
``~/.cache/metajax``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from metajax.errors import DataError

CACHE_VERSION = 1  # bump when the decoding of any reader changes
RESAMPLE = {
    "lanczos": Image.Resampling.LANCZOS,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
}
# What a reader may meet in a damaged file; all become one-line DataErrors.
DECODE_ERRORS = (zipfile.BadZipFile, zlib.error, UnidentifiedImageError, OSError, EOFError, SyntaxError, ValueError)


def decode_image(data: bytes, mode: str = "L") -> np.ndarray:
    """Decodes PNG/JPEG bytes to ``uint8`` ``(height, width, channels)``.

    ``mode`` is a PIL mode: ``"L"`` (gray, 1 channel) or ``"RGB"`` (3 channels).
    1-bit images become 0/255 (PIL alone would give 0/1), so every source
    yields the same scale.

    Raises:
      OSError, ValueError, ...: the bytes are not a readable image (callers
        wrap :data:`DECODE_ERRORS` into a :class:`DataError` naming the file).
    """
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        array = np.asarray(image.convert(mode), dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def to_gray(image: np.ndarray) -> np.ndarray:
    """``uint8`` ``(h, w, c)`` -> ``uint8`` ``(h, w, 1)``: the channel mean (exact for gray stored as RGB)."""
    if image.shape[-1] == 1:
        return image
    return np.round(image.astype(np.float32).mean(axis=-1, keepdims=True)).astype(np.uint8)


def resize(image: np.ndarray, size: int | tuple[int, int] | None, resample: str = "lanczos") -> np.ndarray:
    """Resizes ``uint8`` ``(h, w, c)`` to ``(size, size, c)`` (or ``(height, width, c)`` for a pair).

    ``size=None`` or the current size returns ``image`` unchanged.
    """
    if size is None:
        return image
    height, width = (size, size) if isinstance(size, int) else size
    if image.shape[:2] == (height, width):
        return image
    if resample not in RESAMPLE:
        raise DataError(f"unknown resample {resample!r}; use one of {', '.join(RESAMPLE)}.")
    channels = image.shape[-1]
    pil = Image.fromarray(image[..., 0] if channels == 1 else image)
    out = np.asarray(pil.resize((width, height), resample=RESAMPLE[resample]), dtype=np.uint8)
    return out[..., None] if out.ndim == 2 else out


def to_float(images: np.ndarray) -> np.ndarray:
    """``uint8`` in ``[0, 255]`` -> ``float32`` in ``[0, 1]``, any shape."""
    return images.astype(np.float32) / np.float32(255.0)


def file_checksum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def folder_checksum(path: str | os.PathLike, suffixes: Iterable[str] = (".png",)) -> str:
    """SHA-256 over the relative paths, sizes and modification times of a folder's image files.

    Cheap (reads no image bytes): a changed, added or removed file changes it.
    """
    root = Path(path)
    suffixes = tuple(suffixes)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes):
        stat = file.stat()
        digest.update(f"{file.relative_to(root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """``$METAJAX_CACHE``, else ``$XDG_CACHE_HOME/metajax``, else ``~/.cache/metajax``."""
    if os.environ.get("METAJAX_CACHE"):
        return Path(os.environ["METAJAX_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "metajax"


def cache_key(checksum: str, options: Mapping[str, Any]) -> str:
    """A short key for one source checksum and the preprocessing options that shaped its arrays."""
    text = json.dumps({"checksum": checksum, "options": dict(options), "version": CACHE_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def cache_file(
    reader: str, name: str, checksum: str, options: Mapping[str, Any], cache_dir: str | os.PathLike | None = None
) -> Path:
    """``<cache_dir>/<reader>/<name>-<key>.npz``: where the decoded arrays of one source file live."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / reader / f"{name}-{cache_key(checksum, options)}.npz"


def load_cached(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays stored at ``path``, or ``None`` when absent or unreadable (then the caller decodes again)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return None


def save_cached(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Writes ``arrays`` to ``path`` atomically (a temporary file, then a rename).

    A cache that cannot be written (read-only home, full disk) is skipped
    silently: the data is still returned, only the next load is slower.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    except OSError:
        return
