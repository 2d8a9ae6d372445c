"""Tiles against the whole image: do tiles cost quality, and are their seams visible? And is
the estimate printed before a run right?

    python benchmarks/tiles.py --images F16,baboon           # full size, --tile 128 vs whole
    python benchmarks/tiles.py --table
    python benchmarks/tiles.py large --size 4000x3000 --iters 8   # a 12 MP photo, some steps
    python benchmarks/tiles.py large --size 1024x768 --iters 100  # the estimate, to the end
    python benchmarks/tiles.py large --size 1024x768 --iters 0    # the defaults: auto stop

Each of the paper's sigma=25 colour denoising images is denoised at full size with dip's
defaults twice, one run after the other in a fresh process (nothing else running): whole
(``--tile off``) and in tiles of 128 px (``--tile 128``, 32 px overlaps), same seed, no clean
image used. Printed per image: PSNR of each; for the tiled result, the PSNR of a 16 px band
centred on every seam (the middle of each overlap between neighbouring tiles) and of the rest
(the interior), and the same two regions of the whole fit (the regions' own content makes
their PSNRs differ; what tiles add is the difference of the two differences); the seconds each
run took and the seconds its own estimate said before the first step.

``large`` makes a photo of the asked size (kodim01's clean image, cropped to the size's
aspect, resized with Lanczos, Gaussian noise of sigma 25 seeded), and runs the real command
on it, ``dip denoise big.png --iters N --stop fixed`` with every other setting its default
(``--preset`` to choose one), in a fresh process: its peak RSS (and, on CUDA, its record's
peak GPU memory), its wall time, and the estimate it printed before the first step
(``--stop fixed`` so that the run takes the steps the estimate counts: with the automatic
stop the estimate is an upper bound). With ``--iters`` the estimate of the defaults' whole
run (``optim.iters`` at the preset's budget) comes from the same measured rate.

Results: benchmarks/results/tiles_full.jsonl and tiles_large.jsonl (a re-run of collect
skips what is there).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from early_stopping import DATA, DENOISE  # noqa: E402
from paper import commit_id  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "tiles_full.jsonl"
LARGE = ROOT / "benchmarks" / "results" / "tiles_large.jsonl"
BAND = 16


def seam_band(tiles, size: tuple[int, int]):
    """True within BAND/2 pixels of the middle of an overlap between neighbouring tiles."""
    import torch

    band = torch.zeros(size, dtype=torch.bool)
    half = BAND // 2
    for t in tiles:
        above, below, left, right = t.ramps
        if below:
            mid = t.top + t.height - below // 2
            band[max(0, mid - half):mid + half, t.left:t.left + t.width] = True
        if right:
            mid = t.left + t.width - right // 2
            band[t.top:t.top + t.height, max(0, mid - half):mid + half] = True
    return band


def _psnr_where(x, ref, where) -> float:
    import math

    mse = ((x - ref) ** 2).mean(1)[0][where].mean().item()
    return 10 * math.log10(1 / mse)


def run_one(job: dict) -> dict:
    import time

    from dip import image, metrics, run
    from dip.tiles import grid, overlap_for

    base = DATA / "Denoising" / "Color" / "25"
    clean = image.load_image(base / f"{job['image']}_GT.png").pixels
    started = time.perf_counter()
    r = run.restore("denoise", base / f"{job['image']}_noisy.png", write=False, device="cpu",
                    tile=job["tile"])
    seconds = time.perf_counter() - started
    size = tuple(clean.shape[-2:])
    side = 128  # the band and interior of the tiled run's tiles, for both runs
    band = seam_band(grid(size, side, overlap_for(side, 32)), size)
    out = r.picture.pixels
    return {**job, "psnr": round(metrics.psnr(out, clean), 4),
            "band_psnr": round(_psnr_where(out, clean, band), 4),
            "interior_psnr": round(_psnr_where(out, clean, ~band), 4),
            "seconds": round(seconds, 1), "estimate_seconds": r.record["estimate"]["seconds"],
            "estimate_peak_gb": r.record["estimate"]["peak_gb"],
            "steps": [m.iterations for m in r.members if hasattr(m, "iterations")],
            "guard_restores": sum(len(m.history.get("restores", [])) for m in r.members
                                  if hasattr(m, "history")),
            "tiles": r.record.get("tiles", {}).get("count", 0)}


def collect(args: argparse.Namespace) -> None:
    done = set()
    if RESULTS.exists():
        done = {(r["image"], r["tile"]) for r in map(json.loads, RESULTS.read_text().splitlines())}
    for name in (args.images.split(",") if args.images else DENOISE):
        for tile in ("off", "128"):
            if (name, tile) in done:
                continue
            job = {"image": name, "tile": tile, "commit": commit_id()}
            out = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, __file__, "one",
                                  json.dumps(job)], capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["peak_rss_gb"] = round(int(out.stderr.strip().splitlines()[-1]) / 2 ** 20, 2)
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            with RESULTS.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


def table() -> None:
    rows = {(r["image"], r["tile"]): r for r in map(json.loads, RESULTS.read_text().splitlines())}
    names = [n for n in DENOISE if (n, "off") in rows and (n, "128") in rows]
    print("| image | whole | tiles of 128 | tiles − whole | band / interior, tiles | "
          "band / interior, whole | seam effect | seconds whole / tiles | estimated |")
    print("|---|---|---|---|---|---|---|---|---|")
    effects = []
    for n in names:
        w, t = rows[(n, "off")], rows[(n, "128")]
        effect = (t["band_psnr"] - t["interior_psnr"]) - (w["band_psnr"] - w["interior_psnr"])
        effects.append(effect)
        print(f"| {n} | {w['psnr']:.2f} | {t['psnr']:.2f} | {t['psnr'] - w['psnr']:+.2f} | "
              f"{t['band_psnr']:.2f} / {t['interior_psnr']:.2f} | "
              f"{w['band_psnr']:.2f} / {w['interior_psnr']:.2f} | {effect:+.2f} | "
              f"{w['seconds']:.0f} / {t['seconds']:.0f} | "
              f"{w['estimate_seconds']:.0f} / {t['estimate_seconds']:.0f} |")
    if names:
        diff = statistics.fmean(rows[(n, "128")]["psnr"] - rows[(n, "off")]["psnr"]
                                for n in names)
        print(f"\nmean tiles − whole {diff:+.2f} dB, mean seam effect "
              f"{statistics.fmean(effects):+.2f} dB over {len(names)} image(s)")


def large(args: argparse.Namespace) -> None:
    import resource
    import tempfile
    import time

    import numpy as np
    from PIL import Image

    from dip.config import resolve

    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        clean = Image.open(DATA / "Denoising" / "Color" / "25" / "kodim01_GT.png").convert("RGB")
        w, h = clean.size
        if w / h > width / height:  # crop to the asked aspect, then resize
            cw = round(h * width / height)
            clean = clean.crop(((w - cw) // 2, 0, (w - cw) // 2 + cw, h))
        else:
            ch = round(w * height / width)
            clean = clean.crop((0, (h - ch) // 2, w, (h - ch) // 2 + ch))
        pixels = np.asarray(clean.resize((width, height), Image.LANCZOS), dtype=np.float32)
        noise = np.random.default_rng(0).normal(0, 25, pixels.shape).astype(np.float32)
        noisy = Path(tmp) / "big.png"
        Image.fromarray(np.clip(pixels + noise, 0, 255).round().astype(np.uint8)).save(noisy)
        started = time.perf_counter()
        steps = ["--iters", str(args.iters), "--stop", "fixed"] if args.iters else []
        preset = ["--preset", args.preset] if args.preset else []
        preset += [arg for value in args.set or () for arg in ("--set", value)]
        out = subprocess.run([sys.executable, "-m", "dip.cli", "denoise", str(noisy), "-o",
                              str(Path(tmp) / "out.png"), *steps, *preset],
                             capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if out.returncode != 0:
            sys.exit(f"dip failed ({out.returncode}):\n{out.stderr}")
        record = json.loads((Path(tmp) / "out.png.json").read_text())
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    said = next((line for line in out.stderr.splitlines() if line.startswith("dip: about")),
                None)
    estimate = record["estimate"]
    row = {"size": args.size, "iters": args.iters or "defaults", "commit": commit_id(),
           "preset": record["config"]["preset"], "device": record["device"],
           "perf": record["perf"], "set": args.set or [],
           "steps": record["iterations"], "stop_reason": record["stop_reason"],
           "tiles": record.get("tiles", {}), "said": said, "summary": out.stdout.strip(),
           "estimate_seconds": estimate["seconds"], "estimate_peak_gb": estimate["peak_gb"],
           "seconds": round(seconds, 1), "record_seconds": record["seconds"],
           "estimate_over_real": round(estimate["seconds"] / seconds, 3),
           "peak_rss_gb": round(rss / 2 ** 20, 2), "cuda_peak_gb": record.get("cuda_peak_gb")}
    if args.iters:  # the whole run at the preset's budget, at the rate this run measured
        budget = resolve("denoise", overrides=[f"preset={record['config']['preset']}"]
                         ).optim.iters
        # dip's own estimate for the budget, and this run's time scaled to it (an upper
        # bound: the run's fixed costs -- reading, calibrating, captures -- scale too)
        row["defaults_budget"] = budget
        row["defaults_hours_by_estimate"] = round(
            estimate["seconds"] * budget / args.iters / 3600, 2)
        row["defaults_hours_by_this_run"] = round(
            record["seconds"] * budget / args.iters / 3600, 2)
    out_file = args.results or LARGE
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with out_file.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", default="collect",
                        choices=("collect", "one", "large"))
    parser.add_argument("job", nargs="?")
    parser.add_argument("--size", default="4000x3000", help="large: WIDTHxHEIGHT")
    parser.add_argument("--iters", type=int, default=8,
                        help="large: steps of each fit (0: the defaults, automatic stop)")
    parser.add_argument("--preset", help="large: dip's --preset (default: the device's)")
    parser.add_argument("--set", action="append", help="large: a dip --set KEY=VALUE")
    parser.add_argument("--results", type=Path, help="large: results file [default: "
                                                     "results/tiles_large.jsonl]")
    parser.add_argument("--images")
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args(argv)
    if args.what == "one":
        print(json.dumps(run_one(json.loads(args.job))))
        return
    if args.what == "large":
        large(args)
        return
    if not args.table:
        collect(args)
    table()


if __name__ == "__main__":
    main()
