"""Does the super-resolution operator's border convention cost dB (issue 18)?

dip's ``Downsample`` pads by replication before its strided convolution (the paper's
``preserve_size``); Pillow's resize, which made the benchmark's small inputs and most small
pictures, drops the kernel's taps outside the picture and renormalises the rest. Near the
border the two disagree, the fit is held to the wrong image there, and the back-projection
(dip's last step) writes that disagreement into the result. This script measures both
without a fit (seconds): every 128 px centre and corner crop of the paper's 9 colour images
shrunk x4 by Pillow's bicubic, box and Lanczos filters and rounded to 8 bits; the operator's
misfit ``A x - y`` on the clean crop in the small picture's outer two rows and columns and
inside them; and the Y-PSNR (4 px border) of Pillow's Lanczos upscaling back-projected
through each operator, as dip back-projects its network's image.

    python benchmarks/sr_border.py
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from early_stopping import DATA, DENOISE  # noqa: E402

from dip import image, metrics, operators  # noqa: E402

CROP, FACTOR, RING = 128, 4, 2
#: Pillow's filter that made the input -> dip's --kernel that matches it
MADE_WITH = {"bicubic": "bicubic", "box": "area", "lanczos": "lanczos3"}


class Renormalised(operators.Downsample):
    """Pillow's convention: the taps outside the picture dropped, the others renormalised."""

    def _norm(self, size: tuple[int, int]) -> torch.Tensor:
        ones = F.pad(torch.ones(1, 1, *size), (self.pad,) * 4)
        return F.conv2d(ones, self.kernel, stride=self.factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        z = F.conv2d(F.pad(x, (self.pad,) * 4), self.kernel.expand(c, 1, -1, -1),
                     stride=self.factor, groups=c)
        return z / self._norm(x.shape[-2:])

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        c, p = y.shape[1], self.pad
        n = self._norm((y.shape[-2] * self.factor, y.shape[-1] * self.factor))
        g = F.conv_transpose2d(y / n, self.kernel.expand(c, 1, -1, -1), stride=self.factor,
                               groups=c)
        return g[..., p:-p, p:-p] if p else g


def crops() -> list[torch.Tensor]:
    out = []
    for name in DENOISE:
        t = image.load_image(DATA / "Denoising" / "Color" / "25" / f"{name}_GT.png").pixels
        h, w = t.shape[-2:]
        for top, left in (((h - CROP) // 2, (w - CROP) // 2), (0, 0)):
            out.append(t[..., top:top + CROP, left:left + CROP])
    return out


def misfit(op: operators.Downsample, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Root-mean-square misfit (grey levels) in the outer RING rows and columns, and inside."""
    e = (op(x) - y) ** 2
    inner = e[..., RING:-RING, RING:-RING]
    ring = (e.sum() - inner.sum()) / (e.numel() - inner.numel())
    return float(ring.sqrt()) * 255, float(inner.mean().sqrt()) * 255


def main() -> None:
    pictures = crops()
    print(f"{len(pictures)} crops of {CROP} px, x{FACTOR}; misfit in grey levels (outer "
          f"{RING} rows / inside); Y-PSNR of Lanczos upscaling back-projected\n")
    print("| made with | dip's kernel | misfit, replicate | misfit, renormalised | Lanczos "
          "upscaling | back-projected, replicate | renormalised | renormalised - replicate, "
          "per crop |")
    print("|---|---|---|---|---|---|---|---|")
    for made, matched in MADE_WITH.items():
        for kernel in ("lanczos", matched):
            rows = []
            for x in pictures:
                y = (image.resize(x, (CROP // FACTOR,) * 2, made) * 255).round() / 255
                up = image.resize(y, (CROP,) * 2, "lanczos").clamp(0, 1)
                row = {"up": metrics.psnr_y(up, x, FACTOR)}
                for label, op in (("rep", operators.Downsample(FACTOR, kernel)),
                                  ("ren", Renormalised(FACTOR, kernel))):
                    back = operators.back_project(op, up, y).clamp(0, 1)
                    row[label] = (*misfit(op, x, y), metrics.psnr_y(back, x, FACTOR))
                rows.append(row)

            def mean(key: str, i: int) -> float:
                return statistics.mean(r[key][i] for r in rows)

            gain = [r["ren"][2] - r["rep"][2] for r in rows]
            print(f"| {made} | {kernel} | {mean('rep', 0):.2f} / {mean('rep', 1):.2f} | "
                  f"{mean('ren', 0):.2f} / {mean('ren', 1):.2f} | "
                  f"{statistics.mean(r['up'] for r in rows):.2f} | {mean('rep', 2):.3f} | "
                  f"{mean('ren', 2):.3f} | {min(gain):+.3f} to {max(gain):+.3f} |")


if __name__ == "__main__":
    main()
