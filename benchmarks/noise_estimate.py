"""How well does dip read the noise level of a small picture (``dip.stopping.estimate_sigma``)?

The level read sets the denoising stop's floor, its step budget, SURE's sigma and the Wiener
filter's. 8x8 patches of a small colour picture are few for their 192 dimensions: the noise
eigenvalues spread and the tail's mean falls under sigma^2. This script adds Gaussian noise
(seeded, clipped, 8-bit) to the centre and top-left crops of the paper's 9 colour images
(and their grey versions) at several sizes and levels, and prints the level read over the
true one: the estimator as it is, and with 8x8 patches at every size (as it was before the
patch side shrank for small pictures). torch only; a few minutes on 2 cores.

    python benchmarks/noise_estimate.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from early_stopping import DATA  # noqa: E402

from dip import image, stopping  # noqa: E402

SIDES, LEVELS = (32, 48, 64, 96, 128), (5, 15, 25, 50)


def crops(side: int, grey: bool) -> list[torch.Tensor]:
    out = []
    for path in sorted((DATA / "Denoising" / "Color" / "25").glob("*_GT.png")):
        x = image.load_image(path).pixels
        x = x.mean(1, keepdim=True) if grey else x
        h, w = x.shape[-2:]
        for top, left in ((h // 2 - side // 2, w // 2 - side // 2), (0, 0)):
            out.append(x[..., top:top + side, left:left + side])
    return out


def noisy(clean: torch.Tensor, sigma: float, g: torch.Generator) -> torch.Tensor:
    y = (clean + sigma / 255 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    return (y * 255).round() / 255


def read(y: torch.Tensor, fixed_patch: bool) -> float:
    if not fixed_patch:
        return stopping.estimate_sigma(y) * 255
    with mock.patch.object(stopping, "PATCHES_PER_DIMENSION", 0):  # 0: 8x8 at every size
        return stopping.estimate_sigma(y) * 255


def table() -> None:
    print("| picture | side | " + " | ".join(f"σ = {s}: 8×8 / now" for s in LEVELS) + " |")
    print("|---|---|" + "---|" * len(LEVELS))
    for grey in (False, True):
        for side in SIDES:
            cells, clean = [], crops(side, grey)
            for sigma in LEVELS:
                g = torch.Generator().manual_seed(sigma)
                ys = [noisy(c, sigma, g) for c in clean]
                before = statistics.mean(read(y, True) / sigma for y in ys)
                now = statistics.mean(read(y, False) / sigma for y in ys)
                cells.append(f"{before:.2f} / **{now:.2f}**")
            print(f"| {'grey' if grey else 'colour'} | {side} | " + " | ".join(cells) + " |")


def main() -> None:
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    if not os.environ.get("OMP_NUM_THREADS"):  # as the dip command: a pinned count holds
        torch.set_num_threads(2)
    table()


if __name__ == "__main__":
    main()
