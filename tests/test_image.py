"""Reading and writing images: modes kept, alpha carried, bad files refused clearly."""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import png
import pytest
import torch
from PIL import ExifTags, Image, ImageOps

from dip import image
from dip.errors import InputError

from conftest import synthetic


def _rgb(h: int = 12, w: int = 20) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode, channels, has_alpha", [
    ("L", 1, False), ("RGB", 3, False), ("RGBA", 3, True), ("LA", 1, True), ("P", 3, False),
    ("1", 1, False)])
def test_round_trip_keeps_mode_size_and_alpha(tmp_path: Path, mode: str, channels: int,
                                              has_alpha: bool) -> None:
    src = Image.fromarray(_rgb()).convert(mode)
    src.save(tmp_path / "in.png")
    pic = image.load_image(tmp_path / "in.png")
    assert pic.pixels.shape == (1, channels, 12, 20)
    assert (pic.alpha is not None) == has_alpha
    image.save_image(pic, tmp_path / "out.png")
    back = Image.open(tmp_path / "out.png")
    assert back.size == (20, 12)
    expected = {"P": "RGB", "1": "L"}.get(mode, mode)
    assert back.mode == expected
    if mode in ("L", "RGB", "RGBA", "LA"):
        assert np.array_equal(np.asarray(back), np.asarray(src))  # 8-bit round trip is exact


def test_16_bit_grey_stays_16_bit(tmp_path: Path) -> None:
    array = np.random.default_rng(0).integers(0, 65536, (9, 7), dtype=np.uint16)
    Image.fromarray(array).save(tmp_path / "in.png")
    pic = image.load_image(tmp_path / "in.png")
    assert pic.bits == 16
    image.save_image(pic, tmp_path / "out.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")).astype(np.uint16), array)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    src = Image.fromarray(_rgb(10, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    src.save(tmp_path / "in.jpg", exif=exif)
    assert image.load_image(tmp_path / "in.jpg").size == (30, 10)


@pytest.mark.parametrize("content, message", [
    (None, "input not found"),
    (b"this is not an image", "not an image"),
])
def test_bad_inputs_are_input_errors(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "x.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        image.load_image(path)


def test_truncated_image_is_an_input_error(tmp_path: Path) -> None:
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        image.load_image(tmp_path / "cut.png")


def test_too_many_pixels_is_refused_before_decoding(tmp_path: Path) -> None:
    Image.fromarray(_rgb(100, 100)).save(tmp_path / "big.png")
    with pytest.raises(InputError, match="raise it with max_pixels"):
        image.load_image(tmp_path / "big.png", max_pixels=5000)


def test_mask_conventions_and_size_check(tmp_path: Path) -> None:
    m = np.zeros((4, 6), dtype=np.uint8)
    m[1, 2] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    fill = image.load_mask(tmp_path / "m.png", (4, 6))
    assert fill.shape == (1, 1, 4, 6) and fill[0, 0, 1, 2] == 0 and fill.sum() == 23
    with pytest.warns(image.DipWarning, match="inverted"):  # 23 of 24 pixels to fill
        keeps = image.load_mask(tmp_path / "m.png", (4, 6), keeps=True)
    assert keeps[0, 0, 1, 2] == 1 and keeps.sum() == 1
    with pytest.raises(InputError, match="mask .* is 6x4 but the image is 7x4"):
        image.load_mask(tmp_path / "m.png", (4, 7))


def test_a_mask_that_hides_everything_is_refused(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 4), 255, dtype=np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(InputError, match="no known pixel"):
        image.load_mask(tmp_path / "m.png", (4, 4))


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    def explode(f) -> None:
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        image.write_atomic(tmp_path / "out.png", explode)
    assert list(tmp_path.iterdir()) == []


def test_written_files_get_normal_permissions(tmp_path: Path) -> None:
    path = image.save_image(image.Picture(torch.rand(1, 3, 4, 4)), tmp_path / "o.png")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_file_written_over_another_keeps_its_permissions(tmp_path: Path) -> None:
    path = tmp_path / "o.png"
    path.write_bytes(b"old")
    path.chmod(0o600)
    image.save_image(image.Picture(torch.rand(1, 3, 4, 4)), path)
    assert path.read_bytes() != b"old" and path.stat().st_mode & 0o7777 == 0o600
    path.chmod(0o4755)  # a set-user-ID bit is not carried to what replaces it
    image.save_image(image.Picture(torch.rand(1, 3, 4, 4)), path)
    assert path.stat().st_mode & 0o7777 == 0o755


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux's /proc")
def test_a_write_learns_the_umask_without_clearing_it(tmp_path: Path, monkeypatch) -> None:
    """Setting the umask to 0 and back left a moment in which another thread of the caller's
    made files writable by everyone: where the system says it, it is read instead."""
    before = os.umask(0o027)
    try:
        def refuse(mask: int) -> int:
            raise AssertionError(f"the umask was set to {mask:o}")

        monkeypatch.setattr(os, "umask", refuse)
        path = image.save_image(image.Picture(torch.rand(1, 3, 4, 4)), tmp_path / "o.png")
        assert path.stat().st_mode & 0o777 == 0o640
    finally:
        monkeypatch.undo()
        os.umask(before)


def test_unknown_output_extension(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="extension '.xyz'"):
        image.save_image(image.Picture(torch.rand(1, 3, 4, 4)), tmp_path / "o.xyz")


@pytest.mark.parametrize("subsampling, chroma", [(0, "finite"), (2, "inf")])
def test_a_jpeg_carries_its_coding_error_from_its_tables(tmp_path: Path, subsampling: int,
                                                         chroma: str) -> None:
    # a photo-like picture (smooth shapes and a little grain): random pixels would set every
    # coefficient, and clip
    grain = np.random.default_rng(0).normal(0, 4, (48, 48, 3))
    pixels = np.clip(np.round(synthetic(48)[0].permute(1, 2, 0).numpy() * 255 + grain), 0,
                     255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.jpg", quality=75, subsampling=subsampling)
    pic = image.load_image(tmp_path / "in.jpg")
    luma = np.asarray(Image.open(tmp_path / "in.jpg").quantization[0], dtype=np.float64)
    assert pic.coding_error[0] == pytest.approx(np.sqrt((luma ** 2).mean() / 12) / 255)
    assert len(pic.coding_error) == 3
    assert (pic.coding_error[1] == float("inf")) == (chroma == "inf")
    # the bound holds: the luma's true error is under it
    decoded = pic.pixels[0].permute(1, 2, 0).numpy() * 255
    y = np.array([0.299, 0.587, 0.114])
    true = np.sqrt((((decoded - pixels) @ y) ** 2).mean()) / 255
    assert true < pic.coding_error[0]


def test_only_a_jpegs_own_pixels_carry_a_coding_error(tmp_path: Path) -> None:
    Image.fromarray(_rgb(10, 30)[..., 0]).save(tmp_path / "grey.jpg", quality=90)
    grey = image.load_image(tmp_path / "grey.jpg")
    assert grey.pixels.shape[1] == 1 and len(grey.coding_error) == 1
    assert grey.with_pixels(grey.pixels * 0.5).coding_error is None
    Image.fromarray(_rgb(10, 30)).save(tmp_path / "in.png")
    assert image.load_image(tmp_path / "in.png").coding_error is None
    src = Image.fromarray(_rgb(10, 30))  # a turned JPEG (EXIF) keeps its tables' error
    exif = Image.Exif()
    exif[0x0112] = 6
    src.save(tmp_path / "turned.jpg", exif=exif)
    assert image.load_image(tmp_path / "turned.jpg").coding_error is not None


def test_a_coding_error_is_read_only_from_a_jpeg_stored_as_ycbcr(tmp_path: Path) -> None:
    from PIL import PngImagePlugin

    text = PngImagePlugin.PngInfo()
    text.add_text("dip.coding_error", "abc")  # a PNG's text chunk is not a coding error
    Image.fromarray(_rgb()).save(tmp_path / "text.png", pnginfo=text)
    assert image.load_image(tmp_path / "text.png").coding_error is None
    # channels stored as R, G, B (Adobe's marker says so): their tables are not Y/Cb/Cr's
    Image.fromarray(_rgb()).save(tmp_path / "rgb.jpg", quality=75, keep_rgb=True)
    assert image.load_image(tmp_path / "rgb.jpg").coding_error is None


def _camera_exif(orientation: int = 6) -> Image.Exif:
    """What a camera writes: maker, date taken, stored pixel size, a place, an orientation."""
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0112] = orientation
    details = exif.get_ifd(0x8769)
    details[0x9003] = "2001:02:03 04:05:06"  # DateTimeOriginal
    details[0xA002], details[0xA003] = 20, 12  # the stored picture's width, height
    exif.get_ifd(0x8825)[1] = "N"  # GPSLatitudeRef
    return exif


@pytest.mark.parametrize("out, bits", [("o.jpg", 8), ("o.png", 8), ("o.webp", 8),
                                       ("o.png", 16)])
def test_a_result_carries_the_photos_exif_turned_and_resized(tmp_path: Path, out: str,
                                                             bits: int) -> None:
    Image.fromarray(_rgb()).save(tmp_path / "in.jpg", exif=_camera_exif())
    picture = image.load_image(tmp_path / "in.jpg")
    assert picture.size == (20, 12)  # turned by its orientation
    enlarged = torch.nn.functional.interpolate(picture.pixels, scale_factor=2)
    result = image.save_image(dataclasses.replace(picture.with_pixels(enlarged), bits=bits),
                              tmp_path / out)
    exif = Image.open(result).getexif()
    details = exif.get_ifd(0x8769)
    assert exif[0x010F] == "Canon" and details[0x9003] == "2001:02:03 04:05:06"
    assert exif.get_ifd(0x8825)[1] == "N"
    assert 0x0112 not in exif  # the pixels are turned already: a viewer must not turn them again
    assert (details[0xA002], details[0xA003]) == (24, 40)  # the result's width and height
    assert image.load_image(result).size == (40, 24)


def test_a_format_that_drops_the_photos_exif_says_so(tmp_path: Path) -> None:
    """BMP holds no EXIF and a TIFF result no EXIF directory (the date taken, the place):
    both were dropped without a word, where transparency and 16 bits are said."""
    import warnings

    from dip import run

    Image.fromarray(_rgb()).save(tmp_path / "in.jpg", exif=_camera_exif(1))
    picture = image.load_image(tmp_path / "in.jpg")

    def said(out: str) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run.warn_of_what_the_format_drops(tmp_path / out, picture)
        return [str(w.message) for w in caught]

    assert said("o.bmp") == [f"{tmp_path / 'o.bmp'}: BMP holds no metadata, so the input's "
                             f"EXIF (camera, date taken, captions) is dropped (write .png, .jpg "
                             f"or .webp to keep it)"]
    assert said("o.tif") == [f"{tmp_path / 'o.tif'}: a TIFF result keeps the input's camera "
                             f"and description but not its EXIF directories, so its date taken "
                             f"and exposure and GPS position are dropped (write .png, .jpg or "
                             f".webp to keep them)"]
    assert said("o.png") == said("o.jpg") == said("o.webp") == []
    picture = dataclasses.replace(picture, xmp=b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    assert said("o.bmp")[0].endswith("the input's EXIF and XMP (camera, date taken, captions) "
                                     "are dropped (write .png, .jpg or .webp to keep them)")
    picture = dataclasses.replace(picture, exif=None, xmp=None)  # none: nothing to say
    assert said("o.bmp") == said("o.tif") == []


def test_a_webp_result_states_the_print_size_a_jpegs_header_gave(tmp_path: Path) -> None:
    """WebP's one place for a resolution is its EXIF block: a JPEG's 300 dpi, stated in its
    JFIF header alone, was dropped, and the print size with it."""
    Image.fromarray(_rgb()).save(tmp_path / "in.jpg", dpi=(300, 300))
    picture = image.load_image(tmp_path / "in.jpg")
    assert picture.exif is None and picture.print_size == (20 / 300, 12 / 300)
    written = image.save_image(picture, tmp_path / "o.webp")
    assert Image.open(written).getexif()[0x011A] == 300  # XResolution
    assert image.load_image(written).print_size == pytest.approx(picture.print_size)
    enlarged = picture.with_pixels(torch.nn.functional.interpolate(picture.pixels,
                                                                   scale_factor=2))
    written = image.save_image(enlarged, tmp_path / "big.webp")
    assert Image.open(written).getexif()[0x011A] == 600  # the same print, twice the pixels
    plain = dataclasses.replace(picture, print_size=None)  # none stated: none made up
    assert not Image.open(image.save_image(plain, tmp_path / "p.webp")).getexif()


@pytest.mark.filterwarnings("ignore:Corrupt EXIF")  # Pillow's, about the damaged block
def test_exif_is_left_behind_where_it_would_mislead_or_cannot_be_read(tmp_path: Path) -> None:
    # a thumbnail (the damaged picture, small) in the block's second directory is dropped
    thumb = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(thumb, "JPEG")
    thumb = thumb.getvalue()
    make = b"Canon\0"
    ifd1 = 26 + len(make)  # IFD0 at 8: one entry and the next directory's offset, 18 bytes
    at = ifd1 + 2 + 2 * 12 + 4
    block = (b"Exif\0\0II*\0" + struct.pack("<IH", 8, 1)
             + struct.pack("<HHIII", 0x010F, 2, len(make), 26, ifd1) + make
             + struct.pack("<HHHIIHHIII", 2, 0x0201, 4, 1, at, 0x0202, 4, 1, len(thumb), 0)
             + thumb)
    Image.new("RGB", (16, 16)).save(tmp_path / "thumb.jpg", exif=block)
    assert Image.open(tmp_path / "thumb.jpg").getexif().get_ifd(ExifTags.IFD.IFD1)  # it has one
    picture = image.load_image(tmp_path / "thumb.jpg")
    image.save_image(picture, tmp_path / "o.jpg")
    written = Image.open(tmp_path / "o.jpg")
    assert written.getexif()[0x010F] == "Canon" and thumb not in written.info["exif"]
    assert not written.getexif().get_ifd(ExifTags.IFD.IFD1)
    # a damaged block is no error: the result has none
    Image.new("RGB", (16, 16)).save(tmp_path / "bad.jpg", exif=b"Exif\0\0II*\0\x08\0\0\0\xff")
    assert image.load_image(tmp_path / "bad.jpg").exif is None
    # a PNG's eXIf chunk is carried too; TIFF and BMP results hold none
    Image.fromarray(_rgb()).save(tmp_path / "in.png", exif=_camera_exif(1))
    picture = image.load_image(tmp_path / "in.png")
    assert Image.open(image.save_image(picture, tmp_path / "o.png")).getexif()[0x010F] == "Canon"
    assert 0x010F not in Image.open(image.save_image(picture, tmp_path / "o.bmp")).getexif()


def test_an_exif_block_too_large_for_a_jpeg_is_left_out_with_a_warning(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x010E] = "a long description " * 4000  # ImageDescription: 76 KB, fine in a PNG
    Image.fromarray(_rgb()).save(tmp_path / "in.png", exif=exif)
    picture = image.load_image(tmp_path / "in.png")
    with pytest.warns(image.DipWarning, match="more than a JPEG holds"):
        image.save_image(picture, tmp_path / "o.jpg")
    assert "exif" not in Image.open(tmp_path / "o.jpg").info
    assert Image.open(image.save_image(picture, tmp_path / "o.png")).getexif()[0x010E] == \
        exif[0x010E]


@pytest.mark.parametrize("made", ["in.png", "in.jpg", "in.tif", "in.bmp", "deep.png"])
def test_a_result_prints_at_its_inputs_size_and_an_enlarged_one_finer(tmp_path: Path,
                                                                      made: str) -> None:
    """A scan at 600 dpi comes back at 600 dpi; enlarged 4 times, at 2400 (the same print)."""
    if made == "deep.png":  # 16-bit colour: pypng's path, pHYs read and written by dip
        image.save_image(image.Picture(torch.rand(1, 3, 12, 20), bits=16,
                                       print_size=(20 / 600, 12 / 600)), tmp_path / made)
    else:
        Image.fromarray(_rgb()).save(tmp_path / made, dpi=(600, 600))
    picture = image.load_image(tmp_path / made)
    assert picture.print_size == pytest.approx((20 / 600, 12 / 600), rel=1e-4)
    enlarged = picture.with_pixels(torch.nn.functional.interpolate(picture.pixels,
                                                                    scale_factor=4))
    for out in ("o.png", "o.jpg", "o.tif", "o.bmp"):
        written = image.load_image(image.save_image(enlarged, tmp_path / out))
        assert written.print_size == pytest.approx(picture.print_size, rel=1e-4), out
        assert Image.open(tmp_path / out).info["dpi"] == pytest.approx((2400, 2400), rel=1e-4)
    image.save_image(picture, tmp_path / "same.png")
    assert Image.open(tmp_path / "same.png").info["dpi"] == pytest.approx((600, 600), rel=1e-4)


def test_a_turned_photo_prints_turned_and_its_exif_states_the_results_resolution(
        tmp_path: Path) -> None:
    exif = _camera_exif(orientation=6)  # stored 20 wide, 12 high; shown turned a quarter
    exif[0x011A], exif[0x011B], exif[0x0128] = 600.0, 300.0, 2  # X, Y resolution in inches
    Image.fromarray(_rgb()).save(tmp_path / "in.jpg", dpi=(600, 300), exif=exif)
    picture = image.load_image(tmp_path / "in.jpg")
    assert picture.size == (20, 12)
    assert picture.print_size == pytest.approx((12 / 300, 20 / 600))  # width, height shown
    enlarged = picture.with_pixels(torch.nn.functional.interpolate(picture.pixels,
                                                                    scale_factor=2))
    written = Image.open(image.save_image(enlarged, tmp_path / "o.jpg"))
    assert written.info["dpi"] == (600, 1200)
    assert (written.getexif()[0x011A], written.getexif()[0x011B]) == (600, 1200)
    # a file that states no resolution gets none
    Image.fromarray(_rgb()).save(tmp_path / "plain.png")
    plain = image.load_image(tmp_path / "plain.png")
    assert plain.print_size is None
    assert "dpi" not in Image.open(image.save_image(plain, tmp_path / "o.png")).info
    # nor does a TIFF Pillow reads (a palette one) without resolution tags, where Pillow
    # says 1 dpi: a 37 px result stated itself 37 inches wide
    Image.fromarray(_rgb()).quantize(16).save(tmp_path / "plain.tif")
    assert Image.open(tmp_path / "plain.tif").info.get("dpi") == (1, 1)  # Pillow's, not stated
    assert image.load_image(tmp_path / "plain.tif").print_size is None


@pytest.mark.parametrize("made", ["in.jpg", "in.tif", "deep.png"])
def test_a_quarter_turn_turns_the_print_size_of_a_square_picture_too(tmp_path: Path,
                                                                     made: str) -> None:
    """Stored at 100 x 200 dpi and shown turned a quarter: shown at 200 x 100, square or not."""
    pixels = _rgb(16, 16)
    if made == "in.jpg":
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(pixels).save(tmp_path / made, dpi=(100, 200), exif=exif)
    elif made == "in.tif":
        import tifffile
        tifffile.imwrite(tmp_path / made, pixels, photometric="rgb", resolution=(100, 200),
                         resolutionunit=2, extratags=[(274, "H", 1, 6, True)])
    else:  # 16-bit colour, dip's own pHYs and eXIf chunks
        exif = Image.Exif()
        exif[0x0112] = 6
        image.save_image(image.Picture(torch.rand(1, 3, 16, 16), bits=16, exif=exif.tobytes(),
                                       print_size=(16 / 100, 16 / 200)), tmp_path / made)
    assert image.load_image(tmp_path / made).print_size == pytest.approx((16 / 200, 16 / 100),
                                                                         rel=1e-4)


@pytest.mark.parametrize("exif_tags", [{0x010F: "Canon"}, {0x011A: 300.0, 0x011B: 300.0,
                                                           0x0128: 1}])
def test_a_resolution_a_file_does_not_state_is_not_invented(tmp_path: Path,
                                                            exif_tags: dict) -> None:
    # Pillow's dpi is 72 for a JPEG whose EXIF block has no resolution, and reads one in no
    # unit (an aspect ratio) as inches
    exif = Image.Exif()
    for tag, value in exif_tags.items():
        exif[tag] = value
    Image.fromarray(_rgb()).save(tmp_path / "in.jpg", exif=exif)
    picture = image.load_image(tmp_path / "in.jpg")
    assert picture.print_size is None
    assert "dpi" not in Image.open(image.save_image(picture, tmp_path / "o.png")).info
    # a BMP's 0 pixels per metre: Pillow 13 reads no dpi, Pillow 12 reads (0, 0); both none
    assert not any(Image.open(image.save_image(picture, tmp_path / "o.bmp")).info.get("dpi")
                   or ())
    # and an EXIF block's own resolution counts where the file states no other
    exif[0x011A], exif[0x011B], exif[0x0128] = 150.0, 150.0, 3  # per centimetre
    Image.fromarray(_rgb()).save(tmp_path / "exif.png", exif=exif)
    assert image.load_image(tmp_path / "exif.png").print_size == pytest.approx(
        (20 / 381, 12 / 381))


def test_a_resolution_a_format_cannot_state_is_left_out_with_a_warning(tmp_path: Path) -> None:
    """An electron micrograph at 0.2 nm a pixel (5e7 pixels per cm), enlarged: no format but
    TIFF states that; the save must not fail after the fit."""
    import tifffile

    tifffile.imwrite(tmp_path / "sem.tif", _rgb(), photometric="rgb", resolution=(5e7, 5e7),
                     resolutionunit=3)
    picture = image.load_image(tmp_path / "sem.tif")
    enlarged = picture.with_pixels(torch.nn.functional.interpolate(picture.pixels,
                                                                    scale_factor=4))
    for out, bits in (("o.png", 8), ("o.jpg", 8), ("o.bmp", 8), ("deep.png", 16)):
        with pytest.warns(image.DipWarning, match="outside what"):
            written = image.save_image(dataclasses.replace(enlarged, bits=bits), tmp_path / out)
        assert image.load_image(written).print_size is None
    tif = image.save_image(enlarged, tmp_path / "o.tif")
    assert image.load_image(tif).print_size == pytest.approx(picture.print_size, rel=1e-6)
    # a JPEG's 16-bit density: 40000 dpi doubled is 80000, which it would wrap to 14464
    Image.fromarray(_rgb()).save(tmp_path / "fine.jpg", dpi=(40000, 40000))
    fine = image.load_image(tmp_path / "fine.jpg")
    with pytest.warns(image.DipWarning, match="outside what JPEG states"):
        image.save_image(fine.with_pixels(torch.nn.functional.interpolate(
            fine.pixels, scale_factor=2)), tmp_path / "fine2.jpg")
    assert "dpi" not in Image.open(tmp_path / "fine2.jpg").info


@pytest.mark.parametrize("error", [EOFError("Unexpected end of file"),
                                   RuntimeError("Invalid image size: zero width or height")])
def test_a_decoders_other_errors_are_input_errors(tmp_path: Path, monkeypatch,
                                                  error: Exception) -> None:
    # what HEIF's decoder raises on damaged files (EOFError read as an interrupt before)
    (tmp_path / "in.heic").write_bytes(b"\0\0\0\x18ftypheic")
    monkeypatch.setattr(image.Image, "open", lambda *a, **k: (_ for _ in ()).throw(error))
    with pytest.raises(InputError, match="cannot read input"):
        image.load_image(tmp_path / "in.heic")


def test_heif_files_are_found_in_a_folder_by_a_fresh_process() -> None:
    import subprocess
    import sys

    found = subprocess.run([sys.executable, "-c", "from dip import image; "
                            "print(sorted(image.readable_suffixes()))"],
                           capture_output=True, text=True, check=True).stdout
    assert "'.heic'" in found and "'.heif'" in found


def test_a_heif_that_crashes_its_decoder_is_one_clear_error(tmp_path: Path,
                                                            monkeypatch) -> None:
    # two bytes of tests/data/phone.heic's header changed: libheif 1.23 (pi-heif 1.4) crashed
    # the whole process on it (a segmentation fault), ending a dip run over a folder
    damaged = bytearray((Path(__file__).parent / "data" / "phone.heic").read_bytes())
    damaged[178], damaged[254] = 0x80, 0x05
    (tmp_path / "damaged.heic").write_bytes(bytes(damaged))
    with pytest.raises(InputError, match="cannot read input"):
        image.load_image(tmp_path / "damaged.heic")
    # whatever the decoder's version: a decoder that takes its process down is an InputError
    phone = Path(__file__).parent / "data" / "phone.heic"
    monkeypatch.setattr(image, "_PROBE", "print('probing', flush=True); import os; os.abort()")
    with pytest.raises(InputError, match="decoder crashed on it"):
        image.load_image(phone)
    monkeypatch.setattr(image, "_PROBE", "print('probing', flush=True); import os; "
                                         "os.kill(os.getpid(), 9)")  # out of memory
    with pytest.raises(InputError, match="stopped .*out of memory"):
        image.load_image(phone)
    # a child that cannot start the probe (a frozen app's executable, an interpreter without
    # Pillow: it dies before it says so) says nothing of the file, which is read as usual
    monkeypatch.setattr(image, "_PROBE", "import os; os.abort()")
    assert image.load_image(phone).size == (32, 48)


def test_a_heif_whose_decoder_hangs_is_one_clear_error_in_bounded_time(monkeypatch) -> None:
    import time

    phone = Path(__file__).parent / "data" / "phone.heic"
    monkeypatch.setattr(image, "PROBE_SECONDS", 1)
    monkeypatch.setattr(image, "_PROBE", "print('probing', flush=True); import time; "
                                         "time.sleep(60)")  # a decoder caught in a loop
    start = time.monotonic()
    with pytest.raises(InputError, match=r"cannot read input .*phone\.heic: its decoder was "
                                         r"still at it after 1 s"):
        image.load_image(phone)
    assert time.monotonic() - start < 30
    # a child too slow to reach the file at all says nothing of it: read in-process
    monkeypatch.setattr(image, "_PROBE", "import time; time.sleep(60)")
    assert image.load_image(phone).size == (32, 48)


#: what Lightroom writes, in short: keywords and a rating, beside the stored picture's
#: orientation, size (20 x 12, as an attribute and as an element) and resolution
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
       b'22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:tiff="http://ns.adobe.com/tiff'
       b'/1.0/" xmlns:exif="http://ns.adobe.com/exif/1.0/" xmlns:xmp="http://ns.adobe.com/xap'
       b'/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/"\n tiff:Orientation="6" '
       b'exif:PixelXDimension="20" xmp:Rating="4"><exif:PixelYDimension>12</exif:PixelY'
       b'Dimension><tiff:XResolution>300/1</tiff:XResolution><dc:subject><rdf:Bag><rdf:li>'
       b'grandma</rdf:li></rdf:Bag></dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>')


@pytest.mark.parametrize("out, bits", [("o.jpg", 8), ("o.png", 8), ("o.webp", 8), ("o.tif", 8),
                                       ("o.png", 16), ("o.tif", 16)])
def test_a_result_carries_the_photos_xmp_with_its_own_size(tmp_path: Path, out: str,
                                                           bits: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_rgb()).save(tmp_path / "in.jpg", xmp=XMP, exif=exif)
    picture = image.load_image(tmp_path / "in.jpg")
    enlarged = picture.with_pixels(torch.nn.functional.interpolate(picture.pixels,
                                                                    scale_factor=2))
    xmp = image.load_image(image.save_image(dataclasses.replace(enlarged, bits=bits),
                                            tmp_path / out)).xmp
    assert b"<rdf:li>grandma</rdf:li>" in xmp and b'xmp:Rating="4"' in xmp
    assert b"Orientation" not in xmp and b"XResolution" not in xmp  # applied; stated elsewhere
    # shown 12 wide and 20 high, enlarged twice
    assert b'exif:PixelXDimension="24"' in xmp and b"<exif:PixelYDimension>40<" in xmp


def _png_xmp(data: bytes) -> bytes | None:
    return image._png_metadata(list(image.png_chunks(data))).get(image._PNG_XMP)


def test_an_xmp_packet_is_read_compressed_and_left_out_of_a_jpeg_too_small_for_it(
        tmp_path: Path) -> None:
    payload = image._PNG_XMP + b"\0\1\0\0\0" + zlib.compress(XMP)  # a compressed iTXt chunk
    assert _png_xmp(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(payload)) + b"iTXt"
                    + payload + bytes(4)) == XMP
    huge = image.Picture(torch.rand(1, 3, 8, 8), xmp=XMP.replace(
        b"grandma", b"grandma " + b"and all her family " * 4000))  # 76 KB of keywords
    with pytest.warns(image.DipWarning, match="XMP packet .* more than a JPEG holds"):
        image.save_image(huge, tmp_path / "o.jpg")
    assert "xmp" not in Image.open(tmp_path / "o.jpg").info
    kept = image.load_image(image.save_image(huge, tmp_path / "o.png")).xmp
    assert b"grandma" in kept and len(kept) > 70000


def test_a_scans_description_and_copyright_go_with_the_result_byte_for_byte(
        tmp_path: Path) -> None:
    import tifffile

    description, rights = "Grandma, 1950 — Müller".encode(), "© Müller".encode()
    tifffile.imwrite(tmp_path / "scan.tif", _rgb(), photometric="rgb", metadata=None,
                     software=False, extratags=[(270, "s", 0, description, True),
                                                (271, "s", 0, b"Epson", True),
                                                (33432, "s", 0, rights, True)])
    picture = image.load_image(tmp_path / "scan.tif")
    for out in ("o.tif", "o.jpg", "o.png"):
        exif = Image.Exif()
        exif.load(image.load_image(image.save_image(picture, tmp_path / out)).exif)
        # (Pillow shows a tag's bytes as Latin-1)
        assert [exif[tag].encode("latin-1") for tag in (270, 271, 33432)] == [
            description, b"Epson", rights], out
    with tifffile.TiffFile(tmp_path / "o.tif") as tif:
        assert tif.pages[0].tags[33432].value == "© Müller"
        assert 305 not in tif.pages[0].tags  # no "tifffile.py" where the scan named none
    # a JPEG's copyright, turned by its orientation (Pillow's turn rewrites "©" as "?")
    exif = Image.Exif()
    exif[0x0112], exif[0x8298] = 6, rights
    Image.fromarray(_rgb()).save(tmp_path / "in.jpg", exif=exif)
    written = image.save_image(image.load_image(tmp_path / "in.jpg"), tmp_path / "turned.jpg")
    assert Image.open(written).getexif()[0x8298].encode("latin-1") == rights
    # a TIFF dip wrote has no description of its own to carry (tifffile's {"shape": ...})
    image.save_image(image.Picture(torch.rand(1, 3, 4, 4)), tmp_path / "plain.tif")
    tifffile.imwrite(tmp_path / "shaped.tif", _rgb(), photometric="rgb")
    assert image.load_image(tmp_path / "shaped.tif").exif is not None  # its Software only
    exif = Image.Exif()
    exif.load(image.load_image(tmp_path / "shaped.tif").exif)
    assert 270 not in exif and image.load_image(tmp_path / "plain.tif").exif is None


def test_xmp_properties_of_the_stored_file_go_however_the_packet_spells_them() -> None:
    from xml.dom import minidom

    from dip import metadata

    packet = (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:'
              b'meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
              b'<rdf:Description xmlns:t="http://ns.adobe.com/tiff/1.0/" t:Orientation = "6" '
              b"xmlns:exif='http://ns.adobe.com/exif/1.0/' exif:PixelXDimension='20' "
              b"xmlns:ps='http://ns.adobe.com/photoshop/1.0/' ps:Headline='set t:Orientation="
              b"\"6\" here' xmlns:GCamera=\"http://ns.google.com/photos/1.0/camera/\" "
              b'GCamera:MotionPhoto="1" ps:Instructions="line one&#xA;line two" '
              b'xmlns:Container="http://ns.google.com/photos/1.0/'
              b'container/" xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:xmpMM="http://ns'
              b'.adobe.com/xap/1.0/mm/"><t:XResolution rdf:datatype="r">300/1</t:XResolution >'
              b"<Container:Directory><rdf:Seq><rdf:li><Container:Directory>1</Container:"
              b"Directory></rdf:li></rdf:Seq></Container:Directory>"
              b"<exif:PixelYDimension>12</exif:PixelYDimension><!-- <t:Orientation>6</t:"
              b"Orientation> --><dc:description><![CDATA[<t:Compression>1</t:Compression>]]>"
              b"</dc:description><xmpMM:History><rdf:Seq><rdf:li><rdf:Description "
              b'exif:PixelXDimension="999"/></rdf:li></rdf:Seq></xmpMM:History>'
              b"</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end='w'?>")
    carried = metadata.carried_xmp(packet)
    for gone in (b'Orientation = "6"', b"XResolution", b"MotionPhoto", b"Container:Directory"):
        assert gone not in carried, gone
    # a value, a comment and CDATA that mention a property are text, not the property
    for kept in (b"set t:Orientation=&quot;6&quot; here", b"<!-- <t:Orientation>6",
                 b"<![CDATA[<t:Compression>1</t:Compression>]]>", b"<?xpacket end='w'?>",
                 b'"line one&#xA;line two"'):  # (a parser reads a literal line break as space)
        assert kept in carried, kept
    sized = metadata.xmp_for(carried, (40, 24))
    minidom.parseString(sized)  # well-formed
    assert b'exif:PixelXDimension="24"' in sized and b">40</exif:PixelYDimension>" in sized
    assert b'exif:PixelXDimension="999"' in sized  # a history entry's: another document's
    # the orientation Pillow falls back to where the EXIF block states none, by its rule
    assert metadata.xmp_orientation(b'<a tiff:Orientation="6"/>') == 6
    assert metadata.turn_of(1, b'<a tiff:Orientation="6"/>') == 1  # the EXIF block's first
    assert metadata.turn_of(None, b'<a tiff:Orientation="6"/>') == 6


@pytest.mark.parametrize("made", ["in8.png", "in16.png", "in16_empty_exif.png", "in.tif"])
def test_an_xmp_orientation_turns_every_kind_of_file_as_pillow_turns_a_png(
        tmp_path: Path, made: str) -> None:
    xmp = XMP  # tiff:Orientation="6", and no EXIF orientation
    if made == "in8.png":
        from PIL import PngImagePlugin
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", xmp.decode())
        Image.fromarray(_rgb()).save(tmp_path / made, pnginfo=info)
    elif made.startswith("in16"):  # (pypng's, with the XMP chunk dip writes: no EXIF block)
        buffer = io.BytesIO()
        png.Writer(20, 12, greyscale=False, bitdepth=16).write(
            buffer, np.zeros((12, 60), np.uint16))
        data = image._png_with(buffer.getvalue(), None, None, None, xmp)
        if "empty_exif" in made:  # an empty eXIf chunk is no EXIF block (it hid the XMP's)
            data = data[:33] + image._png_chunk(b"eXIf", b"") + data[33:]
        (tmp_path / made).write_bytes(data)
    else:
        import tifffile
        tifffile.imwrite(tmp_path / made, _rgb(), photometric="rgb",
                         extratags=[(700, "B", len(xmp), xmp, True)])
    picture = image.load_image(tmp_path / made)
    assert picture.size == (20, 12) and b"Orientation" not in picture.xmp


def test_a_16_bit_png_that_cannot_be_read_is_one_error(tmp_path: Path, monkeypatch) -> None:
    """Gone or unreadable between its header and its pixels: an OSError escaped (a
    traceback), where every other file is an InputError."""
    path = tmp_path / "deep.png"
    buffer = io.BytesIO()
    png.Writer(4, 4, greyscale=False, bitdepth=16).write(buffer, np.zeros((4, 12), np.uint16))
    path.write_bytes(buffer.getvalue())
    original = Path.read_bytes

    def failing(self: Path) -> bytes:
        if self.name == "deep.png" and failing.opened:
            raise OSError(5, "Input/output error")
        return original(self)

    failing.opened = False
    real_open = image._open

    def opened_then_fails(*args, **kwargs):
        result = real_open(*args, **kwargs)
        failing.opened = True
        return result

    monkeypatch.setattr(Path, "read_bytes", failing)
    monkeypatch.setattr(image, "_open", opened_then_fails)
    with pytest.raises(InputError, match=r"cannot read input .*deep\.png: Input/output error"):
        image.load_image(path)


def test_a_compressed_xmp_chunk_reads_no_more_than_pillows_limit(tmp_path: Path) -> None:
    from dip import metadata

    # a well-formed packet, 100 MB in about 100 KB: not carried because of its size alone
    bomb = zlib.compress(_packet(b"<dc:title>" + b" " * 100_000_000 + b"</dc:title>"))
    payload = image._PNG_XMP + b"\0\1\0\0\0" + bomb
    chunk = struct.pack(">I", len(payload)) + b"iTXt" + payload + bytes(4)
    read = _png_xmp(b"\x89PNG\r\n\x1a\n" + chunk)
    assert len(read) <= (1 << 20) + 1 and metadata.carried_xmp(read) is None  # not carried
    assert metadata.carried_xmp(_packet(b"<dc:title>x</dc:title>")) is not None  # a small one is


def test_xmp_as_plain_text_after_the_pixel_data_is_carried(tmp_path: Path) -> None:
    # Pillow reads the chunks after IDAT only when it decodes: the text was looked for before
    Image.new("RGB", (8, 8)).save(tmp_path / "p.png")
    data = (tmp_path / "p.png").read_bytes()
    text = image._png_chunk(b"tEXt", b"XML:com.adobe.xmp\0" + _packet(b"<dc:title>x</dc:title>"))
    (tmp_path / "late.png").write_bytes(data[:-12] + text + data[-12:])  # before IEND
    assert b"<dc:title>x</dc:title>" in image.load_image(tmp_path / "late.png").xmp


def test_a_tiff_that_states_no_resolution_has_no_print_size(tmp_path: Path) -> None:
    # tifffile gives 1 x 1 for missing resolution tags: a 40 x 30 picture read as 40 x 30 in
    Image.new("RGB", (40, 30)).save(tmp_path / "plain.tif")
    assert image.load_image(tmp_path / "plain.tif").print_size is None
    Image.new("RGB", (40, 30)).save(tmp_path / "dpi.tif", dpi=(200, 200))
    assert image.load_image(tmp_path / "dpi.tif").print_size == pytest.approx((0.2, 0.15))


def test_a_file_named_png_that_is_not_one_is_not_opened_to_look_for_dips_mark(
        tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "IMG_0001.png").write_bytes(b"\0\0\0\x18ftypheic" + bytes(64))  # a HEIC
    monkeypatch.setattr(image.Image, "open", lambda *a, **k: pytest.fail("opened"))
    assert image.dip_marker(tmp_path / "IMG_0001.png") is None


def test_a_tiff_pillow_reads_keeps_its_description_and_its_xmp_stored_as_text(
        tmp_path: Path) -> None:
    """A CMYK TIFF (Pillow converts it) whose XMP tag is stored as ASCII, not bytes: Pillow's
    own EXIF reading raised a TypeError on it; and its description went missing."""
    from PIL import TiffImagePlugin

    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[270], tags[33432] = "Grandma, 1962", "(c) Family"
    tags[700], tags.tagtype[700] = XMP.decode(), 2  # ASCII
    Image.fromarray(_rgb()).convert("CMYK").save(tmp_path / "in.tif", tiffinfo=tags)
    picture = image.load_image(tmp_path / "in.tif")
    assert b"grandma" in picture.xmp
    exif = Image.Exif()
    exif.load(picture.exif)
    assert (exif[270], exif[33432]) == ("Grandma, 1962", "(c) Family")


def _packet(inner: bytes, namespaces: bytes = b"") -> bytes:
    return (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
            b'02/22-rdf-syntax-ns#"><rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1'
            b'/" xmlns:tiff="http://ns.adobe.com/tiff/1.0/" ' + namespaces + b">" + inner
            + b"</rdf:Description></rdf:RDF></x:xmpmeta>")


def test_an_xmp_packet_that_cannot_be_carried_is_dropped_never_raised() -> None:
    from dip import metadata

    deep = _packet(b"<dc:x>" + b"<a>" * 5000 + b"</a>" * 5000 + b"</dc:x>")
    for packet in (deep, b'<?xml version="1.0" encoding="x-mac-roman"?><a/>',
                   _packet(b"<dc:title>x</dc:title>").decode().encode("utf-16"),
                   b'<!DOCTYPE a [<!ENTITY e "eeeeeeeeee">]>' + _packet(b"&e;"), "\udc80"):
        assert metadata.carried_xmp(packet) is None
    assert metadata.xmp_for(deep, (4, 4)) is None  # (after the fit: no traceback either)
    # what some writers leave after the packet (NULs, junk) is not part of it
    title = _packet(b"<dc:title>Oma</dc:title>")
    assert b"Oma" in metadata.carried_xmp(title + b"\0" * 1000 + b"junk")
    # a depth map's or a portrait's entries point into the file: gone
    portrait = _packet(b"<Device:Container>1</Device:Container><dc:title>Oma</dc:title>",
                       b'xmlns:Device="http://ns.google.com/photos/dd/1.0/device/"')
    assert b"Device:Container" not in metadata.carried_xmp(portrait)
    # text keeps carriage returns (Photoshop's line breaks), and private-use characters (old
    # iPhones' emoji, which dip's writing marks with while it writes)
    assert b"Mum&#xD;Dad" in metadata.carried_xmp(_packet(b"<dc:rights>Mum&#xD;Dad</dc:rights>"))
    emoji = _packet("<dc:title>Call me \ue00a</dc:title>".encode())
    assert "Call me \ue00a".encode() in metadata.carried_xmp(emoji)


def test_a_result_states_orientation_1_where_its_xmp_still_names_one(tmp_path: Path) -> None:
    """A history entry's orientation (Photoshop's) stays in the XMP: Pillow would turn the
    result by it, where no EXIF orientation is stated."""
    from dip import metadata

    history = _packet(b"<xmpMM:History><rdf:Seq><rdf:li><rdf:Description tiff:Orientation="
                      b'"6"/></rdf:li></rdf:Seq></xmpMM:History>',
                      b'xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"')
    exif = Image.Exif()
    exif[0x0112] = 1
    Image.fromarray(_rgb()).save(tmp_path / "in.jpg", xmp=history, exif=exif)
    picture = image.load_image(tmp_path / "in.jpg")
    assert picture.size == (12, 20)  # as Pillow shows it: the EXIF block's 1
    for out in ("o.jpg", "o.png", "o.webp", "o.tif"):
        written = image.save_image(picture, tmp_path / out)
        assert metadata.xmp_orientation(image.load_image(written).xmp) == 6
        assert image.load_image(written).size == (12, 20), out
        assert ImageOps.exif_transpose(Image.open(written)).size == (20, 12), out


def test_a_pngs_xmp_in_plain_text_or_after_its_pixels_is_read_as_pillow_reads_it(
        tmp_path: Path) -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("XML:com.adobe.xmp", XMP.decode())  # tEXt, not iTXt
    Image.fromarray(_rgb()).save(tmp_path / "text.png", pnginfo=info)
    assert b"grandma" in image.load_image(tmp_path / "text.png").xmp
    # an EXIF block (no orientation) before the pixels, the XMP (orientation 6) after
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    Image.fromarray(_rgb()).save(tmp_path / "plain.png", exif=exif)
    data = (tmp_path / "plain.png").read_bytes()
    payload = image._PNG_XMP + b"\0\0\0\0\0" + XMP
    chunk = (struct.pack(">I", len(payload)) + b"iTXt" + payload
             + struct.pack(">I", zlib.crc32(b"iTXt" + payload)))
    (tmp_path / "after.png").write_bytes(data[:-12] + chunk + data[-12:])  # before IEND
    assert image.load_image(tmp_path / "after.png").size == \
        ImageOps.exif_transpose(Image.open(tmp_path / "after.png")).size[::-1] == (20, 12)


def test_fifth_review_xmp_text_encodings_marks_and_a_jpegs_dropped_exif(tmp_path: Path) -> None:
    from PIL import PngImagePlugin

    from dip import metadata

    # a PNG's tEXt holds the packet's UTF-8 bytes, which Pillow decodes as Latin-1
    title = _packet("<dc:title>Grandmère</dc:title>".encode())
    info = PngImagePlugin.PngInfo()
    info.add_text("XML:com.adobe.xmp", title.decode("latin-1"))
    Image.fromarray(_rgb()).save(tmp_path / "text.png", pnginfo=info)
    assert "Grandmère".encode() in image.load_image(tmp_path / "text.png").xmp
    # a declared encoding other than UTF-8 is refused (expat would decode by it); a comment
    # that mentions an entity declaration is a comment
    assert metadata.carried_xmp(b'<?xml version="1.0" encoding="ISO-8859-1"?>' + title) is None
    assert metadata.carried_xmp(_packet(b"<!-- <!ENTITY x> -->")) is not None
    # line breaks in attributes kept beside an old iPhone emoji that is one of the usual marks
    both = metadata.carried_xmp(_packet('<dc:t>\ue00a</dc:t>'.encode(), b'dc:d="a&#xA;b"'))
    assert b'dc:d="a&#xA;b"' in both and "\ue00a".encode() in both
    # a JPEG that cannot hold the EXIF block still states orientation 1 where its XMP names 6
    history = _packet(b"<xmpMM:History><rdf:Seq><rdf:li><rdf:Description tiff:Orientation="
                      b'"6"/></rdf:li></rdf:Seq></xmpMM:History>',
                      b'xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"')
    exif = Image.Exif()
    exif[0x010E] = "a long description " * 4000
    picture = image.Picture(torch.rand(1, 3, 12, 20), exif=exif.tobytes(), xmp=history)
    with pytest.warns(image.DipWarning, match="EXIF block"):
        written = image.save_image(picture, tmp_path / "o.jpg")
    assert Image.open(written).getexif().get(0x0112) == 1
    assert image.load_image(written).size == (12, 20)


def test_a_tiffs_xmp_tag_stored_as_text_keeps_its_utf_8(tmp_path: Path) -> None:
    from PIL import TiffImagePlugin

    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[700], tags.tagtype[700] = _packet(b'<dc:title>Grandm?re</dc:title>').decode(), 2
    Image.fromarray(_rgb()).convert("CMYK").save(tmp_path / "in.tif", tiffinfo=tags)
    data = (tmp_path / "in.tif").read_bytes().replace(b"Grandm?re", "Grandmère".encode())
    (tmp_path / "in.tif").write_bytes(data)  # (Pillow writes an ASCII tag's text as ASCII)
    assert "<dc:title>Grandmère</dc:title>".encode() in image.load_image(tmp_path / "in.tif").xmp


def test_reading_exif_in_two_threads_leaves_the_warning_filters_as_they_were() -> None:
    """Pillow's warnings about a damaged EXIF block are silenced while it is read, and the
    filters are the process's: two threads inside catch_warnings at once, leaving in the
    other order, left "ignore" installed for good (every later warning of the program
    gone); a Python API sweep found it with two threads reading EXIF 20 000 times each."""
    import sys
    import threading
    import warnings

    from dip import metadata

    exif = Image.Exif()
    exif[metadata.ORIENTATION] = 6
    raw = exif.tobytes()
    before = list(warnings.filters)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads swap often: the window is a few lines wide

    def read() -> None:
        for _ in range(3000):
            assert metadata.exif_orientation(raw) == 6
            metadata.carried_exif(raw)

    try:
        threads = [threading.Thread(target=read) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert warnings.filters == before
