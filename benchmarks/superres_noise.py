"""Super-resolution of a small picture with an error of its own: does the back-projection put
the input's noise back into the result? (benchmarks/README.md, "A noisy small picture").

    .venv/bin/python benchmarks/superres_noise.py             # fits what is missing: ~50 min
    .venv/bin/python benchmarks/superres_noise.py --fits DIR  # another folder of kept fits
    .venv/bin/python benchmarks/superres_noise.py --table-only  # the committed results' table

Each 128 px crop shrunk to 32 px with Pillow's bicubic, then rounded to 8 bits: the 9 colour
images' centre and corner crops, clean and with white noise of sigma 5 per RGB channel (the
groups the residual's noise floor, ``dip.tasks.superres.MISFIT``, was chosen on); their
centre crops with sigma 2 and 10, and saved as JPEGs at quality 75, clean and with sigma 5;
Table 1's 11 grey images' centre crops, clean and with sigma 5 (never looked at before the
floor was chosen). dip's defaults fit each with ``--no-back-projection`` (one thread, two
fits at once), kept in ``--fits``; each is then scored (Y-PSNR, 4 px cropped per side) as
the network's image, back-projected exactly (dip before the residual's reading), and as dip
returns it now (:func:`dip.tasks.superres.back_projected`). Each crop's scores go to
``--results`` (benchmarks/results/superres_noise.jsonl), the table beside it (.md).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import zlib
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from degradations import CROP, crop  # noqa: E402  (benchmarks/)
from early_stopping import DATA, DENOISE, INPAINT  # noqa: E402

FITS = ROOT / "benchmarks" / "cases" / "superres_noise"
RESULTS = ROOT / "benchmarks" / "results" / "superres_noise.jsonl"
FACTOR = 4
#: (images, where, damage): sigma of noise per RGB channel, or "q75" (a JPEG at quality 75)
#: and "q75n5" (noise of 5, then the JPEG)
GROUPS = {
    "colour, clean": ("colour", ("centre", "corner"), 0),
    "colour, sigma 2": ("colour", ("centre",), 2),
    "colour, sigma 5": ("colour", ("centre", "corner"), 5),
    "colour, sigma 10": ("colour", ("centre",), 10),
    "colour, JPEG 75": ("colour", ("centre",), "q75"),
    "colour, sigma 5 then JPEG 75": ("colour", ("centre",), "q75n5"),
    "grey (held out), clean": ("grey", ("centre",), 0),
    "grey (held out), sigma 5": ("grey", ("centre",), 5),
}


def jobs() -> list[tuple[str, str, str, int | str]]:
    return [(kind, name, where, damage) for kind, wheres, damage in GROUPS.values()
            for name in (DENOISE if kind == "colour" else INPAINT) for where in wheres]


def tag(job: tuple) -> str:
    kind, name, where, damage = job
    return f"{kind}_{name}_{where}_n{damage}"


def fit(job: tuple, fits: Path) -> str:
    """dip's defaults on the job's small picture, the network's image kept with it."""
    import torch

    torch.set_num_threads(1)
    import dip
    from dip import image, operators

    kind, name, where, damage = job
    out = fits / f"{tag(job)}.pt"
    if out.exists():
        return tag(job)
    source = (DATA / "Reconstruction" / "Gray" / "50p" if kind == "grey"
              else DATA / "Denoising" / "Color" / "25")
    # cloned: torch.save keeps a view's whole image
    clean = crop(image.load_image(source / f"{name}_GT.png").pixels, where).clone()
    small = image.resize(clean, (CROP // FACTOR,) * 2, "bicubic")
    sigma = 5 if damage == "q75n5" else damage if isinstance(damage, int) else 0
    if sigma:
        g = torch.Generator().manual_seed(zlib.crc32(tag(job).encode()))
        small = operators.add_noise(small, sigma, g)
    small = (small * 255).round().clamp(0, 255) / 255
    folder = fits / tag(job)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "input.png"
    image.save_image(image.Picture(small), path)
    if isinstance(damage, str):  # Pillow's encoder, its default 4:2:0 chroma
        from PIL import Image

        path = folder / "input.jpg"
        Image.fromarray((small[0].permute(1, 2, 0) * 255).round().byte().numpy()).save(
            path, quality=75)
    r = dip.restore("superres", path, factor=FACTOR, write=False, device="cpu",
                    no_back_projection=True, overrides=("perf.threads=1",))
    picture = image.load_image(path)
    torch.save({"net": r.picture.pixels, "small": picture.pixels, "clean": clean,
                "coding": picture.coding_error, "steps": r.record["iterations"]}, out)
    return tag(job)


def score(path: Path) -> dict[str, float]:
    import torch

    from dip import metrics, operators
    from dip.stopping import estimate_sigma
    from dip.tasks.superres import _wiener_scaled, back_projected

    d = torch.load(path)
    net, small, clean, coding = d["net"], d["small"], d["clean"], d.get("coding")
    op = operators.Downsample(FACTOR, "lanczos")
    exact = operators.back_project(op, net, small)
    # dip before the residual's reading: the exact correction, a JPEG's scaled by its tables
    before = exact if coding is None else _wiener_scaled(net, exact, small - op(net), coding)
    now = back_projected(net, small, FACTOR, "lanczos", error=coding)
    return {"network": metrics.psnr_y(net, clean, FACTOR),
            "exact": metrics.psnr_y(exact.clamp(0, 1), clean, FACTOR),
            "before": metrics.psnr_y(before.clamp(0, 1), clean, FACTOR),
            "now": metrics.psnr_y(now, clean, FACTOR),
            "read": estimate_sigma(small - op(net), clipped=False) * 255}


def collect(fits: Path) -> list[dict]:
    """Each kept fit's scores, with its crop's tag and its group."""
    rows, paths = [], sorted(fits.glob("*.pt"))
    for group, (kind, wheres, damage) in GROUPS.items():
        pattern = re.compile(rf"{kind}_.*_({'|'.join(wheres)})_n{damage}\.pt$")
        for path in paths:
            if pattern.search(path.name):
                rows.append({"group": group, "crop": path.stem, **score(path)})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| group (crops) | network's image | back-projected exactly | dip before | dip now "
             "| now − before | residual reads (grey levels) |", "|---|---|---|---|---|---|---|"]
    for group in GROUPS:
        scores = [row for row in rows if row["group"] == group]
        if not scores:
            continue
        mean = {k: statistics.mean(s[k] for s in scores)
                for k in ("network", "exact", "before", "now")}
        reads = [s["read"] for s in scores]
        lines.append(f"| {group} ({len(scores)}) | {mean['network']:.2f} | {mean['exact']:.2f} "
                     f"| {mean['before']:.2f} | **{mean['now']:.2f}** "
                     f"| {mean['now'] - mean['before']:+.2f} "
                     f"| {min(reads):.1f}-{max(reads):.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fits", type=Path, default=FITS, help="where the fits are kept")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="each crop's scores (JSON lines), the table beside it (.md)")
    parser.add_argument("--table-only", action="store_true",
                        help="print the table of --results, fitting and scoring nothing")
    args = parser.parse_args()
    if args.table_only:
        if not args.results.is_file():
            sys.exit(f"{args.results} is no results file: run the script without --table-only")
        print(table([json.loads(line) for line in args.results.read_text().splitlines()]))
        return
    args.fits.mkdir(parents=True, exist_ok=True)
    todo = [job for job in jobs() if not (args.fits / f"{tag(job)}.pt").exists()]
    if todo:
        from functools import partial

        with get_context("spawn").Pool(args.workers) as pool:
            for done in pool.imap_unordered(partial(fit, fits=args.fits), todo):
                print(f"fitted {done}", file=sys.stderr, flush=True)
    rows = collect(args.fits)
    args.results.write_text("".join(json.dumps(row) + "\n" for row in rows))
    text = table(rows)
    args.results.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
