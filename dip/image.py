"""The only place that touches image files: files <-> float tensors ``(1, C, H, W)`` in [0, 1].

Grey stays grey (C=1), colour is RGB (C=3). Alpha is kept aside and re-attached on save, EXIF
orientation is applied on load, 16-bit PNGs are read and written as 16-bit (colour ones through
pypng: Pillow holds 16-bit grey but reads 16-bit colour as 8 bits), TIFFs through tifffile
(8- and 16-bit and float, grey, RGB and with alpha; a float TIFF keeps its range, see
:class:`Picture`). A file whose pixel data stops short, that holds several frames (a JPEG's
extra pictures aside: its first is read), or that is not a regular file is refused. Every
write goes to a temporary file in the destination folder and is renamed into place, so an
interrupted run never leaves a half-written image.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from dip import jpeg_noise, metadata
from dip.errors import InputError, Spelled, outside_dip
from dip.record import fingerprint

#: Refuse images above this many pixels unless asked (a 1 GB header-only "bomb" must not
#: make us allocate); 64 MP is larger than any consumer camera's full frame today.
DEFAULT_MAX_PIXELS = 64_000_000
#: the formats dip writes (Pillow's names): those that hold an 8-bit RGB image, and more
WRITABLE = ("PNG", "JPEG", "TIFF", "BMP", "WEBP")


class DipWarning(Spelled, UserWarning):
    """Something a user should know about an input that is not an error (a mask with many
    grey pixels). The ``dip`` command prints these as ``dip: warning: ...``, an argument's
    ``{arg:NAME}`` as its flag (:class:`dip.errors.Spelled`)."""

RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class Picture:
    """An image as the library works on it.

    Attributes:
        pixels: ``(1, C, H, W)`` float32 in [0, 1], C = 1 (grey) or 3 (RGB).
        alpha: ``(1, 1, H, W)`` float32 in [0, 1], or None; never restored, only carried.
        bits: 8 or 16, the bit depth to write back; 32 for a float TIFF.
        value_range: a float TIFF's ``(lowest, highest)`` when its values leave [0, 1]: the
            pixels are mapped linearly from that range to [0, 1] on reading and back on
            writing a float TIFF (other formats get the [0, 1] picture).
        icc: the file's colour profile (ICC), or None (sRGB): the fit works on the values as
            they are, and the result carries the profile, so a wide-gamut photo (Display P3,
            Adobe RGB) keeps its colours.
        coding_error: a JPEG's error, as decoded: per channel of :data:`YCBCR` (one for a
            grey picture) the root mean square its quantisation steps allow, in [0, 1] units;
            ``inf`` for chroma stored at a lower resolution. None for lossless files, and for
            pixels that are not the file's (:meth:`with_pixels`). See :func:`coding_error`.
        jpeg_noise: the white noise per channel ([0, 1] units) a JPEG's quantised
            coefficients say it held before it was compressed (:func:`dip.jpeg_noise.
            noise_sigma`), which the patches' estimate no longer sees; None for other files,
            and for pixels that are not the file's.
        exif: the photo's EXIF block (camera, date taken, exposure, place) from a JPEG, PNG,
            WebP or AVIF file, its orientation already applied to the pixels; None where the
            file has none. The result carries it (see :func:`result_metadata`).
        xmp: the photo's XMP packet (title, caption, keywords, rating, creator, rights), its
            orientation and resolution left out; None where the file has none. The result
            carries it (see :func:`result_metadata`).
        print_size: ``(width, height)`` in inches, the size the file says the picture prints
            at (its resolution, e.g. a scan's 600 dpi), or None where it says none. The
            result keeps it, so an enlarged result gets a finer resolution, not a larger
            print (see :func:`result_dpi`).
        png_colour: a PNG's chunks that say how its values are shown, where it holds no
            profile (:data:`PNG_COLOUR`: gAMA, cHRM, sRGB, cICP), as ``(kind, payload)``; a
            PNG result carries them (a linear PNG's gAMA 1.0 dropped showed it darker).
    """

    pixels: torch.Tensor
    alpha: torch.Tensor | None = None
    bits: int = 8
    value_range: tuple[float, float] | None = None
    icc: bytes | None = None
    coding_error: tuple[float, ...] | None = None
    jpeg_noise: float | None = None
    exif: bytes | None = None
    xmp: bytes | None = None
    print_size: tuple[float, float] | None = None
    png_colour: tuple[tuple[bytes, bytes], ...] = ()

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``"""
        return int(self.pixels.shape[-2]), int(self.pixels.shape[-1])

    def with_pixels(self, pixels: torch.Tensor) -> Picture:
        """The picture with other pixels: no longer the file's, so no coding error."""
        return replace(self, pixels=pixels, coding_error=None, jpeg_noise=None)

    def values(self) -> torch.Tensor:
        """The pixels in the file's own units, float64: a float TIFF's range restored."""
        low, high = self.value_range or (0.0, 1.0)
        return self.pixels.double() * (high - low) + low


def pixels_text(n: int) -> str:
    """``12.0 MP``, or ``1000 pixels`` where megapixels would round to nothing."""
    return f"{n / 1e6:.1f} MP" if n >= 100_000 else f"{n} pixels"


class TooLarge(InputError):
    """An image over the ``max_pixels`` limit (judged from its header)."""


def too_large(what: str, pixels: int, limit: int) -> TooLarge:
    """``what`` is over the ``max_pixels`` limit, both sizes said."""
    return TooLarge(f"{what} = {pixels_text(pixels)}, above the limit of "
                    f"{pixels_text(limit)} (raise it with {{arg:max_pixels}})")


@functools.cache
def open_heif() -> None:
    """Let Pillow open HEIF/HEIC, the format an iPhone saves its photos in, which Pillow alone
    cannot: pi-heif is the decode-only build of pillow-heif, Pillow's maintained plugin (its
    decoder applies the file's own rotation, and leaves the EXIF orientation at 1). Without
    it (an environment not reinstalled) HEIF is only not an image Pillow can read."""
    try:
        from pi_heif import register_heif_opener
    except ImportError:
        return
    register_heif_opener()


#: formats whose file may hold more than one picture and has a primary one, where Pillow
#: opens it: a JPEG's Multi-Picture index (MPO: a camera's large preview, a stereo camera's
#: second view; CIPA DC-007) and a HEIF's items (an iPhone's spatial photo)
PRIMARY_FORMATS = ("MPO", "HEIF")


#: decodes a file in a child process (argv: the path, the most pixels to decode), so that a
#: decoder that crashes on a damaged file takes down the child, not dip (:func:`_decodes`)
_PROBE = """
import sys
sys.path = [p for p in sys.path if p not in ("", ".")]  # not the working folder's modules
from PIL import Image
try:
    from pi_heif import register_heif_opener
    register_heif_opener()
except ImportError:
    pass
Image.MAX_IMAGE_PIXELS = None
print("probing", flush=True)
with Image.open(sys.argv[1]) as img:
    if img.size[0] * img.size[1] <= int(sys.argv[2]):
        img.load()
"""


def _decodes(path: Path, what: str, max_pixels: int) -> None:
    """Raise InputError when decoding ``path`` crashes the process. Only for ISO base media
    files (HEIF, AVIF): libheif has crashed the whole process (a segmentation fault) on a
    HEIC with two bytes of its header damaged, which would end a ``dip run`` over a phone's
    folder without a word, or a decoder still busy after :data:`PROBE_SECONDS`, which would
    hang it. Any other failure is :func:`_open`'s to say. Where the child
    cannot start (no interpreter, or one without Pillow: a frozen app), it is not probed."""
    try:
        with path.open("rb") as f:
            if f.read(8)[4:] != b"ftyp":
                return
        done = subprocess.run([sys.executable, "-c", _PROBE, str(path), str(max_pixels)],
                              capture_output=True, timeout=PROBE_SECONDS)
    except OSError:  # unreadable (_open says so), or no interpreter to start
        return
    except subprocess.TimeoutExpired as late:  # the child is killed by now
        if (late.stdout or b"").startswith(b"probing"):
            raise InputError(f"cannot read {what} {path}: its decoder was still at it after "
                             f"{PROBE_SECONDS} s (a damaged file can hang it)") from None
        return  # the child never came to the file (a machine this slow reads it in-process)
    if done.returncode >= 0 or not done.stdout.startswith(b"probing"):
        return
    number = -done.returncode
    if number in _CRASHES:
        raise InputError(f"cannot read {what} {path}: its decoder crashed on it (signal "
                         f"{number}): the file is damaged")
    raise InputError(f"cannot read {what} {path}: decoding it was stopped (signal {number}; "
                     f"out of memory?)")


#: how long the probe may decode a file before it is taken for one that hangs its decoder
#: (a decoder caught in a loop by a damaged stream would hang a whole ``dip run``): the
#: probe of a 35-megapixel HEIC takes 2.5 s on a 2-core CPU, its interpreter's start included
PROBE_SECONDS = 120

#: signals of a process that crashed itself (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT), not
#: one that was killed (SIGKILL: out of memory)
_CRASHES = {int(getattr(signal, name)) for name in ("SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE",
                                                     "SIGABRT") if hasattr(signal, name)}


@dataclass(frozen=True)
class _Opened:
    """A decoded file (:func:`_open`), turned as it is shown, and what it said that the
    turn rewrites or drops (read before it)."""

    img: Image.Image
    #: the format of a 16-bit colour file Pillow would read as 8 bits ("" otherwise)
    deep: str = ""
    #: a JPEG's coding error per channel (:func:`coding_error`)
    coding: tuple[float, ...] | None = None
    #: the print size in inches, as shown (:func:`dip.metadata.print_size`)
    inches: tuple[float, float] | None = None
    #: the EXIF block as stored (exif_transpose rewrites it, "©" as "?")
    exif: bytes | None = None
    #: the noise a JPEG held before it was compressed (:func:`dip.jpeg_noise.noise_sigma`)
    noise: float | None = None
    #: a PNG's gAMA, cHRM, sRGB and cICP chunks (:attr:`Picture.png_colour`)
    png_colour: tuple[tuple[bytes, bytes], ...] = ()
    #: the file's format as Pillow names it (the turned copy has none)
    format: str | None = None


def _open(path: str | os.PathLike, what: str, max_pixels: int,
          deep_png_elsewhere: bool = False) -> _Opened:
    """Open and decode (see :class:`_Opened`; :func:`load_image` for ``deep``). With
    ``deep_png_elsewhere`` a 16-bit colour PNG is not decoded here: the caller decodes it at
    16 bits itself."""
    path = regular_file(path, what)
    open_heif()
    _decodes(path, what, max_pixels)
    try:
        with own_pixel_limit():
            img = Image.open(path)
        w, h = img.size
        if w * h > max_pixels:
            raise too_large(f"{what} {path} is {w}x{h}", w * h, max_pixels)
        frames = getattr(img, "n_frames", 1)
        if frames > 1 and img.format == "TIFF":  # (one tifffile left to Pillow: CMYK, ...)
            frames = _full_resolution_frames(img)
        if frames > 1 and img.format not in PRIMARY_FORMATS:
            raise InputError(f"{what} {path} holds {frames} frames (an animation or a "
                             f"multi-page file); dip restores one picture: save the one you "
                             f"want on its own")
        deep = img.format if img.mode in ("RGB", "RGBA", "LA") and _deep(img) else ""
        if deep == "PNG" and deep_png_elsewhere:
            # not decoded here (exif_transpose would decode it too): the caller reads and
            # checks its bytes once (_load_png16)
            return _Opened(img, deep)
        png_colour = ()
        if img.format == "PNG":
            chunks = list(png_chunks(path.read_bytes()))
            check_png_data(chunks, path, what)
            png_colour = _png_colour(chunks)
        _xmp_as_stored(img)  # a TIFF's, before load() reads its orientation from it
        img.load()  # decoded now: a truncated file fails here with a clear message, and a
        # PNG's text after its pixel data (XMP) is read before its EXIF orientation is
        _xmp_as_stored(img)  # a PNG's tEXt/zTXt after its pixel data, read by load()
        coding = coding_error(img)  # before the turn: the turned copy has no tables
        inches = metadata.turned(metadata.print_size(img.size, metadata.stated_dpi(img)),
                                 img.getexif().get(metadata.ORIENTATION, 1))  # as it is shown
        exif = img.info.get("exif") or (  # as stored: exif_transpose rewrites it, "©" as "?"
            metadata.tiff_exif({code: img.tag_v2.get(code) for code in metadata.DESCRIPTIVE},
                               encoding="latin-1") if img.format == "TIFF" else None)
        # on the file's grid of blocks, before the turn; a JPEG whose tables coding_error
        # reads (its luma's first: not one stored as R, G, B)
        noise = None if coding is None else jpeg_noise.noise_sigma(img)
        return _Opened(ImageOps.exif_transpose(img), deep, coding, inches, exif, noise,
                       png_colour, img.format)
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"{what} is not an image Pillow can read: {path}") from None
    except (OSError, SyntaxError, ValueError, EOFError, RuntimeError) as exc:
        # (EOFError and RuntimeError: HEIF's decoder on a damaged file)
        raise InputError(f"cannot read {what} {path}: {exc}") from None


def _xmp_as_stored(img: Image.Image) -> None:
    """The XMP packet Pillow read as text (a TIFF's XMP tag stored as text, whose getexif
    would raise a TypeError; a PNG's tEXt/zTXt), which it decoded as Latin-1, as the stored
    bytes in ``info["xmp"]``."""
    xmp = img.info.get("xmp") or img.info.get(_PNG_XMP.decode())
    if isinstance(xmp, str):
        img.info["xmp"] = xmp.encode("latin-1", "replace")


def shown(path: str | os.PathLike, limit: int = 200) -> str:
    """``path`` as a message quotes it: a long one is cut in the middle (its start and its
    file name stay), so that a 5000-character name is still one readable line; and
    :func:`printable`."""
    text = printable(str(path))
    if len(text) <= limit:
        return text
    half = (limit - 1) // 2
    return f"{text[:half]}…{text[-half:]}"


#: control characters (C0, DEL, C1): a terminal acts on them instead of showing them
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with each control character written as Python writes it (``\\n``,
    ``\\x1b``): a file name holding a newline split a one-line message in two, and one
    holding escape sequences set the terminal's title or cleared its screen."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def regular_file(path: str | os.PathLike, what: str, kind: str = "an image") -> Path:
    """``path`` if it is an existing regular file (not a folder, FIFO or device: a FIFO would
    hang the second of two reads); ``what`` it is for, and the ``kind`` of file it must be,
    name it in the refusal (a loop of links is said as one, not as a missing file)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(f"{what} not found: {shown(path)}") from None
    except OSError as exc:  # a name too long, a loop of links, no permission on a folder
        raise InputError(f"cannot use the {what} path {shown(path)}: "
                         f"{exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{what} is a folder, not {kind}: {shown(path)}")
    if not stat.S_ISREG(mode):
        raise InputError(f"{what} {shown(path)} is not a regular file (a pipe or a device?); "
                         f"save it to a file first")
    return path


# --- PNG chunks: a short pixel stream, and the orientation of a 16-bit colour PNG ----------------

def png_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """``(type, payload)`` of each chunk of a PNG file's bytes (CRCs are Pillow's to check)."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        yield kind, data[pos + 8:pos + 8 + length]
        pos += 12 + length


def _png_raw_size(width: int, height: int, depth: int, colour: int, interlace: int) -> int:
    """The bytes a PNG's image data decompresses to (filter bytes included)."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour, 1)
    if not interlace:
        return height * (1 + (width * channels * depth + 7) // 8)
    total = 0  # Adam7: seven passes, each its own rows
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4),
                           (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)):
        w, h = (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy
        if w and h:
            total += h * (1 + (w * channels * depth + 7) // 8)
    return total


def check_png_data(chunks: list[tuple[bytes, bytes]], path: Path, what: str) -> None:
    """Refuse a PNG (its :func:`png_chunks`) whose pixel data stops short (Pillow fills the
    missing rows with black and says nothing, even with its truncated-image option off)."""
    header = next((payload for kind, payload in chunks if kind == b"IHDR"), b"")
    if len(header) < 13:
        raise InputError(f"cannot read {what} {path}: no PNG header")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header[:13])
    expected = _png_raw_size(width, height, depth, colour, interlace)
    stream = zlib.decompressobj()
    try:  # never more than the header's size and one byte: a small file can inflate to GBs
        raw = len(stream.decompress(b"".join(p for k, p in chunks if k == b"IDAT"),
                                    expected + 1))
    except zlib.error as exc:
        raise InputError(f"cannot read {what} {path}: its pixel data is damaged ({exc})") from None
    if raw > expected:
        raise InputError(f"{what} {path} holds more pixel data than its {width}x{height} "
                         f"header says (a damaged or crafted file); it is refused")
    if raw < expected:
        rows = raw * height // expected if expected else 0
        raise InputError(f"{what} {path} is truncated: its pixel data stops after about {rows} "
                         f"of {height} rows")


def result_metadata(picture: Picture, state_dpi: bool = False
                    ) -> tuple[bytes | None, bytes | None, bool]:
    """The EXIF block and XMP packet written with ``picture`` (the input's, with its pixel
    size and resolution: :func:`dip.metadata.exif_for`, :func:`dip.metadata.xmp_for`), and
    whether it must state orientation 1: where its XMP still names one (a history entry's),
    which Pillow would apply where no EXIF orientation is stated. ``state_dpi``: the EXIF
    block states the resolution where it gave none (WebP's one place for it). Built once a
    write: each is a parse and a rewrite."""
    xmp = None if picture.xmp is None else metadata.xmp_for(picture.xmp, picture.size)
    upright = metadata.xmp_orientation(xmp) is not None
    return (metadata.exif_for(picture.exif, picture.size, result_dpi(picture), upright=upright,
                              state_dpi=state_dpi), xmp, upright)


def result_dpi(picture: Picture) -> tuple[float, float] | None:
    """The resolution ``(x, y)`` in pixels per inch that prints ``picture`` at its input's
    size (:attr:`Picture.print_size`), or None."""
    if picture.print_size is None:
        return None
    height, width = picture.size
    return width / picture.print_size[0], height / picture.print_size[1]


def _written_dpi(picture: Picture, fmt: str) -> tuple[float, float] | None:
    """:func:`result_dpi` where ``fmt`` can state it; else None, with a warning."""
    dpi = result_dpi(picture)
    if dpi is None or fmt not in metadata.DPI_RANGE:
        return None
    if metadata.stateable(dpi, fmt):
        return dpi
    low, high = metadata.DPI_RANGE[fmt]
    warnings.warn(f"the result's resolution ({dpi[0]:.4g} x {dpi[1]:.4g} dpi: the input's print "
                  f"size) is outside what {fmt} states ({low:g} to {high:.4g} dpi); it states "
                  f"none", DipWarning, stacklevel=outside_dip())
    return None


#: EXIF orientation -> (rotations by 90 degrees counter-clockwise, mirror first)
#: (5 transposes: mirrored, then a quarter turn counter-clockwise; 7 transverses: mirrored,
#: then three quarter turns)
_ORIENTATIONS = {2: (0, True), 3: (2, False), 4: (2, True), 5: (1, True), 6: (3, False),
                 7: (3, True), 8: (1, False)}


def orient(t: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply an EXIF orientation to ``(1, C, H, W)``, as ImageOps.exif_transpose does."""
    turns, mirror = _ORIENTATIONS.get(orientation, (0, False))
    if mirror:
        t = t.flip(-1)
    return torch.rot90(t, turns, dims=(-2, -1)) if turns else t


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


def _deep(img: Image.Image) -> bool:
    """Whether the file stores more than 8 bits a sample, before Pillow decodes it to 8: its
    raw mode (``RGB;16B`` for a 16-bit colour PNG), or a PPM's maxval over 255."""
    args = img.tile[0].args if img.tile else None
    if isinstance(args, str):
        return ";16" in args
    if not args:
        return False
    if img.format == "PPM" and len(args) > 1 and isinstance(args[1], int):
        return args[1] > 255
    return ";16" in str(args[0])


def _load_png16(path: Path, what: str) -> Picture:
    """A 16-bit PNG with colour or alpha, every bit kept (pypng decodes it)."""
    import png

    try:
        data = path.read_bytes()  # read once (a second open of a pipe would hang)
    except OSError as exc:  # gone or unreadable since it was opened
        raise InputError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    chunks = list(png_chunks(data))  # scanned once
    check_png_data(chunks, path, what)
    try:
        w, h, rows, info = png.Reader(bytes=data).asDirect()
        array = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows])
        array = array.reshape(h, w, info["planes"]).astype(np.float32)
    except (png.Error, OSError, ValueError, zlib.error) as exc:
        raise InputError(f"cannot read {what} {path}: {exc}") from None
    alpha = _to_tensor(array[..., -1], 65535.0) if info["alpha"] else None
    colour = array[..., :-1] if info["alpha"] else array
    found = _png_metadata(chunks)
    exif = found.get(b"eXIf") or None  # (an empty chunk is none, as Pillow reads it)
    # the orientation Pillow's exif_transpose gives the 8-bit PNGs of the same picture
    turn = metadata.turn_of(exif and metadata.exif_orientation(exif), found.get(_PNG_XMP))
    stored = Picture(_to_tensor(colour, 65535.0), alpha, 16, icc=found.get(b"iCCP"),
                     exif=exif and metadata.carried_exif(exif),
                     xmp=metadata.carried_xmp(found.get(_PNG_XMP)),
                     print_size=metadata.print_size((w, h), found.get(b"pHYs")),
                     png_colour=found[_COLOUR])
    return oriented(stored, turn)


#: the keyword of the PNG text chunk (iTXt) that holds an XMP packet
_PNG_XMP = b"XML:com.adobe.xmp"


def _png_metadata(chunks: list[tuple[bytes, bytes]]) -> dict[bytes, Any]:
    """What a PNG's chunks (:func:`png_chunks`) say beside its pixels, as Pillow reads them,
    in one pass: ``b"eXIf"`` the first EXIF block; ``b"iCCP"`` the colour profile and
    ``b"pHYs"`` the resolution in pixels per inch (each before the pixel data only; a pHYs of
    an aspect ratio alone is none); ``_PNG_XMP`` the last XMP packet of a text chunk with that
    keyword; ``_COLOUR`` the first of each of :data:`PNG_COLOUR` before the pixel data. A key
    is absent where the file has none (or a damaged one)."""
    found: dict[bytes, Any] = {_COLOUR: _png_colour(chunks)}
    pixels = False
    for kind, payload in chunks:
        pixels = pixels or kind == b"IDAT"
        if kind == b"eXIf" and kind not in found:
            found[kind] = payload
        elif kind == b"iCCP" and not pixels and kind not in found:
            found[kind] = _png_icc(payload)
        elif kind == b"pHYs" and not pixels and kind not in found and len(payload) == 9:
            x, y, metre = struct.unpack(">IIB", payload)
            found[kind] = (x * 0.0254, y * 0.0254) if metre == 1 else None
        elif kind in (b"iTXt", b"tEXt", b"zTXt") and payload.startswith(_PNG_XMP + b"\0"):
            found[_PNG_XMP] = _png_xmp(kind, payload[len(_PNG_XMP) + 1:])
    return {key: value for key, value in found.items() if value is not None}


def _png_colour(chunks: list[tuple[bytes, bytes]]) -> tuple[tuple[bytes, bytes], ...]:
    """The first of each of a PNG's :data:`PNG_COLOUR` chunks before its pixel data."""
    colour: dict[bytes, bytes] = {}
    for kind, payload in chunks:
        if kind == b"IDAT":
            break
        if kind in PNG_COLOUR:
            colour.setdefault(kind, payload)
    return tuple(colour.items())


#: a PNG's chunks that say how its values are shown where it has no profile: its gamma,
#: its primaries, that it is sRGB, its coding-independent code points (an HDR PNG's)
PNG_COLOUR = (b"gAMA", b"cHRM", b"sRGB", b"cICP")
#: _png_metadata's key for them
_COLOUR = b"colour"
#: sRGB's gamma (1/2.2) and primaries (white x, y; red; green; blue) as a PNG states them
_SRGB_GAMMA = 45455
_SRGB_PRIMARIES = (31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000)


def shown_otherwise(picture: Picture) -> str | None:
    """What a PNG's colour chunks say that a viewer would show differently without them (a
    gamma or primaries other than sRGB's, an HDR coding), where no profile or sRGB chunk
    overrides them; None where leaving them out changes nothing visible."""
    chunks = dict(picture.png_colour)
    if not chunks or matching_icc(picture) or b"sRGB" in chunks:
        return None
    gamma = chunks.get(b"gAMA", b"")
    primaries = chunks.get(b"cHRM", b"")
    said = [f"gamma {g / 100000:.4g} (sRGB's is 0.4545)"
            for g in (struct.unpack(">I", gamma) if len(gamma) == 4 else ())
            if g and abs(g - _SRGB_GAMMA) > 0.01 * _SRGB_GAMMA]
    if len(primaries) == 32 and any(abs(a - b) > 100 for a, b in zip(
            struct.unpack(">8I", primaries), _SRGB_PRIMARIES)):
        said.append("primaries other than sRGB's")
    if b"cICP" in chunks:
        said.append("cICP coding (HDR)")
    return " and ".join(said) or None


def _png_xmp(kind: bytes, rest: bytes) -> bytes | None:
    """The packet of an XMP text chunk after its keyword and 0: iTXt (0, compressed?, method,
    language, 0, translated keyword, 0, text), tEXt (text) or zTXt (method, zlib text)."""
    compressed, text = ((rest[:1] == b"\1", rest[2:].split(b"\0", 2)[-1]) if kind == b"iTXt"
                        else (kind == b"zTXt", rest[1:] if kind == b"zTXt" else rest))
    try:  # (at most Pillow's limit for a text chunk: a zip bomb)
        return (zlib.decompressobj().decompress(text, metadata.XMP_MOST + 1)
                if compressed else text)
    except zlib.error:
        return None


def _png_icc(payload: bytes) -> bytes | None:
    """The colour profile of an iCCP chunk (a name, 0, the method 0, zlib data)."""
    _, _, rest = payload.partition(b"\0")
    try:
        return zlib.decompress(rest[1:])
    except zlib.error:  # a damaged profile: none, as Pillow would drop it
        return None


def _png_with(data: bytes, icc: bytes | None, exif: bytes | None,
              dpi: tuple[float, float] | None = None, xmp: bytes | None = None,
              colour: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """A PNG's bytes with ``colour``'s chunks (gAMA, cHRM, sRGB, cICP), an iCCP chunk (the
    colour profile), an eXIf chunk, a pHYs chunk (the resolution, in pixels per metre) and an
    iTXt chunk (XMP) after its header, where given (pypng writes none)."""
    physical = dpi and struct.pack(">IIB", *(round(d / 0.0254) for d in dpi), 1)
    chunks = b"".join(_png_chunk(kind, payload) for kind, payload in colour
                      if not (icc and kind == b"sRGB"))  # (the spec allows one of the two)
    for kind, payload in ((b"iCCP", icc and b"ICC profile\0\0" + zlib.compress(icc)),
                          (b"eXIf", exif and exif.removeprefix(b"Exif\0\0")),
                          (b"pHYs", physical),
                          (b"iTXt", xmp and _PNG_XMP + b"\0\0\0\0\0" + xmp)):
        if payload:
            chunks += _png_chunk(kind, payload)
    return data[:33] + chunks + data[33:]  # 8 bytes of signature, 25 of IHDR


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload)))


def _is_tiff(path: Path, what: str) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")
    except OSError as exc:  # no permission to read it
        raise InputError(f"cannot read {what} {shown(path)}: {exc.strerror or exc}") from None


#: TIFF photometric interpretations whose samples are the picture as they are: grey (black
#: is 0) and RGB. The others (inverted grey, palette, CMYK, YCbCr, CIELAB), and samples of
#: fewer than 8 bits, are Pillow's to convert.
_TIFF_AS_IS = {1: 1, 2: 3}  # photometric -> colour samples
_MIN_IS_WHITE = 0  # photometric: grey, 0 is white
#: ExtraSamples: 0 unspecified (not alpha), 1 alpha premultiplied into the colour, 2 alpha
_PREMULTIPLIED, _ALPHA = 1, 2


def _load_tiff(path: Path, what: str, max_pixels: int) -> Picture | None:
    """A TIFF through tifffile: 8-bit, 16-bit, other integers or float; grey or RGB, with or
    without alpha.

    A float TIFF's values (and those of integers other than 8- and 16-bit unsigned: signed,
    32-bit) are mapped to [0, 1] from their own range when they leave it (the range is kept
    in :attr:`Picture.value_range` and restored when a float TIFF is written). None when
    Pillow is to read the file: a bilevel, palette, CMYK or YCbCr picture, or a compression
    that imagecodecs cannot decode. Inverted grey (MinIsWhite) is read as it looks.
    """
    import logging

    import tifffile

    quiet = logging.getLogger("tifffile")  # its warnings about a damaged file are ours to say
    was, quiet.disabled = quiet.disabled, True
    try:
        with tifffile.TiffFile(path) as tif:
            page = _tiff_page(tif, f"{what} {path}")
            colour = _TIFF_AS_IS.get(int(page.photometric))
            # inverted grey (MinIsWhite) of 8 bits or more: Pillow read 16 bits as a negative
            inverted = (int(page.photometric) == _MIN_IS_WHITE
                        and np.dtype(page.dtype).kind == "u")
            if inverted:
                colour = 1
            if colour is None or page.bitspersample < 8:
                return None
            h, w = page.imagelength, page.imagewidth
            if h * w > max_pixels:
                raise too_large(f"{what} {path} is {w}x{h}", w * h, max_pixels)
            array = _tiff_samples(page, inverted)
            if array is None:
                return None
            extras = tuple(int(e) for e in (page.extrasamples or ()))
            turn = _tiff_orientation(page)
            inches = _tiff_print_size(page)
            icc = page.tags.get(34675)  # InterColorProfile
            icc = bytes(icc.value) if icc is not None and isinstance(
                icc.value, (bytes, bytearray)) else None
            exif, xmp = _tiff_metadata(page)
            turn = metadata.turn_of(turn, xmp)  # as Pillow turns a TIFF it reads
            xmp = metadata.carried_xmp(xmp)
    except InputError:
        raise
    except Exception as exc:  # tifffile's errors are many kinds (codecs, structure)
        raise InputError(f"cannot read {what} {path}: {exc}") from None
    finally:
        quiet.disabled = was
    picture = replace(_tiff_picture(array, colour, extras, f"{what} {path}"), icc=icc,
                      exif=exif, xmp=xmp, print_size=inches)
    return oriented(picture, turn)


def _tiff_page(tif, name: str):
    """The TIFF's picture: its one page at full resolution. A page of reduced resolution
    (NewSubfileType bit 0: a thumbnail, a preview) is not another picture."""
    pages = [page for page in tif.pages if not _reduced(page.subfiletype)]
    if len(pages) > 1:
        raise InputError(f"{name} holds {len(pages)} pages (a multi-page TIFF); dip restores "
                         f"one picture: save the one you want on its own")
    return pages[0] if pages else tif.pages[0]


def _full_resolution_frames(img: Image.Image) -> int:
    """How many of a TIFF's pages Pillow opened are pictures, not reduced-resolution copies;
    ``img`` is left at the first of them."""
    full = []
    for index in range(img.n_frames):
        img.seek(index)
        if not _reduced(img.tag_v2.get(254)):
            full.append(index)
    img.seek(full[0] if full else 0)
    return len(full)


def _reduced(subfile_type: int | None) -> bool:
    """Whether a TIFF page's NewSubfileType (tag 254) marks a reduced-resolution copy."""
    return bool(int(subfile_type or 0) & 1)


def _tiff_samples(page, inverted: bool) -> np.ndarray | None:
    """A page's samples ``(H, W)`` or ``(H, W, S)``, interleaved, integers of fewer bits
    than their container (12 in 16) scaled to its range (they read dark), inverted grey as
    it looks (its alpha not inverted); None where imagecodecs cannot decode them."""
    try:
        array = page.asarray()
    except ValueError as exc:
        if "imagecodecs" in str(exc):
            return None
        raise
    if array.ndim == 3 and int(page.planarconfig) == 2:
        array = np.moveaxis(array, 0, -1)  # planar (samples first) -> interleaved
    bits = int(page.bitspersample)
    if array.dtype.kind == "u" and bits < 8 * array.dtype.itemsize:
        full = np.iinfo(array.dtype).max
        array = np.rint(array * (full / ((1 << bits) - 1))).clip(0, full).astype(array.dtype)
    if inverted:  # the grey sample only
        array = array.copy()
        grey = array if array.ndim == 2 else array[..., 0]
        np.subtract(np.iinfo(array.dtype).max, grey, out=grey)
    return array


def _tiff_metadata(page) -> tuple[bytes | None, bytes | None]:
    """A TIFF page's descriptive tags as an EXIF block (:func:`dip.metadata.tiff_exif`), and
    its XMP packet (tag 700) as stored."""
    exif = metadata.tiff_exif(
        {code: page.tags[code].value for code in metadata.DESCRIPTIVE if code in page.tags},
        page.tags[34665].value if 34665 in page.tags else None)
    xmp = page.tags[700].value if 700 in page.tags else None
    xmp = (bytes(xmp) if isinstance(xmp, (bytes, bytearray))
           else xmp.encode() if isinstance(xmp, str) else None)
    return exif, xmp


def _tiff_print_size(page) -> tuple[float, float] | None:
    """A TIFF page's print size in inches, from its resolution tags (inches or centimetres;
    none where the unit is none)."""
    per_inch = metadata.PER_INCH.get(int(page.resolutionunit or 1))
    if per_inch is None or not {282, 283} <= set(page.tags.keys()):  # tifffile says 1 x 1
        return None  # where the tags are missing; a file without them states no print size
    return metadata.print_size(
        (page.imagewidth, page.imagelength), tuple(r * per_inch for r in page.resolution))


def _tiff_picture(array: np.ndarray, colour: int, extras: tuple[int, ...],
                  name: str) -> Picture:
    """A TIFF's samples ``(H, W)`` or ``(H, W, S)`` as a Picture: ``colour`` samples, then
    extra ones (``extras``: their ExtraSamples kinds), of which the first alpha is kept."""
    samples = array.reshape(*array.shape[:2], -1)
    if array.ndim not in (2, 3) or samples.shape[-1] < colour:
        raise InputError(f"{name} is a TIFF of shape {array.shape}; dip reads grey, RGB, and "
                         f"either with alpha")
    kinds = extras or ((_ALPHA,) if samples.shape[-1] == colour + 1 else ())  # no tag: alpha
    alpha_at = next((colour + i for i, k in enumerate(kinds) if k in (_PREMULTIPLIED, _ALPHA)
                     and colour + i < samples.shape[-1]), None)
    kind = array.dtype
    if not (np.issubdtype(kind, np.floating) or np.issubdtype(kind, np.integer)):
        raise InputError(f"{name} holds {kind} samples; dip reads integers and floats")
    if np.issubdtype(kind, np.floating) or kind not in (np.uint8, np.uint16):
        full, bits = 1.0, 32  # float, or integers of another kind: their own range, as float
        alpha_full = 1.0 if np.issubdtype(kind, np.floating) else float(np.iinfo(kind).max)
    else:
        full = alpha_full = float(np.iinfo(kind).max)
        bits = 8 * kind.itemsize
    values = samples[..., :colour].astype(np.float32) / full
    dropped = samples.shape[-1] - colour - (alpha_at is not None)
    if dropped:  # (an infrared band, a depth): a result holds the picture and its alpha only
        warnings.warn(f"{name}: {dropped} extra sample(s) per pixel beside the "
                      f"{'grey' if colour == 1 else 'RGB'} picture are not restored and not "
                      f"written back", DipWarning, stacklevel=outside_dip())
    alpha = None
    if alpha_at is not None:
        alpha = samples[..., alpha_at].astype(np.float32) / alpha_full
        if not np.isfinite(alpha).all():
            raise InputError(f"{name} has NaN or infinite alpha values")
        alpha = np.clip(alpha, 0, 1)
        if kinds[alpha_at - colour] == _PREMULTIPLIED:  # the colour was multiplied by it
            values = np.where(alpha[..., None] > 0, values / np.maximum(alpha, 1e-12)[..., None],
                              values)
    alpha_t = None if alpha is None else _to_tensor(alpha, 1.0)
    if bits == 32:
        return replace(_float_picture(values), alpha=alpha_t)
    return Picture(_to_tensor(values, 1.0).clamp(0, 1), alpha_t, bits)


def _tiff_orientation(page) -> int | None:
    """A TIFF page's Orientation tag (274; the values are EXIF's), None when it has none."""
    tag = page.tags.get(274)
    try:
        return int(tag.value) if tag is not None else None
    except (TypeError, ValueError):
        return None


def oriented(picture: Picture, orientation: int) -> Picture:
    """``picture`` with an EXIF orientation applied to its pixels and alpha (and to its
    print size: 5-8 turn it a quarter)."""
    if orientation == 1:
        return picture
    alpha = None if picture.alpha is None else orient(picture.alpha, orientation)
    return replace(picture, pixels=orient(picture.pixels, orientation), alpha=alpha,
                   print_size=metadata.turned(picture.print_size, orientation))


def _float_picture(colour: np.ndarray) -> Picture:
    """Float samples ``(H, W)`` or ``(H, W, C)`` as a 32-bit Picture, mapped to [0, 1] from
    their own range when they leave it."""
    if not np.isfinite(colour).all():
        raise InputError("a float TIFF with NaN or infinite values cannot be restored")
    low, high = float(colour.min()), float(colour.max())
    value_range = None
    if low < 0 or high > 1:
        if low == high:  # one value (a flat 5.0): its range with [0, 1], not a range of 0,
            low, high = min(low, 0.0), max(high, 1.0)  # where noise added came back as 5.0
        value_range = (low, high)
        colour = (colour - low) / (high - low)
    return Picture(_to_tensor(colour, 1.0), None, 32, value_range)


def in_units_of(picture: Picture, other: Picture) -> torch.Tensor:
    """``picture``'s pixels in ``other``'s [0, 1] units: two float TIFFs (a reference and
    the input) are compared in their values, not each mapped from its own range."""
    if picture.bits != 32 or other.bits != 32 or picture.value_range == other.value_range:
        return picture.pixels
    low, high = other.value_range or (0.0, 1.0)
    return ((picture.values() - low) / ((high - low) or 1.0)).float()


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
    if _is_tiff(regular_file(path, what), what):  # every depth, float included: tifffile
        picture = _load_tiff(Path(path), what, max_pixels)
        if picture is not None:
            return picture  # else a compression tifffile cannot decode alone: Pillow's turn
    opened = _open(path, what, max_pixels, deep_png_elsewhere=True)
    if opened.deep:
        opened.img.close()  # (read again at 16 bits, or refused: its file is done with)
        if opened.deep == "TIFF":  # (tifffile without imagecodecs, or a rare compression)
            raise InputError(f"{what} {path} is 16-bit colour TIFF in a compression that "
                             f"tifffile cannot decode here (is imagecodecs installed?); save it "
                             f"uncompressed or with ZIP (kept at 16 bits) or as 8-bit")
        if opened.deep != "PNG":
            raise InputError(f"{what} {path} is 16-bit colour {opened.deep}, which dip can only "
                             f"read as 8 bits; save it as a 16-bit PNG or TIFF (kept at 16 "
                             f"bits) or as 8-bit")
        return _load_png16(Path(path), what)
    return _from_pillow(opened)


def _from_pillow(opened: _Opened) -> Picture:
    """A decoded Pillow image of any mode as a Picture, with its colour profile, metadata
    and, for a JPEG, its coding error."""
    img = opened.img
    icc = img.info.get("icc_profile")
    picture = replace(_pillow_pixels(img, opened.format), icc=bytes(icc) if icc else None,
                      exif=metadata.carried_exif(opened.exif),
                      xmp=metadata.carried_xmp(img.info.get("xmp")),
                      print_size=opened.inches, jpeg_noise=opened.noise,
                      png_colour=opened.png_colour)
    coding = opened.coding
    return (replace(picture, coding_error=coding)
            if coding is not None and len(coding) == picture.pixels.shape[1] else picture)


#: JPEG's colour transform (ITU-T T.871, full range): rows Y, Cb, Cr of RGB; and its inverse
YCBCR = torch.tensor([[0.299, 0.587, 0.114],
                      [-0.168736, -0.331264, 0.5],
                      [0.5, -0.418688, -0.081312]], dtype=torch.float64)
RGB_OF_YCBCR = torch.linalg.inv(YCBCR)


def coding_error(img: Image.Image) -> tuple[float, ...] | None:
    """A JPEG's decoding error from its quantisation tables, per channel of :data:`YCBCR`
    (Y alone for a grey file), root mean square in [0, 1] units; None for other files.

    Each DCT coefficient is rounded to a multiple of its step ``q``, an error uniform over
    ``q`` (variance ``q^2 / 12``) where the coefficient was not rounded to zero and smaller
    where it was, and the orthonormal DCT keeps the sum of squares: ``sqrt(mean(q^2) / 12)``,
    about an upper estimate of the channel's error. On 32 and 128 px crops of the 9 colour
    images (Pillow's encoder) the luma's true error was 0.73-1.02 times it at quality 95,
    0.52-0.91 at 90 and 0.31-0.69 at 75 (benchmarks/jpeg_error.py). Chroma stored at half
    resolution or less (4:2:0, 4:2:2, Pillow's default) has lost detail no table says:
    ``inf``.
    """
    if img.format not in ("JPEG", "MPO") or img.mode not in ("L", "RGB"):
        return None
    tables = getattr(img, "quantization", None) or {}
    layers = getattr(img, "layer", None) or []  # (component, h, v, its table) per channel
    if len(layers) != len(img.mode) or (img.mode == "RGB" and not _stored_as_ycbcr(img)):
        return None  # a layout not known, or channels stored as R, G, B

    def bound(layer) -> float:
        q = np.asarray(tables.get(layer[3], ()), dtype=np.float64)
        return float(np.sqrt((q ** 2).mean() / 12) / 255) if q.size else float("inf")

    if img.mode == "L":
        return (bound(layers[0]),)
    # chroma at the luma's resolution (4:4:4, however the factors are written)
    full = all(layer[1:3] == layers[0][1:3] for layer in layers)
    return (bound(layers[0]), *(bound(c) if full else float("inf") for c in layers[1:]))


def _stored_as_ycbcr(img: Image.Image) -> bool:
    """Whether a 3-channel JPEG's channels are Y, Cb, Cr, as libjpeg decides: a JFIF marker
    says so; else Adobe's marker's transform; else components named R, G, B are not."""
    if "jfif" in img.info:
        return True
    if "adobe" in img.info:
        return img.info.get("adobe_transform") != 0
    return [layer[0] for layer in img.layer] != [82, 71, 66]


def _pillow_pixels(img: Image.Image, fmt: str | None = None) -> Picture:
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
        if (fmt == "TIFF" and img.mode == "I") or (
                array.size and (array.min() < 0 or array.max() > 65535)):
            # a TIFF's 32-bit or signed integers (Pillow opens 16-bit grey as I;16; one that
            # tifffile could not decode): their own range, as float, as tifffile reads them
            return _float_picture(array)
        # Pillow opens 16-bit grey PNGs as "I;16" or as 32-bit "I"; both hold 0..65535. A
        # tRNS chunk names the one grey level that is transparent.
        clear = img.info.get("transparency")
        alpha = (None if not isinstance(clear, int) or isinstance(clear, bool)
                 else _to_tensor((array != clear).astype(np.float32), 1.0))
        return Picture(_to_tensor(array, 65535.0).clamp(0, 1), alpha, 16)
    if img.mode == "F":  # a float TIFF tifffile could not decode alone: its range is kept
        return _float_picture(np.asarray(img, dtype=np.float32))
    if img.mode == "1":
        img = img.convert("L")
    alpha = None
    if img.mode in ("LA", "RGBA"):
        alpha = _to_tensor(np.asarray(img.getchannel("A")), 255.0)
        img = img.convert("L" if img.mode == "LA" else "RGB")
    if img.mode not in ("L", "RGB"):
        try:
            img = img.convert("RGB")  # CMYK, YCbCr
        except ValueError:  # LAB, HSV: Pillow converts those to nothing
            raise InputError(f"a picture in Pillow's mode {img.mode} cannot be read as RGB; "
                             f"save it as RGB") from None
    return Picture(_to_tensor(np.asarray(img), 255.0), alpha, 8)


#: the modes a mask is read in as they are: their samples' maximum is the lightness
_MASK_MODES = ("1", "L", "LA", "RGB", "RGBA", "I", "I;16", "I;16B", "I;16L", "F")


def load_mask(path: str | os.PathLike, size: tuple[int, int], *, keeps: bool = False,
              max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Read an inpainting mask and return the KNOWN-pixel map.

    By default light (white) mask pixels are the ones to fill — the convention of OpenCV,
    scikit-image and paint programs. With ``keeps=True`` light pixels are the known ones (the
    Deep Image Prior notebooks' convention). Light means 50 % grey or more, as a user who
    drew in black and white means: a JPEG mask's compression noise near black is not a hole.
    A mask with many grey pixels draws a :class:`DipWarning`.

    Args:
        size: ``(H, W)`` of the image the mask belongs to; another size is an error.

    Returns:
        ``(1, 1, H, W)`` float32, 1 = known pixel, 0 = pixel to fill.
    """
    img = _open(path, "mask", max_pixels).img
    if "transparency" in img.info and img.mode in ("1", "L", "P", "RGB"):  # a PNG's tRNS: its
        # transparent colour is seen over black too (a palette mask, as pngquant saves one,
        # was read as its colours: the clear background, stored white, became holes)
        img = img.convert("LA" if img.mode in ("1", "L") else "RGBA")
    if img.mode not in _MASK_MODES:  # palette, CMYK (where white is all zeros), YCbCr
        try:
            img = img.convert("RGBA" if img.mode == "PA" else "RGB")
        except ValueError:
            raise InputError(f"mask {path} is in Pillow's mode {img.mode}, which cannot be "
                             f"read as RGB; save it as black and white") from None
    array = np.asarray(img)
    clear = False
    if img.mode in ("LA", "RGBA"):  # as it is seen over black: strokes painted on a clear
        # layer are the mask, whatever colour the clear pixels hide (often white)
        clear = bool((array[..., -1] < 128).any())
        array = np.rint(array[..., :-1] * (array[..., -1:] / 255.0)).astype(np.uint8)
    if array.ndim == 3:
        array = array.max(axis=-1)
    h, w = size
    if array.shape != (h, w):
        turned = (" (the image's size turned a quarter: a photo with an EXIF orientation is "
                  "read as it is shown, turned; draw the mask on it as shown)"
                  if array.shape == (w, h) else "")
        raise InputError(f"mask {path} is {array.shape[1]}x{array.shape[0]} but the image is "
                         f"{w}x{h}; they must be the same size{turned}")
    full = {"1": 1.0, "F": 1.0, "I": 65535.0, "I;16": 65535.0, "I;16B": 65535.0,
            "I;16L": 65535.0}.get(img.mode, 255.0)
    level = array.astype(np.float32) / full
    marked = torch.from_numpy(level >= 0.5)
    known = marked if keeps else ~marked
    # refused before the warning: a user's mistake is one line (an all-grey mask was two)
    _check_known(path, known, level, f"{array.max()}", f"{full:g}", keeps, clear)
    grey = float(((level > 0.1) & (level < 0.9)).mean())
    if grey > 0.05:
        warnings.warn(f"mask {path} has {grey:.0%} grey pixels (neither black nor white: JPEG "
                      f"compression or a soft brush?); those at 50 % grey or lighter count as "
                      f"{'known' if keeps else 'holes'}", DipWarning, stacklevel=outside_dip())
    return known.float()[None, None]


#: the share of a picture that a mask may mark to fill before dip asks whether it is inverted
MOSTLY_HOLES = 0.75


def _check_known(path: Any, known: torch.Tensor, level: np.ndarray, lightest: str,
                 white: str, keeps: bool, clear: bool) -> None:
    """Refuse a mask that leaves nothing known or nothing to fill; warn of one that marks
    most of the picture to fill (drawn the other way round?). ``lightest``: its lightest
    pixel's value, ``white``: white's in its file; ``clear``: it has transparent pixels,
    which count as black."""
    faint = 0 < level.max() < 0.5  # a mask saved as 0/1, say
    scale = (f"its lightest pixels are {lightest} of {white}: white is {white}, and a pixel "
             f"counts as white from 50 % grey")
    seen = ("its transparent pixels count as black, as it looks over black" if clear
            else "")
    grey = float(((level > 0.1) & (level < 0.9)).mean())
    greys = (f"; {grey:.0%} of its pixels are grey, and a pixel counts as white from 50 % "
             f"grey" if grey > 0.5 and not faint else "")  # (said here, not warned of too)
    if not known.any():
        hint = (f"with {{arg:mask_keeps}} white marks the known pixels, and {scale}" if keeps
                and faint else "is it inverted? with {arg:mask_keeps} white marks the known "
                "pixels" if keeps else "is it inverted? see {arg:mask_keeps}")
        raise InputError(f"mask {path} leaves no known pixel: nothing to restore from ({hint}"
                         + (f"; {seen}" if seen else "") + greys + ")")
    if known.all():
        hint = scale if faint and not keeps else seen if seen and not keeps else "nothing to do"
        raise InputError(f"mask {path} marks no pixel to fill (it is all "
                         f"{'white' if keeps else 'black'}); {hint}{greys}")
    holes = 1 - float(known.float().mean())
    if holes > MOSTLY_HOLES:  # holes are blemishes, strokes, half a photo at most
        how = ("with {arg:mask_keeps} white marks the known pixels" if keeps
               else "white marks the holes; {arg:mask_keeps} reads white as known")
        share = "over 99%" if 0.99 < holes < 1 else f"{holes:.0%}"  # (one pixel known: 100%)
        warnings.warn(DipWarning(f"mask {path} marks {share} of the picture to fill: is "
                                 f"it inverted? ({how}" + (f"; {seen}" if seen else "") + ")"),
                      stacklevel=outside_dip())


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
    open_heif()
    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def output_format(path: str | os.PathLike) -> str:
    """Pillow's format name for an output path's extension (``.png`` -> ``PNG``)."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt not in WRITABLE or fmt not in Image.SAVE:
        what = (f"with extension '{path.suffix[:20]}' ({path})" if path.suffix else
                f"to {path}: it has no extension" + (
                    " (a name's leading dot does not start one)" if path.name.startswith(".")
                    else ""))
        raise InputError(f"cannot write images {what}; use .png, .jpg, .tif, .bmp or .webp")
    return fmt


#: the longest side each format can hold (libjpeg's JPEG_MAX_DIMENSION, libwebp's limit)
MAX_SIDE = {"JPEG": 65500, "WEBP": 16383}


def check_side(path: str | os.PathLike, size: tuple[int, int]) -> None:
    """Raise InputError when the format ``path`` asks for cannot hold an image of ``size``
    ``(H, W)`` (found before a fit, not when its result is encoded)."""
    fmt = output_format(path)
    most = MAX_SIDE.get(fmt)
    if most is not None and max(size) > most:
        raise InputError(f"{shown(path)}: {fmt} holds images up to {most} pixels a side, and "
                         f"the result will be {size[1]}x{size[0]}; write .png or .tif")


#: how a result is encoded, so that saving does not degrade it again: JPEG at quality 95
#: (Pillow's own default is 75) with the colour at full resolution (not 4:2:0), WebP lossless
#: WebP's ``exact``: the colour under fully transparent pixels kept (Pillow's encoder drops it,
#: and an RGBA photo's restored pixels there came back changed by up to 220 grey levels)
SAVE_OPTIONS = {"JPEG": {"quality": 95, "subsampling": 0},
                "WEBP": {"lossless": True, "exact": True}}


def matching_icc(picture: Picture) -> bytes | None:
    """The picture's colour profile if it describes pixels like the picture's (an RGB profile
    for colour, a grey one for grey: a CMYK file's profile does not describe its RGB)."""
    space = picture.icc[16:20] if picture.icc and len(picture.icc) >= 128 else None
    return picture.icc if space == (b"RGB " if picture.pixels.shape[1] == 3 else b"GRAY") \
        else None


def written_icc(picture: Picture, fmt: str) -> bytes | None:
    """The colour profile a result of format ``fmt`` holds: :func:`matching_icc`'s, in any
    format but BMP, and a grey one not in WebP (which stores grey as RGB: a grey profile on
    RGB pixels is one that colour management refuses, so a viewer shows the file as if it
    had none)."""
    icc = matching_icc(picture)
    if fmt == "BMP" or (fmt == "WEBP" and picture.pixels.shape[1] == 1):
        return None
    return icc


def is_srgb(icc: bytes) -> bool:
    """Whether a colour profile is sRGB's (by its description): a file without one is shown
    as sRGB, so leaving it out changes nothing."""
    from PIL import ImageCms

    if icc[16:20] != b"RGB ":
        return False
    with contextlib.suppress(Exception):  # Pillow without littleCMS, a damaged profile
        return ImageCms.getProfileDescription(
            ImageCms.ImageCmsProfile(io.BytesIO(icc))).strip().startswith("sRGB")
    return False


#: the formats Pillow writes a colour profile, an EXIF block and XMP in (all but BMP)
METADATA_FORMATS = ("PNG", "JPEG", "WEBP")
#: the most bytes of an EXIF block and of an XMP packet a JPEG holds (one APP1 marker's
#: 65535, less its length field and, for XMP, its namespace)
JPEG_BYTES = {"exif": 65533, "xmp": 65504}
#: the output formats that keep an alpha channel (transparency)
ALPHA_FORMATS = ("PNG", "TIFF", "WEBP")


def written_bits(bits: int, fmt: str) -> int:
    """The bits a sample of a picture of ``bits`` (8, 16, 32 for float) that a file of format
    ``fmt`` keeps: all in TIFF, up to 16 in PNG, 8 in the others."""
    return bits if fmt == "TIFF" else min(bits, 16) if fmt == "PNG" else 8


def image_writer(picture: Picture, path: str | os.PathLike) -> Callable[[BinaryIO], None]:
    """A function that encodes ``picture`` into an open file in the format ``path`` asks for.

    16 bits are kept in PNG (grey and colour) and TIFF, float in TIFF (its range restored);
    alpha is re-attached where the format holds it; the colour profile, the EXIF block and
    the XMP packet in PNG, JPEG and WebP, the profile and XMP in TIFF; the resolution in all
    but WebP.
    """
    fmt = output_format(path)
    if fmt == "TIFF":
        return _tiff_writer(picture)
    bits = written_bits(picture.bits, fmt)
    if bits == 16 and (picture.pixels.shape[1] == 3 or picture.alpha is not None):
        return _png16_writer(picture)
    img = _to_pil(picture.pixels, bits)
    if picture.alpha is not None and fmt in ALPHA_FORMATS and img.mode in ("L", "RGB"):
        img = img.convert("LA" if img.mode == "L" else "RGBA")
        img.putalpha(_to_pil(picture.alpha, 8))
    options = SAVE_OPTIONS.get(fmt, {}) | _pillow_metadata(picture, fmt)
    return lambda f: img.save(f, format=fmt, **options)


def _pillow_metadata(picture: Picture, fmt: str) -> dict:
    """Pillow's save options for what ``picture``'s input said besides its pixels: colour
    profile, resolution, EXIF block, XMP packet, where ``fmt`` holds them (a JPEG holds at
    most 64 KB of either block: a larger one is left out, with a warning)."""
    options: dict = {}
    icc = written_icc(picture, fmt)
    if icc and fmt in METADATA_FORMATS:
        options["icc_profile"] = icc
    dpi = _written_dpi(picture, fmt)
    if dpi is not None or fmt == "BMP":
        options["dpi"] = dpi or (0, 0)  # (BMP: Pillow would state 96 where the input did not)
    if fmt not in METADATA_FORMATS:
        return options
    if fmt == "PNG" and picture.png_colour:
        from PIL import PngImagePlugin

        options["pnginfo"] = PngImagePlugin.PngInfo()
        for kind, payload in picture.png_colour:
            options["pnginfo"].add(kind, payload)
    # WebP's one place for a resolution: a JPEG's JFIF one, a PNG's pHYs were dropped there
    exif, xmp, upright = result_metadata(picture, state_dpi=fmt == "WEBP")
    for key, name, block in (("exif", "EXIF block", exif), ("xmp", "XMP packet", xmp)):
        if block and fmt == "JPEG" and len(block) > JPEG_BYTES[key]:
            warnings.warn(f"the input's {name} ({-(-len(block) // 1024)} KB) is more than a JPEG "
                          f"holds (64 KB): the result has none; write .png to keep it",
                          DipWarning, stacklevel=outside_dip())
            if key == "exif" and upright:  # its orientation 1 still, alone
                options["exif"] = metadata.exif_for(None, picture.size, None, upright=True)
        elif block and key == "xmp" and fmt == "PNG":
            from PIL import PngImagePlugin

            options.setdefault("pnginfo", PngImagePlugin.PngInfo())
            options["pnginfo"].add_itxt(_PNG_XMP.decode(), block.decode())
        elif block:
            options[key] = block
    return options


def _tiff_writer(picture: Picture) -> Callable[[BinaryIO], None]:
    """TIFF through tifffile, at the picture's depth: uint8, uint16, or float32 (mapped back to
    the range it was read in); grey or RGB, with alpha as an extra sample."""
    import tifffile

    planes = [picture.pixels] + ([picture.alpha] if picture.alpha is not None else [])
    array = torch.cat([p.detach().float().cpu().clamp(0, 1) for p in planes], 1)[0]
    array = array.permute(1, 2, 0).numpy()
    if picture.bits == 32:
        if picture.value_range is not None:
            low, high = picture.value_range
            colour = picture.pixels.shape[1]
            array[..., :colour] = array[..., :colour] * (high - low) + low
        array = array.astype(np.float32)
    elif picture.bits == 16:
        array = np.round(array * 65535).astype(np.uint16)
    else:
        array = np.round(array * 255).astype(np.uint8)
    colour = picture.pixels.shape[1] == 3
    if array.shape[-1] == 1:
        array = array[..., 0]
    # no JSON description of the array's shape, no "tifffile.py" as the software: the tags
    # describe the photo (metadata.descriptive_text: a scanner's, or a camera's EXIF's)
    exif, xmp, upright = result_metadata(picture)
    text = metadata.descriptive_text(exif)
    options: dict = {"photometric": "rgb" if colour else "minisblack", "metadata": None,
                     "software": False, "iccprofile": written_icc(picture, "TIFF"),  # (None: none)
                     "extratags": [(code, "s", 0, value, True) for code, value in text.items()]}
    dpi = _written_dpi(picture, "TIFF")
    if dpi is not None:
        options.update(resolution=dpi, resolutionunit=2)  # inches
    if xmp:
        options["extratags"].append((700, "B", len(xmp), xmp, True))  # XMP
        if upright:
            options["extratags"].append((274, "H", 1, 1, True))  # Orientation 1
    if picture.alpha is not None:
        options["extrasamples"] = ["unassalpha"]
        if not colour:
            options["planarconfig"] = "contig"
    def write(f: BinaryIO) -> None:
        buf = io.BytesIO()  # tifffile wants a named file or a buffer, not a bare descriptor
        tifffile.imwrite(buf, array, **options)
        f.write(buf.getvalue())

    return write


def _png16_writer(picture: Picture) -> Callable[[BinaryIO], None]:
    """16-bit colour (or grey + alpha) PNG through pypng; Pillow cannot hold these."""
    import png

    planes = [picture.pixels] + ([picture.alpha] if picture.alpha is not None else [])
    array = torch.cat([p.detach().float().cpu().clamp(0, 1) for p in planes], 1)[0]
    _, h, w = array.shape
    rows = np.round(array.permute(1, 2, 0).numpy() * 65535).astype(np.uint16).reshape(h, -1)
    writer = png.Writer(w, h, greyscale=picture.pixels.shape[1] == 1,
                        alpha=picture.alpha is not None, bitdepth=16)

    def write(f: BinaryIO) -> None:
        buf = io.BytesIO()
        writer.write(buf, rows)
        exif, xmp, _ = result_metadata(picture)
        f.write(_png_with(buf.getvalue(), written_icc(picture, "PNG"), exif,
                          _written_dpi(picture, "PNG"), xmp, picture.png_colour))

    return write


#: the PNG text key that marks the pictures dip draws about a run (reports, contact sheets)
MARKER_KEY = "dip"


def marked_png(img: Image.Image, kind: str) -> Callable[[BinaryIO], None]:
    """A writer of ``img`` as a PNG that says dip drew it (a ``dip`` text chunk = ``kind``):
    a later batch never takes it for a photo, and a summary is only written over its own."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(MARKER_KEY, kind)
    return lambda f: img.save(f, format="PNG", pnginfo=info)


def marked(write: Callable[[BinaryIO], None], kind: str) -> Callable[[BinaryIO], None]:
    """``write`` (a PNG's writer, :func:`image_writer`'s) with dip's mark (a ``dip`` text
    chunk = ``kind``) after the PNG's header: a snapshot of a fit, at any depth."""
    def write_marked(f: BinaryIO) -> None:
        buf = io.BytesIO()
        write(buf)
        data = buf.getvalue()
        f.write(data[:33] + _png_chunk(b"tEXt", f"{MARKER_KEY}\0{kind}".encode()) + data[33:])

    return write_marked


def gif_mark(kind: str) -> bytes:
    """The comment that marks a GIF dip drew (the animation of a fit): ``dip=KIND``."""
    return f"{MARKER_KEY}={kind}".encode()


#: the first bytes of the files dip marks: PNG, GIF (87a and 89a)
_SIGNATURES = {".png": (b"\x89PNG\r\n\x1a\n",), ".gif": (b"GIF87a", b"GIF89a")}


def dip_marker(path: Path) -> str | None:
    """The ``kind`` of a PNG or GIF dip drew (:func:`marked_png`, :func:`marked`,
    :func:`gif_mark`), None for any other file."""
    signatures = _SIGNATURES.get(path.suffix.lower())
    if signatures is None or not path.is_file():
        return None
    try:
        with path.open("rb") as f:
            if not f.read(8).startswith(signatures):  # (not Image.open on any other kind
                return None  # of file so named: a damaged HEIF would crash the process)
        with own_pixel_limit(), Image.open(path) as img:
            if img.format == "GIF":
                comment, mark = img.info.get("comment"), gif_mark("")
                return (comment[len(mark):].decode(errors="replace")
                        if isinstance(comment, bytes) and comment.startswith(mark) else None)
            return img.text.get(MARKER_KEY) if hasattr(img, "text") else None
    except (OSError, ValueError, SyntaxError):
        return None


def save_image(picture: Picture, path: str | os.PathLike, mark: str | None = None) -> Path:
    """Write ``picture`` to ``path`` atomically; the format follows the extension. Missing
    parent folders are created. With ``mark`` (a PNG), marked as dip's (:func:`marked`)."""
    path = Path(path)
    writer = image_writer(picture, path)
    if mark is not None:
        writer = marked(writer, mark)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, writer)
    return path


def _umask() -> int:
    """The process's umask, read where the system says it (Linux's /proc/self/status):
    setting it to 0 and back to learn it leaves a moment in which another thread of the
    caller's makes files writable by everyone."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    with _umask_lock:
        mask = os.umask(0)
        os.umask(mask)
        return mask


_umask_lock = threading.Lock()


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it."""
    write_all_atomic([(Path(path), write)])


def write_all_atomic(files: list[tuple[Path, Callable[[BinaryIO], None]]],
                     before_rename: Callable[[], None] | None = None,
                     keep: list[Path] | tuple = (),
                     prints: dict[Path, str] | None = None) -> None:
    """Write every file to a temporary name beside it, and only when all succeeded rename them
    into place, the first (the result) last: a result never appears without its record, nor
    half-written, even if the process is killed between two renames. ``before_rename`` runs
    once every file is written, before the first rename (a file that fails to write leaves
    what it would have done undone). A leftover of a killed write that is one of ``keep``
    (files the caller reads) stays. ``prints`` takes each file's
    :func:`dip.record.fingerprint` as it is written, in order: a later file's writer (the
    record) may read the earlier ones'."""
    temps: list[str] = []
    kept = {path.resolve() for path in keep}
    for path, _ in files:  # what a run killed while writing left behind: mkstemp's names,
        # its 8 random letters exactly (a file of the user's named .NAME.orig.part stays)
        for stale in path.parent.glob(f".{_glob_escape(path.name)}.{_TEMP_LETTERS * 8}.part"):
            if stale.resolve() not in kept:
                stale.unlink(missing_ok=True)
    current = None  # the file being written or renamed
    new_file = 0o666 & ~_umask()
    try:
        for current, write in files:
            fd, tmp = tempfile.mkstemp(dir=current.parent, prefix=f".{current.name}.",
                                       suffix=".part")
            temps.append(tmp)
            with os.fdopen(fd, "wb") as f:
                write(f)
            if prints is not None:
                prints[current] = fingerprint(Path(tmp))
            # mkstemp makes the file private (0600): give it a normal new file's permissions,
            # or those of the file it replaces (a result made read-only, or shared with a group)
            os.chmod(tmp, _kept_mode(current, new_file))
        current = None
        if before_rename is not None:
            before_rename()
        for tmp, (current, _) in reversed(list(zip(temps, files))):
            os.replace(tmp, current)
    except BaseException as exc:
        for tmp in temps:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and current is not None:  # the file that failed, not its
            exc.filename = str(current)  # temporary name (a full disk's error names none)
        raise


def _kept_mode(path: Path, new_file: int) -> int:
    """The permission bits a file written over ``path`` takes: the replaced file's, as an
    editor's save and ``sed -i`` keep them (with the umask's instead, a result the user had
    made read-only came back writable, and one shared with a group lost the group's write),
    else ``new_file``'s. Never set-user-ID and the like."""
    try:
        held = path.stat()
    except (OSError, ValueError):
        return new_file
    return stat.S_IMODE(held.st_mode) & 0o777 if stat.S_ISREG(held.st_mode) else new_file


#: the bytes write_all_atomic's temporary name adds to a file's: "." + name + "." + 8
#: random characters + ".part"
TEMPORARY_EXTRA = len(".") + len(".") + 8 + len(".part")
#: one character of a name tempfile.mkstemp makes (tempfile._RandomNameSequence)
_TEMP_LETTERS = "[a-z0-9_]"


def _glob_escape(name: str) -> str:
    import glob

    return glob.escape(name)


def bleed_colour(pixels: torch.Tensor, alpha: torch.Tensor | None) -> torch.Tensor:
    """``pixels`` with the colour under wholly transparent pixels, which editors save as
    anything (mostly black), replaced by the colour of the visible pixels nearest it: a
    push-pull fill (Gortler et al., "The Lumigraph", SIGGRAPH 1996). A resampling filter or a
    network that enlarges the picture mixes a visible edge with its transparent neighbours:
    black there drew a dark outline round an enlarged logo.

    Shape:
        pixels ``(1, C, H, W)``, alpha ``(1, 1, H, W)`` or None; the result is ``pixels``'s
        shape, equal to it wherever alpha > 0.
    """
    if alpha is None:
        return pixels
    seen = (alpha > 0).to(pixels.dtype)
    if bool(seen.all()) or not bool(seen.any()):
        return pixels
    levels = [(pixels * seen, seen)]  # push: visible colour and coverage, halved each level
    while max(levels[-1][1].shape[-2:]) > 1:
        kernel = tuple(2 if side > 1 else 1 for side in levels[-1][1].shape[-2:])
        levels.append(tuple(torch.nn.functional.avg_pool2d(t, kernel, ceil_mode=True)
                            for t in levels[-1]))
    covered, coverage = levels.pop()
    colour = covered / coverage.clamp_min(1e-12)  # the mean visible colour
    for covered, coverage in reversed(levels):  # pull: what a level lacks, from the next
        up = torch.nn.functional.interpolate(colour, size=tuple(covered.shape[-2:]),
                                             mode="bilinear", align_corners=False)
        colour = covered + (1 - coverage) * up
    return torch.where(alpha > 0, pixels, colour)


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
