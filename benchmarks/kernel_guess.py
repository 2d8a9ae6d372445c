"""Can the small picture itself say which downscaler made it (issue 18's automatic --kernel)?

A mismatched ``--kernel`` costs dB that no prior recovers (benchmarks/README.md), so a
``--kernel auto`` would be worth having if the input told the downscaler reliably. The fit
route (the kernel whose short fit passes back through its operator closest to the input) was
right on 3 of 12 crops. This script measures the spectral route: every 128 px crop of the
paper's 9 colour images (stride 64) shrunk ×4 by Pillow's bicubic, box (area) and Lanczos
filters; the small picture's luma power spectrum (Hann window) in radial bands; the
power-law slope fitted on the three lowest bands and each higher band's departure from it,
which is where the filters differ. A classifier (nearest class mean under the pooled
covariance) is trained on eight images and tested on the ninth, for each image in turn.
A guess right on far fewer than all crops is not a default a user can rely on.

    python benchmarks/kernel_guess.py
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from early_stopping import DATA  # noqa: E402

FILTERS = {"bicubic": Image.Resampling.BICUBIC, "area": Image.Resampling.BOX,
           "lanczos": Image.Resampling.LANCZOS}
CROP, FACTOR, STRIDE = 128, 4, 64
#: radial bands of the small picture's spectrum, cycles per pixel
BANDS = [(0.08, 0.16), (0.16, 0.24), (0.24, 0.32), (0.32, 0.40), (0.40, 0.5), (0.5, 0.71)]


def features(small: Image.Image) -> np.ndarray:
    """The fitted power-law slope, and the higher bands' log-power above or below it."""
    rgb = np.asarray(small.convert("RGB"), dtype=np.float64)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    n = luma.shape[0]
    f = np.fft.fftfreq(n)
    radius = np.hypot(*np.meshgrid(f, f, indexing="ij"))
    window = np.outer(np.hanning(n), np.hanning(n))
    power = np.abs(np.fft.fft2((luma - luma.mean()) * window)) ** 2
    energy = np.log([power[(radius >= a) & (radius < b)].mean() + 1e-9 for a, b in BANDS])
    centre = np.log([(a + b) / 2 for a, b in BANDS])
    slope = np.polyfit(centre[:3], energy[:3], 1)
    return np.concatenate([[slope[0]], energy[3:] - np.polyval(slope, centre[3:])])


def samples() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, made_with, image_of = [], [], []
    for path in sorted((DATA / "Denoising" / "Color" / "25").glob("*_GT.png")):
        with Image.open(path) as img:
            picture = img.convert("RGB")
        width, height = picture.size
        for top in range(0, height - CROP + 1, STRIDE):
            for left in range(0, width - CROP + 1, STRIDE):
                crop = picture.crop((left, top, left + CROP, top + CROP))
                for name, resample in FILTERS.items():
                    rows.append(features(crop.resize((CROP // FACTOR,) * 2, resample)))
                    made_with.append(name)
                    image_of.append(path.name.removesuffix("_GT.png"))
    return np.array(rows), np.array(made_with), np.array(image_of)


def main() -> None:
    argparse.ArgumentParser(  # --help, and no options: it ran the benchmark
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    x, made_with, image_of = samples()
    confusion: Counter = Counter()
    print("| held-out image | crops | right |\n|---|---|---|")
    for held in sorted(set(image_of)):
        train, test = image_of != held, image_of == held
        z = (x - x[train].mean(0)) / x[train].std(0)
        means = {k: z[train & (made_with == k)].mean(0) for k in FILTERS}
        pooled = sum(np.cov(z[train & (made_with == k)].T) for k in FILTERS) / len(FILTERS)
        inverse = np.linalg.inv(pooled)
        right = 0
        for i in np.flatnonzero(test):
            guess = min(means, key=lambda k: (z[i] - means[k]) @ inverse @ (z[i] - means[k]))
            confusion[made_with[i], guess] += 1
            right += guess == made_with[i]
        print(f"| {held} | {test.sum()} | {right / test.sum():.0%} |")
    total = sum(confusion.values())
    print(f"\nall: {sum(n for (a, b), n in confusion.items() if a == b) / total:.0%} right of "
          f"{total} (chance {1 / len(FILTERS):.0%})\n")
    print("| made with \\ guessed | " + " | ".join(FILTERS) + " |\n|---|---|---|---|")
    for made in FILTERS:
        print(f"| {made} | " + " | ".join(str(confusion[made, g]) for g in FILTERS) + " |")


if __name__ == "__main__":
    main()
