"""The only place that touches image files: Pillow <-> float tensors ``(1, C, H, W)`` in [0, 1].

Grey stays grey (C=1), colour is RGB (C=3). Alpha is kept aside and re-attached on save, EXIF
orientation is applied on load, 16-bit PNGs are read and written as 16-bit (colour ones through
pypng: Pillow holds 16-bit grey but reads 16-bit colour as 8 bits). Every write goes to
a temporary file in the destination folder and is renamed into place, so an interrupted run
never leaves a half-written image.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from dip.errors import InputError

#: Refuse images above this many pixels unless asked (a 1 GB header-only "bomb" must not
#: make us allocate); 64 MP is larger than any consumer camera's full frame today.
DEFAULT_MAX_PIXELS = 64_000_000

RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class Picture:
    """An image as the library works on it.

    Attributes:
        pixels: ``(1, C, H, W)`` float32 in [0, 1], C = 1 (grey) or 3 (RGB).
        alpha: ``(1, 1, H, W)`` float32 in [0, 1], or None; never restored, only carried.
        bits: 8 or 16, the bit depth to write back.
    """

    pixels: torch.Tensor
    alpha: torch.Tensor | None = None
    bits: int = 8

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``"""
        return int(self.pixels.shape[-2]), int(self.pixels.shape[-1])

    def with_pixels(self, pixels: torch.Tensor) -> Picture:
        return replace(self, pixels=pixels)


def _open(path: str | os.PathLike, what: str, max_pixels: int,
          deep_png_elsewhere: bool = False) -> tuple[Image.Image, str]:
    """Open and decode. Also returns the format of a 16-bit colour file Pillow would read as
    8 bits (``""`` otherwise; see :func:`load_image`). With ``deep_png_elsewhere`` such a PNG
    is not decoded here: the caller decodes it at 16 bits itself."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} not found: {path}")
    if path.is_dir():
        raise InputError(f"{what} is a folder, not an image: {path}")
    try:
        with own_pixel_limit():
            img = Image.open(path)
        w, h = img.size
        if w * h > max_pixels:
            raise InputError(f"{what} {path} is {w}x{h} = {w * h / 1e6:.1f} MP, above the "
                             f"limit of {max_pixels / 1e6:.1f} MP (raise it with --max-pixels)")
        deep = img.format if img.mode in ("RGB", "RGBA", "LA") and ";16" in _rawmode(img) else ""
        if deep == "PNG" and deep_png_elsewhere:
            return img, deep  # not decoded here (exif_transpose would decode it too)
        img = ImageOps.exif_transpose(img)
        img.load()  # decode now, so a truncated file fails here with a clear message
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"{what} is not an image Pillow can read: {path}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"cannot read {what} {path}: {exc}") from None
    return img, deep


_PILLOW_LIMIT = threading.Lock()


@contextmanager
def own_pixel_limit() -> Iterator[None]:
    """Pillow's decompression-bomb check off, for opening: it would refuse without saying
    the size or our ``--max-pixels``, which :func:`_open` checks from the header instead.
    Pillow's limit is a global; the lock keeps threads from restoring each other's value."""
    with _PILLOW_LIMIT:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _rawmode(img: Image.Image) -> str:
    """How the file stores its pixels (``RGB;16B`` for a 16-bit colour PNG), before decoding."""
    if not img.tile:
        return ""
    args = img.tile[0].args
    return args if isinstance(args, str) else str(args[0]) if args else ""


def _load_png16(path: Path, what: str) -> Picture:
    """A 16-bit PNG with colour or alpha, every bit kept (pypng decodes it)."""
    import png

    try:
        w, h, rows, info = png.Reader(filename=str(path)).asDirect()
        array = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows])
    except (png.Error, OSError, ValueError) as exc:
        raise InputError(f"cannot read {what} {path}: {exc}") from None
    array = array.reshape(h, w, info["planes"]).astype(np.float32)
    alpha = _to_tensor(array[..., -1], 65535.0) if info["alpha"] else None
    colour = array[..., :-1] if info["alpha"] else array
    return Picture(_to_tensor(colour, 65535.0), alpha, 16)


def _to_tensor(array: np.ndarray, scale: float) -> torch.Tensor:
    """``(H, W)`` or ``(H, W, C)`` array -> ``(1, C, H, W)`` float32 in [0, 1]."""
    if array.ndim == 2:
        array = array[..., None]
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32) / scale)
    return t.permute(2, 0, 1).unsqueeze(0).contiguous()


def load_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               what: str = "input") -> Picture:
    """Read an image file.

    Returns:
        A :class:`Picture`: grey for grey files (L, 1-bit, 16-bit), RGB for everything else,
        alpha kept aside for LA / RGBA / palette images with transparency.

    Raises:
        InputError: missing, unreadable, truncated or too large.
    """
    img, deep = _open(path, what, max_pixels, deep_png_elsewhere=True)
    if deep:
        if deep != "PNG":
            raise InputError(f"{what} {path} is 16-bit colour {deep}, which dip can only read "
                             f"as 8 bits; save it as a 16-bit PNG (kept at 16 bits) or as "
                             f"8-bit")
        return _load_png16(Path(path), what)
    if img.mode in ("L", "RGB") and "transparency" in img.info:
        # a PNG whose tRNS chunk makes one colour transparent: that is alpha too
        img = img.convert("LA" if img.mode == "L" else "RGBA")
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(img).astype(np.float32)
        # Pillow opens 16-bit grey PNGs as "I;16" or as 32-bit "I"; both hold 0..65535.
        return Picture(_to_tensor(array, 65535.0).clamp(0, 1), None, 16)
    if img.mode == "F":
        return Picture(_to_tensor(np.asarray(img), 1.0).clamp(0, 1), None, 8)
    if img.mode == "1":
        img = img.convert("L")
    alpha = None
    if img.mode in ("LA", "RGBA"):
        alpha = _to_tensor(np.asarray(img.getchannel("A")), 255.0)
        img = img.convert("L" if img.mode == "LA" else "RGB")
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    return Picture(_to_tensor(np.asarray(img), 255.0), alpha, 8)


def load_mask(path: str | os.PathLike, size: tuple[int, int], *, keeps: bool = False,
              max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Read an inpainting mask and return the KNOWN-pixel map.

    By default non-zero (white) mask pixels are the ones to fill — the convention of OpenCV,
    scikit-image and paint programs. With ``keeps=True`` non-zero pixels are the known ones
    (the Deep Image Prior notebooks' convention).

    Args:
        size: ``(H, W)`` of the image the mask belongs to; another size is an error.

    Returns:
        ``(1, 1, H, W)`` float32, 1 = known pixel, 0 = pixel to fill.
    """
    img, _ = _open(path, "mask", max_pixels)
    if img.mode == "P":
        img = img.convert("RGB")
    array = np.asarray(img)
    if img.mode in ("LA", "RGBA"):
        array = array[..., :-1]  # alpha of a mask file is not part of the mask
    if array.ndim == 3:
        array = array.max(axis=-1)
    h, w = size
    if array.shape != (h, w):
        raise InputError(f"mask {path} is {array.shape[1]}x{array.shape[0]} but the image is "
                         f"{w}x{h}; they must be the same size")
    marked = torch.from_numpy(array != 0)
    known = marked if keeps else ~marked
    if not known.any():
        raise InputError(f"mask {path} leaves no known pixel: nothing to restore from "
                         f"(is it inverted? see --mask-keeps)")
    return known.float()[None, None]


def _to_pil(pixels: torch.Tensor, bits: int) -> Image.Image:
    array = pixels.detach().float().cpu().clamp(0, 1)[0].permute(1, 2, 0).numpy()
    if bits == 16 and array.shape[-1] == 1:
        return Image.fromarray(np.round(array[..., 0] * 65535).astype(np.uint16))
    array = np.round(array * 255).astype(np.uint8)
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def readable_suffixes() -> set[str]:
    """File extensions Pillow can open (``.png``, ``.jpg``, ...), for finding images in a
    folder."""
    Image.init()
    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def output_format(path: str | os.PathLike) -> str:
    """Pillow's format name for an output path's extension (``.png`` -> ``PNG``)."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise InputError(f"cannot write images with extension '{path.suffix}' ({path}); "
                         f"use .png, .jpg, .tif, .bmp or .webp")
    return fmt


def image_writer(picture: Picture, path: str | os.PathLike) -> Callable[[BinaryIO], None]:
    """A function that encodes ``picture`` into an open file in the format ``path`` asks for.

    16-bit output is kept for grey PNG/TIFF; alpha is re-attached where the format holds it.
    """
    fmt = output_format(path)
    bits = picture.bits if fmt in ("PNG", "TIFF") else 8
    if bits == 16 and fmt == "PNG" and (picture.pixels.shape[1] == 3 or picture.alpha is not None):
        return _png16_writer(picture)
    img = _to_pil(picture.pixels, bits)
    if picture.alpha is not None and fmt in ("PNG", "TIFF", "WEBP") and img.mode in ("L", "RGB"):
        img = img.convert("LA" if img.mode == "L" else "RGBA")
        img.putalpha(_to_pil(picture.alpha, 8))
    return lambda f: img.save(f, format=fmt)


def _png16_writer(picture: Picture) -> Callable[[BinaryIO], None]:
    """16-bit colour (or grey + alpha) PNG through pypng; Pillow cannot hold these."""
    import png

    planes = [picture.pixels] + ([picture.alpha] if picture.alpha is not None else [])
    array = torch.cat([p.detach().float().cpu().clamp(0, 1) for p in planes], 1)[0]
    _, h, w = array.shape
    rows = np.round(array.permute(1, 2, 0).numpy() * 65535).astype(np.uint16).reshape(h, -1)
    writer = png.Writer(w, h, greyscale=picture.pixels.shape[1] == 1,
                        alpha=picture.alpha is not None, bitdepth=16)
    return lambda f: writer.write(f, rows)


def save_image(picture: Picture, path: str | os.PathLike) -> Path:
    """Write ``picture`` to ``path`` atomically; the format follows the extension. Missing
    parent folders are created."""
    path = Path(path)
    writer = image_writer(picture, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, writer)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it."""
    write_all_atomic([(Path(path), write)])


def write_all_atomic(files: list[tuple[Path, Callable[[BinaryIO], None]]]) -> None:
    """Write every file to a temporary name beside it, and only when all succeeded rename them
    into place, the first (the result) last: a result never appears without its record, nor
    half-written, even if the process is killed between two renames."""
    temps: list[str] = []
    try:
        for path, write in files:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
            temps.append(tmp)
            with os.fdopen(fd, "wb") as f:
                write(f)
            # mkstemp makes the file private (0600); give it a normal new file's permissions.
            os.chmod(tmp, 0o666 & ~_umask())
        for tmp, (path, _) in reversed(list(zip(temps, files))):
            os.replace(tmp, path)
    except BaseException:
        for tmp in temps:
            Path(tmp).unlink(missing_ok=True)
        raise


def resize(pixels: torch.Tensor, size: tuple[int, int], method: str = "bicubic") -> torch.Tensor:
    """Resize ``(1, C, H, W)`` in [0, 1] to ``size = (H', W')`` with Pillow's filters.

    Pillow's float mode keeps full precision; its antialiasing Lanczos is what the paper used to
    make low-resolution inputs, and its bicubic is the usual baseline.
    """
    h, w = size
    channels = []
    for c in pixels.detach().float().cpu()[0]:
        img = Image.fromarray(c.numpy()).resize((w, h), RESAMPLING[method])
        channels.append(torch.from_numpy(np.asarray(img, dtype=np.float32).copy()))
    return torch.stack(channels)[None].clamp(0, 1).to(pixels.device)
