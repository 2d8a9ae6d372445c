"""Make tests/data/phone.heic and phone.png: a small picture this project draws (smooth
shapes, no photograph), saved losslessly as PNG and as a HEIC with a camera's EXIF, for
test_inputs.py's HEIF test; and two_pictures.heic, a red and a blue picture of which the
second is the primary one (as in a spatial photo). dip reads HEIC through pi-heif, which
decodes only; encoding needs pillow-heif (its x265 encoder is GPL, so it is no dependency of
dip):

    pip install pillow-heif numpy && python tests/data/make_phone_heic.py
"""

from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image

HERE = Path(__file__).resolve().parent


def picture(h: int = 32, w: int = 48) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    disc = ((x - 0.6) ** 2 + (y - 0.4) ** 2 < 0.08).astype(float)
    rgb = np.stack([0.2 + 0.6 * x, 0.3 + 0.5 * y * (1 - disc), 0.8 - 0.5 * x * y + 0.1 * disc])
    return np.round(np.clip(rgb, 0, 1).transpose(1, 2, 0) * 255).astype(np.uint8)


if __name__ == "__main__":
    pillow_heif.register_heif_opener()
    pixels = Image.fromarray(picture())
    pixels.save(HERE / "phone.png")
    exif = Image.Exif()
    exif[0x010F] = "dip test camera"
    exif.get_ifd(0x8769)[0x9003] = "2001:02:03 04:05:06"  # DateTimeOriginal
    pixels.save(HERE / "phone.heic", quality=95, exif=exif)
    both = pillow_heif.from_pillow(Image.new("RGB", (16, 8), (255, 0, 0)))
    both.add_from_pillow(Image.new("RGB", (8, 16), (0, 0, 255)))
    both.save(HERE / "two_pictures.heic", quality=90, primary_index=1)
