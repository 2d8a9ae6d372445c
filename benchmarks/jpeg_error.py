"""How far a JPEG's quantisation tables bound its error, and what the noise estimate reads on
clean small inputs: the figures behind dip.image.coding_error and behind leaving the noise
estimate out of super-resolution's back-projection (benchmarks/README.md, "x4 from a small
JPEG"). numpy, Pillow and dip only; a few seconds.

    python benchmarks/jpeg_error.py

1. Each 128 px crop (centre) of the 9 colour images, and the same shrunk to 32 px with
   Pillow's bicubic, saved as a JPEG by Pillow at quality 95 (4:4:4 and 4:2:0), 90, 75 and
   50: the luma's true error (root mean square against the picture saved) over the bound
   dip.image.coding_error gives, min-max over the 9 images.
2. dip.stopping.estimate_sigma (grey levels) on clean 32 px inputs made with bicubic and
   rounded to 8 bits: the colour images' centre and corner crops, and Table 1's 11 grey
   images' centre crops.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from degradations import DATA, DENOISE, INPAINT, crop  # noqa: E402  (benchmarks/)

from dip import image  # noqa: E402
from dip.stopping import estimate_sigma  # noqa: E402

LUMA = np.array([0.299, 0.587, 0.114])


def _clean(name: str, where: str, size: int, grey: bool = False):
    folder = (DATA / "Reconstruction" / "Gray" / "50p" if grey
              else DATA / "Denoising" / "Color" / "25")
    picture = crop(image.load_image(folder / f"{name}_GT.png").pixels, where)
    small = picture if size == 128 else image.resize(picture, (size, size), "bicubic")
    return (small * 255).round().clamp(0, 255) / 255


def bound_ratios() -> None:
    print("luma's true error / coding_error's bound, min-max over the 9 colour images")
    for size in (32, 128):
        for quality, subsampling in ((95, 0), (95, 2), (90, 2), (75, 2), (50, 2)):
            ratios = []
            for name in DENOISE:
                array = (_clean(name, "centre", size)[0].permute(1, 2, 0).numpy() * 255
                         ).astype(np.uint8)
                buffer = io.BytesIO()
                Image.fromarray(array).save(buffer, "JPEG", quality=quality,
                                            subsampling=subsampling)
                buffer.seek(0)
                jpeg = Image.open(buffer)
                bound = image.coding_error(jpeg)[0] * 255
                decoded = np.asarray(jpeg.convert("RGB"), dtype=np.float64)
                true = np.sqrt((((decoded - array) @ LUMA) ** 2).mean())
                ratios.append(true / bound)
            print(f"  {size:>3} px, quality {quality}, subsampling {subsampling}: "
                  f"{min(ratios):.2f}-{max(ratios):.2f}")


def noise_read() -> None:
    print("estimate_sigma on clean 32 px inputs (grey levels), min-max")
    groups = {"colour, centre": [(n, "centre", False) for n in DENOISE],
              "colour, corner": [(n, "corner", False) for n in DENOISE],
              "grey, centre": [(n, "centre", True) for n in INPAINT]}
    for label, cases in groups.items():
        read = [estimate_sigma(_clean(n, w, 32, grey)) * 255 for n, w, grey in cases]
        print(f"  {label}: {min(read):.1f}-{max(read):.1f}")


if __name__ == "__main__":
    argparse.ArgumentParser(  # --help, and no options: it ran the benchmark
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    bound_ratios()
    noise_read()
