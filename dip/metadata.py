"""What a photo's file says about the photo besides its pixels, as a result carries it.

A restored photo is still the photo: its EXIF block (camera, date taken, exposure, place),
its XMP packet (title, caption, keywords, rating, creator, rights: what a photo library or
Lightroom wrote) and its print size (a scan's 600 dpi) go with the result. What described the
pixels as stored is not carried as it was: the orientation (applied on reading), the
thumbnail (a small copy of the damaged picture) and the pixel size (an enlarged result states
its own, and a resolution that prints it at the input's size). :mod:`dip.image` reads and
writes these; the functions here are the rules, on plain bytes and numbers.
"""

from __future__ import annotations

import math
import re
import warnings

from PIL import ExifTags, Image, TiffTags

#: EXIF (and TIFF) tags: the orientation, the sub-block of photo details and its pixel size,
#: and the resolution
ORIENTATION, EXIF_IFD, EXIF_WIDTH, EXIF_HEIGHT = 0x0112, 0x8769, 0xA002, 0xA003
X_RESOLUTION, Y_RESOLUTION, RESOLUTION_UNIT = 0x011A, 0x011B, 0x0128

#: the resolutions (pixels per inch) each format can state: JPEG whole dots per inch in 16
#: bits, PNG whole pixels per metre in 32 bits, BMP the same signed, TIFF (and EXIF) a
#: fraction of 32-bit integers. A microscope's 0.2 nm pixels state more than any of them.
DPI_RANGE = {"JPEG": (1.0, 65535.0), "PNG": (0.0254, (2 ** 32 - 2) * 0.0254),
             "BMP": (0.0254, (2 ** 31 - 2) * 0.0254), "TIFF": (1e-4, 2.0 ** 32 - 2)}


def exif_orientation(raw: bytes) -> int:
    """The orientation (1-8) an EXIF block gives; 1 for none or a damaged block (as Pillow
    reads it)."""
    exif = Image.Exif()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exif.load(raw)
        return int(exif.get(ORIENTATION, 1) or 1)
    except Exception:  # Pillow's parser raises many kinds on damaged blocks
        return 1


def _loaded(raw: bytes) -> Image.Exif:
    """An EXIF block parsed by Pillow, its first directory's text as the bytes it was:
    Pillow reads text as Latin-1 and writes it as ASCII with "?" for any other character,
    so a copyright's "©" (or any UTF-8) would not survive the rewriting otherwise."""
    exif = Image.Exif()
    exif.load(raw)
    for tag, value in list(exif.items()):
        if isinstance(value, str) and TiffTags.lookup(tag).type == TiffTags.ASCII:
            exif[tag] = value.encode("latin-1", "replace")
    return exif


def carried_exif(raw: bytes | None) -> bytes | None:
    """A file's EXIF block as a result carries it: parsed and written again by Pillow, which
    drops the thumbnail (viewers show it) and here the orientation (the pixels are turned on
    reading). None for none, or one Pillow cannot parse: a damaged block is left behind, not
    an error."""
    if not raw:
        return None
    try:
        with warnings.catch_warnings():  # Pillow's about a damaged block: what it can read
            warnings.simplefilter("ignore")  # of it is kept (sub-blocks read by tobytes)
            exif = _loaded(bytes(raw))
            exif.pop(ORIENTATION, None)
            return exif.tobytes() if len(exif) else None
    except Exception:
        return None


def exif_for(raw: bytes, size: tuple[int, int], dpi: tuple[float, float] | None) -> bytes:
    """A carried EXIF block (:func:`carried_exif`) for a result of ``size`` = ``(H, W)``
    written at ``dpi``: its pixel dimensions and resolution (where it gives them) the
    result's."""
    exif = _loaded(raw)
    details = exif.get_ifd(EXIF_IFD) if EXIF_IFD in exif else {}
    height, width = size
    for tag, value in ((EXIF_WIDTH, width), (EXIF_HEIGHT, height)):
        if tag in details:
            details[tag] = value
    if dpi is not None and X_RESOLUTION in exif:
        if stateable(dpi, "TIFF"):  # (EXIF's tags are TIFF's)
            exif[X_RESOLUTION], exif[Y_RESOLUTION] = dpi
            exif[RESOLUTION_UNIT] = 2  # inches
        else:  # not the result's: none
            for tag in (X_RESOLUTION, Y_RESOLUTION, RESOLUTION_UNIT):
                exif.pop(tag, None)
    return exif.tobytes()


def stated_dpi(img: Image.Image):
    """The resolution ``(x, y)`` in pixels per inch an open file states, or None: a JPEG's
    JFIF density in inches or centimetres (Pillow's ``dpi`` falls back to 72 where the EXIF
    block has no resolution: not stated), another format's ``dpi`` (PNG's pHYs in metres,
    BMP's header); else its EXIF block's resolution in inches or centimetres."""
    if img.format in ("JPEG", "MPO"):
        per_inch = {1: 1.0, 2: 2.54}.get(img.info.get("jfif_unit"))  # else an aspect ratio
        density = img.info.get("jfif_density")
        if per_inch and density:
            return tuple(d * per_inch for d in density)
    elif img.info.get("dpi"):
        return img.info["dpi"]
    try:
        exif = img.getexif()
        per_inch = {2: 1.0, 3: 2.54}.get(exif.get(RESOLUTION_UNIT, 2))
        resolution = exif.get(X_RESOLUTION), exif.get(Y_RESOLUTION)
    except Exception:  # a damaged EXIF block: none stated
        return None
    if per_inch is None or None in resolution:
        return None
    try:
        return tuple(float(r) * per_inch for r in resolution)
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def print_size(size: tuple[int, int], dpi, unit: float = 1.0) -> tuple[float, float] | None:
    """``(width, height)`` in inches of a picture ``size`` = ``(width, height)`` pixels at
    ``dpi`` = ``(x, y)`` pixels per ``unit`` inches; None for a resolution that is missing,
    zero or not a number (a file that states none)."""
    try:
        x, y = (float(v) / unit for v in dpi)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not (math.isfinite(x) and math.isfinite(y) and x > 0 and y > 0):
        return None
    return size[0] / x, size[1] / y


def stateable(dpi: tuple[float, float], fmt: str) -> bool:
    """Whether ``fmt`` (a key of :data:`DPI_RANGE`) can state ``dpi``."""
    low, high = DPI_RANGE[fmt]
    return all(low <= d <= high for d in dpi)


#: XMP namespaces, and the properties of each that describe the file as stored rather than
#: the photo: left out of a result (None: every property of the namespace), except the pixel
#: size, which :func:`xmp_for` sets to the result's. The tiff: schema's orientation is applied
#: on reading and its resolution stated by the format; Google's camera, container and item
#: schemas and Adobe's gain map describe a motion photo's video or an Ultra HDR gain map
#: appended to the file, which a result does not hold; xmpNote points to extended XMP
#: segments it does not hold either.
_TIFF, _EXIF = "http://ns.adobe.com/tiff/1.0/", "http://ns.adobe.com/exif/1.0/"
_STORED = {
    _TIFF: ("Orientation", "XResolution", "YResolution", "ResolutionUnit", "BitsPerSample",
            "Compression", "PhotometricInterpretation", "SamplesPerPixel",
            "PlanarConfiguration", "YCbCrSubSampling", "YCbCrPositioning"),
    "http://ns.google.com/photos/1.0/camera/": None,
    "http://ns.google.com/photos/1.0/container/": None,
    "http://ns.google.com/photos/1.0/container/item/": None,
    "http://ns.adobe.com/hdr-gain-map/1.0/": None,
    "http://ns.adobe.com/xmp/note/": ("HasExtendedXMP",),
}
_WIDTH = ((_TIFF, "ImageWidth"), (_EXIF, "PixelXDimension"))
_HEIGHT = ((_TIFF, "ImageLength"), (_EXIF, "PixelYDimension"))
#: a start tag, its attributes' quoted values allowed to hold ">"
_START_TAG = re.compile(rb"""<[\w.:-]+(?:\s+[\w.:-]+\s*=\s*(?:"[^"]*"|'[^']*'))*\s*/?>""")


def _prefixes(xmp: bytes, namespace: str) -> list[bytes]:
    """The prefixes an XMP packet binds to ``namespace`` (``tiff`` for the TIFF schema)."""
    uri = re.escape(namespace.encode())
    return re.findall(rb"""xmlns:([\w.-]+)\s*=\s*["']""" + uri + rb"""["']""", xmp)


def _edit(xmp: bytes, namespace: str, names: tuple[str, ...] | None,
          value: int | None = None) -> bytes:
    """``xmp`` with each property ``names`` (None: any) of ``namespace`` removed, or its value
    set to ``value``: as an attribute of a start tag (text is not touched) and as an element
    (``<p:Name ...>...</p:Name>`` or ``<p:Name .../>``)."""
    local = (rb"[\w.-]+" if names is None
             else rb"(?:" + b"|".join(re.escape(n.encode()) for n in names) + rb")")
    for prefix in _prefixes(xmp, namespace):
        name = re.escape(prefix) + rb":(" + local + rb")"
        attribute = re.compile(rb"""(\s+)""" + name + rb"""\s*=\s*(?:"[^"]*"|'[^']*')""")
        element = re.compile(rb"<" + name + rb"""((?:\s+[\w.:-]+\s*=\s*(?:"[^"]*"|'[^']*'))*)"""
                             rb"""\s*(?:/>|>.*?</""" + re.escape(prefix) + rb":\1\s*>)",
                             re.DOTALL)

        def set_attribute(m: re.Match, p: bytes = prefix) -> bytes:
            return b"" if value is None else b'%s%s:%s="%d"' % (m[1], p, m[2], value)

        def set_element(m: re.Match, p: bytes = prefix) -> bytes:
            return (b"" if value is None
                    else b"<%s:%s%s>%d</%s:%s>" % (p, m[1], m[2], value, p, m[1]))

        xmp = _START_TAG.sub(lambda tag: attribute.sub(set_attribute, tag[0]), xmp)
        xmp = element.sub(set_element, xmp)
    return xmp


def xmp_orientation(raw: bytes | None) -> int:
    """The orientation (1-8) an XMP packet's TIFF schema states, 1 for none: Pillow applies
    it to a file whose EXIF block states none, and so does dip where it reads the file
    itself (16-bit PNG, TIFF). As an attribute of a start tag or as an element, not in text."""
    raw = raw or b""
    for prefix in _prefixes(raw, _TIFF):
        key = re.escape(prefix) + rb":Orientation"
        attribute = re.compile(rb"\s" + key + rb"""\s*=\s*["']\s*([1-8])\s*["']""")
        for tag in _START_TAG.finditer(raw):
            if found := attribute.search(tag[0]):
                return int(found[1])
        if found := re.search(rb"<" + key + rb"(?:\s[^>]*)?>\s*([1-8])\s*</", raw):
            return int(found[1])
    return 1


#: the largest XMP packet read from a compressed PNG text chunk (Pillow's limit for any
#: text chunk): a few hundred bytes of zlib can hold gigabytes
XMP_MOST = 1 << 20


def carried_xmp(raw: bytes | str | None) -> bytes | None:
    """A file's XMP packet as a result carries it (UTF-8), without what describes the file as
    stored (:data:`_STORED`); None for none, or one that is not UTF-8 text."""
    if not raw:
        return None
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    for namespace, names in _STORED.items():
        data = _edit(data, namespace, names)
    return data or None


def xmp_for(raw: bytes, size: tuple[int, int]) -> bytes:
    """A carried XMP packet (:func:`carried_xmp`) for a result of ``size`` = ``(H, W)``: the
    pixel size it states, where it states one, the result's."""
    height, width = size
    for properties, value in ((_WIDTH, width), (_HEIGHT, height)):
        for namespace, name in properties:
            raw = _edit(raw, namespace, (name,), value)
    return raw


#: the TIFF tags (EXIF's first directory too) that describe the photo, not its pixels, as
#: text: its description, the maker and model of the camera or scanner, the software, the
#: date and time, the artist and the copyright
DESCRIPTIVE = (270, 271, 272, 305, 306, 315, 33432)


def tiff_exif(tags: dict[int, object], details: object = None) -> bytes | None:
    """An EXIF block of a TIFF's descriptive tags (``code -> value``, text only; tifffile's
    own ``{"shape": ...}`` description is not the photo's) and of the text entries of its
    EXIF directory (``details``: tifffile's names -> values, the date taken among them), so
    that a scan's description goes with the result as a JPEG's EXIF block does."""
    exif = Image.Exif()
    for code, value in tags.items():
        if isinstance(value, str) and value.strip("\0 ") and not (
                code == 270 and value.startswith('{"shape":')):
            exif[code] = value.encode()  # (tifffile decoded it as UTF-8)
    codes = {name: code for code, name in ExifTags.TAGS.items()}
    entries = {codes[name]: value for name, value in (
        details.items() if isinstance(details, dict) else ()) if name in codes
               and isinstance(value, str) and value.strip("\0 ")}
    if entries:
        exif.get_ifd(EXIF_IFD).update(entries)
    return exif.tobytes() if len(exif) else None


def descriptive_text(raw: bytes | None) -> dict[int, bytes]:
    """The descriptive tags (:data:`DESCRIPTIVE`) of a carried EXIF block, as UTF-8 text for
    a TIFF result (which holds no EXIF directory: the date taken stays in PNG, JPEG, WebP)."""
    if not raw:
        return {}
    exif = _loaded(raw)
    return {code: exif[code] for code in DESCRIPTIVE if isinstance(exif.get(code), bytes)}
