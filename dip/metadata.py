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

import contextlib
import math
import re
import threading
import warnings
from collections.abc import Iterator

from PIL import ExifTags, Image, TiffTags

#: EXIF (and TIFF) tags: the orientation, the sub-block of photo details and its pixel size,
#: and the resolution
ORIENTATION, EXIF_IFD, EXIF_WIDTH, EXIF_HEIGHT = 0x0112, 0x8769, 0xA002, 0xA003
GPS_IFD = 0x8825
X_RESOLUTION, Y_RESOLUTION, RESOLUTION_UNIT = 0x011A, 0x011B, 0x0128
#: a TIFF's (and EXIF's) resolution unit -> pixels per inch of one pixel per unit (inch,
#: centimetre; 1, no unit, states only an aspect ratio)
PER_INCH = {2: 1.0, 3: 2.54}

#: the resolutions (pixels per inch) each format can state: JPEG whole dots per inch in 16
#: bits, PNG whole pixels per metre in 32 bits, BMP the same signed, TIFF (and EXIF) a
#: fraction of 32-bit integers. A microscope's 0.2 nm pixels state more than any of them.
DPI_RANGE = {"JPEG": (1.0, 65535.0), "PNG": (0.0254, (2 ** 32 - 2) * 0.0254),
             "BMP": (0.0254, (2 ** 31 - 2) * 0.0254), "TIFF": (1e-4, 2.0 ** 32 - 2)}


#: held while Pillow's warnings are silenced: the filters are the process's, and two threads
#: inside catch_warnings at once can leave the first one's "ignore" installed for good when
#: they leave in the other order (two threads reading EXIF 20 000 times each did)
_SILENCING = threading.Lock()


@contextlib.contextmanager
def _pillow_quiet() -> Iterator[None]:
    """Pillow's warnings about a damaged block silenced: what it can read of it is kept."""
    with _SILENCING, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def exif_orientation(raw: bytes) -> int | None:
    """The orientation an EXIF block gives; None where it gives none (or is damaged: as
    Pillow reads it)."""
    exif = Image.Exif()
    try:
        with _pillow_quiet():
            exif.load(raw)
        return int(exif[ORIENTATION]) if ORIENTATION in exif else None
    except Exception:  # Pillow's parser raises many kinds on damaged blocks
        return None


def turn_of(exif: int | None, xmp: bytes | None) -> int:
    """The orientation Pillow's ``exif_transpose`` applies: the EXIF block's, else the XMP
    packet's (:func:`xmp_orientation`), else 1."""
    return exif if exif is not None else (xmp_orientation(xmp) or 1)


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
        with _pillow_quiet():  # (and sub-blocks read by tobytes)
            exif = _loaded(bytes(raw))
            exif.pop(ORIENTATION, None)
            return exif.tobytes() if len(exif) else None
    except Exception:
        return None


def exif_for(raw: bytes | None, size: tuple[int, int], dpi: tuple[float, float] | None,
             upright: bool = False, state_dpi: bool = False) -> bytes | None:
    """A carried EXIF block (:func:`carried_exif`) for a result of ``size`` = ``(H, W)``
    written at ``dpi``: its pixel dimensions and resolution (where it gives them) the
    result's. ``upright``: it states orientation 1 (a block of that alone where there was
    none), for a result whose XMP still names an orientation somewhere (a history entry's, a
    comment's): Pillow, and dip, turn a picture by it where the EXIF block states none.
    ``state_dpi``: it states ``dpi`` where it gave none (a block of that where there was
    none), for a format whose only resolution is its EXIF's (WebP)."""
    state_dpi = state_dpi and dpi is not None and stateable(dpi, "TIFF")
    if raw is None and not upright and not state_dpi:
        return None
    exif = _loaded(raw) if raw is not None else Image.Exif()
    if upright:
        exif[ORIENTATION] = 1
    details = exif.get_ifd(EXIF_IFD) if EXIF_IFD in exif else {}
    height, width = size
    for tag, value in ((EXIF_WIDTH, width), (EXIF_HEIGHT, height)):
        if tag in details:
            details[tag] = value
    if dpi is not None and (X_RESOLUTION in exif or state_dpi):
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
    elif img.info.get("dpi") and not (img.format == "TIFF"
                                     and X_RESOLUTION not in getattr(img, "tag_v2", {})):
        return img.info["dpi"]  # (Pillow states 1 dpi for a TIFF without resolution tags)
    try:
        exif = img.getexif()
        per_inch = PER_INCH.get(exif.get(RESOLUTION_UNIT, 2))
        resolution = exif.get(X_RESOLUTION), exif.get(Y_RESOLUTION)
    except Exception:  # a damaged EXIF block: none stated
        return None
    if per_inch is None or None in resolution:
        return None
    try:
        return tuple(float(r) * per_inch for r in resolution)
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def print_size(size: tuple[int, int], dpi) -> tuple[float, float] | None:
    """``(width, height)`` in inches of a picture ``size`` = ``(width, height)`` pixels at
    ``dpi`` = ``(x, y)`` pixels per inch; None for a resolution that is missing, zero or not
    a number (a file that states none)."""
    try:
        x, y = (float(v) for v in dpi)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not (math.isfinite(x) and math.isfinite(y) and x > 0 and y > 0):
        return None
    return size[0] / x, size[1] / y


def turned(inches: tuple[float, float] | None, orientation: int
           ) -> tuple[float, float] | None:
    """A print size as shown after an EXIF orientation: 5-8 turn it a quarter."""
    return inches[::-1] if inches is not None and orientation in (5, 6, 7, 8) else inches


def stateable(dpi: tuple[float, float], fmt: str) -> bool:
    """Whether ``fmt`` (a key of :data:`DPI_RANGE`) can state ``dpi``."""
    low, high = DPI_RANGE[fmt]
    return all(low <= d <= high for d in dpi)


#: XMP namespaces, and the properties of each that describe the file as stored rather than
#: the photo: left out of a result (None: every property of the namespace), except the pixel
#: size, which :func:`xmp_for` sets to the result's. The tiff: schema's orientation is applied
#: on reading and its resolution stated by the format; Google's camera, container, item and
#: depth schemas and Adobe's and Apple's gain maps describe a motion photo's video, a depth
#: map or an HDR gain map held elsewhere in the file, which a result does not hold; xmpNote
#: points to extended XMP segments it does not hold either.
_TIFF, _EXIF = "http://ns.adobe.com/tiff/1.0/", "http://ns.adobe.com/exif/1.0/"
_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_STORED = {
    _TIFF: ("Orientation", "XResolution", "YResolution", "ResolutionUnit", "BitsPerSample",
            "Compression", "PhotometricInterpretation", "SamplesPerPixel",
            "PlanarConfiguration", "YCbCrSubSampling", "YCbCrPositioning"),
    "http://ns.google.com/photos/1.0/camera/": None,
    "http://ns.google.com/photos/1.0/container/": None,
    "http://ns.google.com/photos/1.0/container/item/": None,
    "http://ns.adobe.com/hdr-gain-map/1.0/": None,
    "http://ns.apple.com/HDRGainMap/1.0/": None,
    "http://ns.google.com/photos/dd/1.0/device/": None,  # a portrait's depth (Dynamic Depth)
    "http://ns.google.com/photos/dd/1.0/container/": None,
    "http://ns.google.com/photos/dd/1.0/item/": None,
    "http://ns.google.com/photos/1.0/depthmap/": None,  # GDepth, GImage: in extended XMP
    "http://ns.google.com/photos/1.0/image/": None,
    "http://ns.adobe.com/xmp/note/": ("HasExtendedXMP",),
}
_SIZE = {(_TIFF, "ImageWidth"): 1, (_EXIF, "PixelXDimension"): 1,
         (_TIFF, "ImageLength"): 0, (_EXIF, "PixelYDimension"): 0}  # -> index in (H, W)

#: the largest XMP packet carried (Pillow's limit for a PNG text chunk): a few hundred bytes
#: of zlib can hold gigabytes
XMP_MOST = 1 << 20


def xmp_orientation(raw: bytes | None) -> int | None:
    """The orientation an XMP packet states, by Pillow's rule (``Image.getexif`` falls back
    to it where the EXIF block states none): ``tiff:Orientation="N"`` or
    ``<tiff:Orientation>N``, the first. dip applies it by the same rule where it reads a file
    itself (16-bit PNG, TIFF), so that a picture comes out the same at any depth."""
    found = re.search(rb'tiff:Orientation(="|>)([0-9])', raw or b"")
    return int(found[2]) if found else None


def _descriptions(document) -> list:
    """The rdf:Description elements directly under rdf:RDF: what the packet says of this
    file (nested ones, in a history or a pantry, describe other documents)."""
    return [node for rdf in document.getElementsByTagNameNS(_RDF, "RDF")
            for node in rdf.childNodes
            if node.nodeType == node.ELEMENT_NODE and node.namespaceURI == _RDF
            and node.localName == "Description"]


def _stored(node) -> bool:
    names = _STORED.get(node.namespaceURI, ())
    return names is None or node.localName in names


def _parsed(raw: bytes):
    """The packet as a DOM (namespaces resolved: any prefix, default namespaces), or None
    for one that is not well-formed UTF-8 XML (or declares another encoding) or declares a
    document type (its entities' expansion could be any size). What follows its end (NULs,
    junk some writers leave) is cut, as Pillow's ``getxmp`` strips NULs."""
    from xml.dom import minidom
    from xml.parsers.expat import ExpatError

    raw = raw[:raw.rfind(b">") + 1]  # (nothing after the last markup is XML)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    declared = re.match(rb"""\s*<\?xml[^>]*encoding\s*=\s*["']([^"']*)""", raw)
    if b"<!DOCTYPE" in raw or (declared and declared[1].lower() not in (b"utf-8", b"utf8")):
        return None  # (a declared encoding is what expat decodes by: UTF-8 only)
    try:
        return minidom.parseString(raw)
    except (ExpatError, ValueError, LookupError, RecursionError):
        return None


#: characters that only a reference keeps (a parser reads a literal one in an attribute as a
#: space, and a carriage return in text as a line feed), which minidom before Python 3.13
#: writes literally: marked with private-use characters the packet does not hold while it
#: writes, then written as references
_KEPT = {"\n": "&#xA;", "\r": "&#xD;", "\t": "&#x9;"}


def _serialised(document) -> bytes:
    """The DOM as UTF-8, its processing instructions (``<?xpacket ...?>``) kept, no XML
    declaration added, and line breaks and tabs kept where a parser would change them."""
    def written() -> bytes:
        return b"".join(node.toxml(encoding="utf-8") for node in document.childNodes)

    held = set(written().decode("utf-8"))
    unused = (chr(c) for c in range(0xE000, 0xF900) if chr(c) not in held)
    marks = dict(zip(_KEPT, unused))
    if len(marks) < len(_KEPT):  # (every private-use character in one packet)
        return written()
    for element in document.getElementsByTagName("*"):
        for attribute in element.attributes.values():
            attribute.value = attribute.value.translate(str.maketrans(marks))
        for text in element.childNodes:
            if text.nodeType == text.TEXT_NODE and "\r" in text.data:
                text.data = text.data.replace("\r", marks["\r"])
    data = written()
    for char, mark in marks.items():
        data = data.replace(mark.encode(), _KEPT[char].encode())
    return data


def _keep(node, wanted) -> None:
    """Remove ``node``'s children that are not ``wanted`` (a test of one), in one pass:
    minidom's removeChild scans the children for each one it removes."""
    children = list(node.childNodes)
    kept = [child for child in children if wanted(child)]
    if len(kept) == len(children):
        return
    for child in children:
        if not wanted(child):
            child.parentNode = child.previousSibling = child.nextSibling = None
    for before, after in zip([None, *kept], [*kept, None]):
        if before is not None:
            before.nextSibling = after
        if after is not None:
            after.previousSibling = before
    node.childNodes[:] = kept


def carried_xmp(raw: bytes | str | None) -> bytes | None:
    """A file's XMP packet as a result carries it (UTF-8), without what describes the file as
    stored (:data:`_STORED`): as attributes or as elements of its descriptions, comments,
    CDATA and text untouched. None for none, one over :data:`XMP_MOST`, or one that is not
    well-formed (or nests deeper than Python's recursion allows)."""
    if not raw:
        return None
    try:
        data = raw.encode() if isinstance(raw, str) else bytes(raw)
    except UnicodeEncodeError:
        return None
    document = _parsed(data) if len(data) <= XMP_MOST else None
    if document is None:
        return None
    try:
        for description in _descriptions(document):
            for attribute in list(description.attributes.values()):
                if _stored(attribute):
                    description.removeAttributeNode(attribute)
            _keep(description, lambda child: not (child.nodeType == child.ELEMENT_NODE
                                                  and _stored(child)))
        return _serialised(document)
    except RecursionError:
        return None


def xmp_for(raw: bytes, size: tuple[int, int]) -> bytes | None:
    """A carried XMP packet (:func:`carried_xmp`) for a result of ``size`` = ``(H, W)``: the
    pixel size it states, where it states one, the result's. None for one that cannot be
    (deeper than Python's recursion allows here: the result then holds none, not a
    traceback after the fit)."""
    document = _parsed(raw)
    if document is None:
        return None
    try:
        for description in _descriptions(document):
            for attribute in description.attributes.values():
                if (attribute.namespaceURI, attribute.localName) in _SIZE:
                    attribute.value = str(size[_SIZE[attribute.namespaceURI,
                                                     attribute.localName]])
            for child in description.childNodes:
                if (child.nodeType == child.ELEMENT_NODE
                        and (child.namespaceURI, child.localName) in _SIZE):
                    _keep(child, lambda _: False)
                    child.appendChild(document.createTextNode(
                        str(size[_SIZE[child.namespaceURI, child.localName]])))
        return _serialised(document)
    except RecursionError:
        return None


#: the TIFF tags (EXIF's first directory too) that describe the photo, not its pixels, as
#: text: its description, the maker and model of the camera or scanner, the software, the
#: date and time, the artist and the copyright
DESCRIPTIVE = (270, 271, 272, 305, 306, 315, 33432)


def directories(raw: bytes | None) -> list[str]:
    """What a carried EXIF block's sub-directories hold, in words, where they hold any
    (a TIFF result carries the descriptive tags alone: :func:`descriptive_text`)."""
    if not raw:
        return []
    exif = _loaded(raw)
    return [words for code, words in ((EXIF_IFD, "date taken and exposure"),
                                      (GPS_IFD, "GPS position"))
            if code in exif and exif.get_ifd(code)]


#: the text entries (ASCII) of an EXIF directory a TIFF's description carries: dates taken
#: and digitised with their time zones and fractions, the owner, the serial numbers, the lens,
#: the picture's id (UserComment and the like are not text: they hold a character code)
EXIF_TEXT = (0x9003, 0x9004, 0x9010, 0x9011, 0x9012, 0x9290, 0x9291, 0x9292, 0xA420, 0xA430,
             0xA431, 0xA433, 0xA434, 0xA435)


def tiff_exif(tags: dict[int, object], details: object = None,
              encoding: str = "utf-8") -> bytes | None:
    """An EXIF block of a TIFF's descriptive tags (``code -> value``, text only; tifffile's
    own ``{"shape": ...}`` description is not the photo's) and of the text entries
    (:data:`EXIF_TEXT`) of its EXIF directory (``details``: tifffile's names -> values), so
    that a scan's description goes with the result as a JPEG's EXIF block does. ``encoding``:
    how the reader decoded the tags' bytes (tifffile: UTF-8; Pillow: Latin-1)."""
    exif = Image.Exif()
    for code, value in tags.items():
        if isinstance(value, str) and value.strip("\0 ") and not (
                code == 270 and value.startswith('{"shape":')):
            exif[code] = value.encode(encoding, "replace")  # its bytes, as stored
    names = {ExifTags.TAGS[code]: code for code in EXIF_TEXT}
    entries = {names[name]: value for name, value in (
        details.items() if isinstance(details, dict) else ()) if name in names
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
    return {code: exif[code] for code in DESCRIPTIVE
            if isinstance(exif.get(code), bytes) and exif[code].strip(b"\0 ")}
