"""How often the divergence guard fires, and whether the fit recovers, when the learning rate
is pushed past what the defaults use.

    python benchmarks/guard.py                      # lr x1, x5, x15 on the 9 centre crops
    python benchmarks/guard.py --rates 1,5,15 --size 64 --iters 300

Each of the paper's 9 sigma=25 colour denoising images, a centre crop of ``--size`` px, is
denoised with dip's CPU defaults but the learning rate (the fast preset's 0.02 times each
factor), ``--iters`` steps with the fixed stop, in this process, one after another. Per rate:
how many fits the guard restored at least once, the restores in all, how many fits ended
with "did not recover" (the guard halves the rate on each consecutive restore, 20 at most),
and the mean PSNR of those that finished. The guard's record over the real benchmark runs
(where it never fired) is in benchmarks/README.md, "guard.py".

Results: benchmarks/results/guard_crop64.json (a rate measured again replaces its row).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from early_stopping import DATA, DENOISE  # noqa: E402

FAST_LR = 0.02  # configs/fast/denoise.yaml


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="1,5,15", help="factors on the default rate")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--out", type=Path, help="results file, merged with what it holds "
                                                 "[default: benchmarks/results/"
                                                 "guard_crop{size}.json]")
    args = parser.parse_args(argv)

    from dip import image, metrics, run
    from dip.errors import RunError

    base = DATA / "Denoising" / "Color" / "25"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        crops = {}
        for name in DENOISE:
            noisy = image.load_image(base / f"{name}_noisy.png").pixels
            clean = image.load_image(base / f"{name}_GT.png").pixels
            h, w = noisy.shape[-2:]
            top, left = (h - args.size) // 2, (w - args.size) // 2
            window = (..., slice(top, top + args.size), slice(left, left + args.size))
            path = Path(tmp) / f"{name}.png"
            image.save_image(image.Picture(noisy[window]), path)
            crops[name] = (path, clean[window])
        for factor in (float(f) for f in args.rates.split(",")):
            lr = FAST_LR * factor
            fired = restores = failed = 0
            psnrs = []
            for name, (path, clean) in crops.items():
                try:
                    r = run.restore("denoise", path, write=False, device="cpu",
                                    iters=args.iters, stop="fixed",
                                    overrides=[f"optim.lr={lr}"])
                except RunError as exc:
                    failed += 1
                    print(f"  {name} lr {lr:g}: {exc}", flush=True)
                    continue
                n = len(r.record["guard_restores"])
                fired += n > 0
                restores += n
                psnrs.append(metrics.psnr(r.picture.pixels, clean))
            row = {"lr": lr, "factor": factor, "fits": len(crops), "guard_fired": fired,
                   "restores": restores, "did_not_recover": failed, "size": args.size,
                   "iters": args.iters,
                   "mean_psnr": round(statistics.fmean(psnrs), 2) if psnrs else None}
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = args.out or ROOT / "benchmarks" / "results" / f"guard_crop{args.size}.json"
    # merged with the rates measured before (a rate measured again is replaced)
    kept = [r for r in (json.loads(out.read_text()) if out.exists() else [])
            if (r["lr"], r["iters"], r["size"]) not in {(n["lr"], n["iters"], n["size"])
                                                        for n in rows}]
    rows = sorted(kept + rows, key=lambda r: (r["size"], r["iters"], r["lr"]))
    out.write_text(json.dumps(rows, indent=1) + "\n")
    print("\n| learning rate | fits | guard fired in | restores | did not recover | "
          "mean PSNR of the rest |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['lr']:g} (×{r['factor']:g}) | {r['fits']} | {r['guard_fired']} | "
              f"{r['restores']} | {r['did_not_recover']} | {r['mean_psnr']} |")


if __name__ == "__main__":
    main()
