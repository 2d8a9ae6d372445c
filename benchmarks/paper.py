"""Deep Image Prior's three tables (Ulyanov et al., CVPR 2018) with dip's defaults, beside the
paper's numbers and the classical tools a user would pick instead.

    pip install -e '.[bench]'                            # bm3d, scikit-image, OpenCV
    python benchmarks/paper.py --quick --workers 2 --threads 1   # CPU: 128x128 crops, ~25 min
    python benchmarks/paper.py --device cuda --workers 6 # full size, the paper's protocol
    python benchmarks/paper.py --table-only --results A.jsonl --results B.jsonl

dip runs as a user runs it: default settings for the device (``preset: auto`` = the paper's
network on a GPU, the fast preset on a CPU), automatic stopping, and the clean image is only
used to score the image dip returns. The data is ../shared/data/dip-paper (its MANIFEST.md):

  denoise   the 9 colour images of the sigma=25 table, the given *_noisy.png inputs; RGB PSNR
  inpaint   the 11 grey images of Table 1, 50% of pixels dropped with a fixed seed per image
            (from the image's name), PSNR over the whole image
  superres  Set5 and Set14 x4: the ground truth centre-cropped to a multiple of 32 and shrunk
            with Lanczos, as the paper's notebook; Y-channel PSNR with 4 pixels cropped per side
            (--quick: Set5 only, to stay under 30 minutes on a 2-core CPU; --sets adds Set14)

Every result is one JSON line in the results file (``--results``; a re-run skips what is
there, so a long run can be stopped and resumed, and files from several machines merge). The
cases (inputs, masks, references) are written once under ``benchmarks/cases/`` and can be
carried to a machine without the data. Classical tools run on the CPU wherever they run.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
import os
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from early_stopping import DATA, DENOISE, INPAINT, SET5  # noqa: E402  (benchmarks/)
from presets import append_runs  # noqa: E402

CASES = ROOT / "benchmarks" / "cases"
RESULTS = ROOT / "benchmarks" / "results"
QUICK_CROP = 128
SIGMA = 25 / 255

SETS = {  # task -> image set -> names
    "denoise": {"color9": DENOISE},
    "inpaint": {"table1": INPAINT},
    "superres": {"Set5": SET5,
                 "Set14": ["baboon", "barbara", "bridge", "coastguard", "comic", "face",
                           "flowers", "foreman", "lenna", "man", "monarch", "pepper", "ppt3",
                           "zebra"]},
}
TITLES = {
    ("denoise", "color9"): "Denoising, sigma=25, the 9 colour images (RGB PSNR, dB)",
    ("inpaint", "table1"): "Inpainting, 50% of pixels missing, Table 1's 11 grey images "
                           "(PSNR, dB)",
    ("superres", "Set5"): "Super-resolution x4, Set5 (Y-channel PSNR, dB)",
    ("superres", "Set14"): "Super-resolution x4, Set14 (Y-channel PSNR, dB)",
}
# The paper's own figures (CVPR 2018: Sec. 4, Table 1, Table 2), quoted for comparison.
PAPER = {
    ("denoise", "color9"): {"DIP, one run": 30.43, "DIP, two runs averaged": 31.00,
                            "CBM3D (quoted by the paper)": 31.42},
    ("inpaint", "table1"): {"DIP": 33.48, "Papyan et al.": 31.19},
    ("superres", "Set5"): {"DIP": 29.90, "bicubic": 28.43},
    ("superres", "Set14"): {"DIP": 27.00, "bicubic": 26.05},
}
PAPER_INPAINT = {"barbara": 32.22, "boat": 33.06, "house": 39.16, "Lena512": 36.16,
                 "peppers256": 33.05, "Cameraman256": 29.8, "couple": 32.52,
                 "fingerprint": 32.84, "hill": 32.77, "man": 32.20, "montage": 34.54}


# --- the cases ---------------------------------------------------------------------------------

def centre_crop(t, h: int, w: int):
    """The centre ``h x w`` of ``(1, C, H, W)``."""
    top, left = (t.shape[-2] - h) // 2, (t.shape[-1] - w) // 2
    return t[..., top:top + h, left:left + w]


def make_case(task: str, group: str, name: str, crop: int, folder: Path) -> None:
    """Write ``input.png``, ``reference.png`` (and ``mask.png``, white = missing) for one image,
    from the full image (``crop`` 0) or its centre ``crop x crop``."""
    import torch

    from dip import image, operators

    def cropped(t):
        h, w = t.shape[-2:]
        return centre_crop(t, min(crop, h), min(crop, w)) if crop else t

    folder.mkdir(parents=True, exist_ok=True)
    if task == "denoise":
        base = DATA / "Denoising" / "Color" / "25"
        noisy = cropped(image.load_image(base / f"{name}_noisy.png").pixels)
        clean = cropped(image.load_image(base / f"{name}_GT.png").pixels)
        image.save_image(image.Picture(noisy), folder / "input.png")
    elif task == "inpaint":
        clean = cropped(image.load_image(
            DATA / "Reconstruction" / "Gray" / "50p" / f"{name}_GT.png").pixels)
        # A fixed seed per image, from its name: the same mask in every run and every order.
        g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        holes, known = operators.drop_pixels(clean, 0.5, g)
        image.save_image(image.Picture(holes), folder / "input.png")
        image.save_image(image.Picture(1 - known), folder / "mask.png")
    else:
        clean = cropped(image.load_image(DATA / "SR" / group / "x4" / f"{name}_GT.png").pixels)
        # The paper's notebook: centre crop to a multiple of 32, then Lanczos down by 4.
        h, w = (s - s % 32 for s in clean.shape[-2:])
        clean = centre_crop(clean, h, w)
        small = image.resize(clean, (h // 4, w // 4), "lanczos")
        image.save_image(image.Picture(small), folder / "input.png")
    image.save_image(image.Picture(clean), folder / "reference.png")


def case_folder(cases: Path, crop: int, task: str, group: str, name: str) -> Path:
    return cases / (f"crop{crop}" if crop else "full") / f"{task}_{group}_{name}"


def prepare(cases: Path, crop: int, tasks: list[str]) -> None:
    """Make every case that is not there yet (a machine without the data needs them all)."""
    for task in tasks:
        for group, names in SETS[task].items():
            for name in names:
                folder = case_folder(cases, crop, task, group, name)
                if not (folder / "reference.png").exists():
                    if not DATA.exists():
                        sys.exit(f"no case {folder} and no data at {DATA}")
                    make_case(task, group, name, crop, folder)


# --- the methods -------------------------------------------------------------------------------

def score(task: str, estimate, reference) -> float:
    from dip import metrics

    if task == "superres":
        return metrics.psnr_y(estimate.clamp(0, 1), reference, 4)
    return metrics.psnr(estimate.clamp(0, 1), reference)


def _numpy(t):
    """``(1, C, H, W)`` -> ``(H, W, C)`` or ``(H, W)`` float64 array."""
    a = t[0].permute(1, 2, 0).double().numpy()
    return a[..., 0] if a.shape[-1] == 1 else a


def _tensor(a):
    import torch

    t = torch.from_numpy(a.astype("float32").copy())
    return (t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]).clamp(0, 1)


def needs(module: str):
    """Mark a classical tool as needing ``module``, of the optional extra (``pip install -e
    '.[bench]'``): :func:`runnable` leaves the tool out, in one line, where it is missing."""
    def mark(fn):
        fn.needs = module
        return fn
    return mark


def runnable(tools: dict) -> dict:
    """``tools`` (name -> function) less those whose module is not installed, each one left
    out said on stderr (each of their images was an error row: exit 0, a column missing)."""
    kept = {}
    for name, fn in tools.items():
        module = getattr(fn, "needs", None)
        if module and importlib.util.find_spec(module) is None:
            LEFT_OUT.add(name)
            print(f"{name}: left out, no module {module} (pip install -e '.[bench]')",
                  file=sys.stderr)
        else:
            kept[name] = fn
    return kept


#: the classical tools :func:`runnable` left out: the run's exit status is 1
LEFT_OUT: set[str] = set()


@needs("bm3d")
def cbm3d(noisy, mask):
    import bm3d

    a = _numpy(noisy)
    out = bm3d.bm3d_rgb(a, SIGMA) if a.ndim == 3 else bm3d.bm3d(a, SIGMA)
    return _tensor(out)


@needs("skimage")
def nl_means(noisy, mask):
    from skimage.restoration import denoise_nl_means

    # scikit-image's documented settings for a known sigma (its NL-means example).
    a = _numpy(noisy)
    return _tensor(denoise_nl_means(a, h=0.8 * SIGMA, sigma=SIGMA, fast_mode=True,
                                    patch_size=5, patch_distance=6,
                                    channel_axis=-1 if a.ndim == 3 else None))


@needs("skimage")
def biharmonic(holes, mask):
    from skimage.restoration import inpaint_biharmonic

    a = _numpy(holes)
    return _tensor(inpaint_biharmonic(a, _numpy(mask) > 0.5,
                                      channel_axis=-1 if a.ndim == 3 else None))


@needs("cv2")
def navier_stokes(holes, mask):
    import cv2
    import numpy as np

    a = np.round(_numpy(holes) * 255).astype(np.uint8)
    m = (_numpy(mask) > 0.5).astype(np.uint8)
    return _tensor(cv2.inpaint(a, m, 3, cv2.INPAINT_NS) / 255.0)


def _upscale(method: str):
    def up(small, mask):
        from dip import image

        h, w = small.shape[-2:]
        return image.resize(small, (4 * h, 4 * w), method)
    return up


# task -> method -> function(input (1, C, H, W), mask or None) -> estimate
CLASSICAL = {
    "denoise": {"CBM3D (bm3d)": cbm3d, "NL-means (scikit-image)": nl_means},
    "inpaint": {"biharmonic (scikit-image)": biharmonic,
                "Navier-Stokes (OpenCV)": navier_stokes},
    "superres": {"bicubic (Pillow)": _upscale("bicubic"), "Lanczos (Pillow)": _upscale("lanczos")},
}
DIP = "dip (defaults)"
PUBLISHED = "published DIP images"


def published(task: str, group: str, name: str) -> float | None:
    """PSNR of the paper's own output image (full size only), by the MANIFEST's protocol."""
    from dip import image, metrics

    if task == "denoise":
        base = DATA / "Denoising" / "Color" / "25"
    elif task == "inpaint":
        base = DATA / "Reconstruction" / "Gray" / "50p"
    else:
        base = DATA / "SR" / group / "x4"
    out_path, ref_path = base / f"{name}_deep_prior.png", base / f"{name}_GT.png"
    if not out_path.exists():
        return None
    out, ref = image.load_image(out_path), image.load_image(ref_path).pixels
    if task != "superres":
        return metrics.psnr(out.pixels, ref)
    # The SR outputs are a centre crop zero-padded to the ground truth's size (alpha is
    # opaque everywhere): score inside the non-zero part, as the MANIFEST's check does.
    lit = out.pixels[0].amax(0) > 0
    rows, cols = lit.amax(1).nonzero(), lit.amax(0).nonzero()
    box = (..., slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
    return metrics.psnr_y(out.pixels[box], ref[box], 4)


def crop_name(job: dict) -> str:
    return f"{'full' if not job['crop'] else 'crop' + str(job['crop'])}_{job['task']}_" \
           f"{job['set']}_{job['image']}"


def run_job(job: dict) -> dict:
    """One method on one image; returns the result row (an ``error`` row if it failed)."""
    import torch

    torch.set_num_threads(job.pop("threads"))
    from dip import image

    folder = Path(job.pop("folder"))
    records = job.pop("records", None)
    task = job["task"]
    ref = image.load_image(folder / "reference.png").pixels
    mask_file = folder / "mask.png" if task == "inpaint" else None
    started = time.perf_counter()
    try:
        if job["method"] == DIP:
            import dip

            r = dip.restore(task, folder / "input.png", mask=mask_file,
                            factor=4 if task == "superres" else None, reference=folder /
                            "reference.png", write=False, device=job.pop("device"))
            rec = r.record
            if records:
                Path(records).mkdir(parents=True, exist_ok=True)
                (Path(records) / f"{crop_name(job)}.json").write_text(json.dumps(rec))
            job.update(psnr=score(task, r.picture.pixels, ref), device=rec["device"],
                       preset=rec["preset"], perf=rec["perf"], steps=rec["iterations"],
                       returned_step=rec["returned_iteration"], stop=rec["stop_reason"],
                       peak=rec["metrics"].get("peak_psnr"),
                       guard_restores=len(rec["guard_restores"]))
        elif job["method"] == PUBLISHED:
            job.update(psnr=published(task, job["set"], job["image"]), device="-")
        else:
            job.pop("device")
            small = image.load_image(folder / "input.png").pixels
            mask = image.load_image(mask_file).pixels if mask_file else None
            out = CLASSICAL[task][job["method"]](small, mask)
            job.update(psnr=score(task, out, ref), device="cpu")
    except Exception as exc:  # a failed image is a row, not the end of the benchmark
        job.update(error=f"{type(exc).__name__}: {exc}")
    job["seconds"] = round(time.perf_counter() - started, 2)
    if job.get("psnr") is not None:
        job["psnr"] = round(job["psnr"], 4)
    return job


# --- the tables --------------------------------------------------------------------------------

def _key(row: dict) -> tuple:
    return row["crop"], row["task"], row["set"], row["image"], row["method"]


def tables(rows: list[dict]) -> str:
    """Markdown: one table per image set, images down, methods across; then the targets."""
    out = []
    by_key = {_key(r): r for r in rows if "error" not in r and r.get("psnr") is not None}
    for crop in sorted({r["crop"] for r in rows}):
        note = (f"centre crops {crop}x{crop} on the CPU defaults: NOT the paper's protocol "
                f"(a crop has less context and the fast preset is not the paper's network)"
                if crop else "full size, the paper's protocol")
        out.append(f"# dip against the paper and the classical tools: {note}\n")
        rs = [r for r in rows if r["crop"] == crop]
        out.append("commit " + ", ".join(sorted({r.get("commit", "?") for r in rs})) +
                   "; dip on " + ", ".join(sorted({r["device"] for r in rs
                                                   if r["method"] == DIP and "device" in r})))
        targets = []
        for (task, group), title in TITLES.items():
            names = SETS[task][group]
            methods = [m for m in [DIP, *CLASSICAL[task], PUBLISHED]
                       if any((crop, task, group, n, m) in by_key for n in names)]
            if not methods:
                continue
            out.append(f"\n## {title}\n")
            out.append("| image | " + " | ".join(methods) + " |" +
                       (" paper's DIP |" if task == "inpaint" else ""))
            out.append("|---" * (len(methods) + 1 + (task == "inpaint")) + "|")
            means = {}
            for name in names:
                cells = [f"{by_key[(crop, task, group, name, m)]['psnr']:.2f}"
                         if (crop, task, group, name, m) in by_key else "–" for m in methods]
                extra = [f"{PAPER_INPAINT[name]:.2f}"] if task == "inpaint" else []
                out.append(f"| {name} | " + " | ".join(cells + extra) + " |")
            for m in methods:
                got = [by_key[(crop, task, group, n, m)] for n in names
                       if (crop, task, group, n, m) in by_key]
                means[m] = (statistics.fmean(r["psnr"] for r in got), len(got),
                            statistics.fmean(r["seconds"] for r in got))
            out.append("| **mean** | " + " | ".join(
                f"**{means[m][0]:.2f}**" + (f" ({means[m][1]}/{len(names)})"
                                            if means[m][1] < len(names) else "")
                for m in methods) + " |" + (" **33.48** |" if task == "inpaint" else ""))
            out.append("| seconds/image | " + " | ".join(
                f"{means[m][2]:.1f}" if m != PUBLISHED else "–" for m in methods) + " |" +
                (" |" if task == "inpaint" else ""))
            dip_rows = [by_key[(crop, task, group, n, DIP)] for n in names
                        if (crop, task, group, n, DIP) in by_key]
            if dip_rows:
                out.append(f"\ndip: mean {statistics.fmean(r['steps'] for r in dip_rows):.0f} "
                           f"steps, preset {', '.join(sorted({r['preset'] for r in dip_rows}))}"
                           f", {', '.join(sorted({r['perf'] for r in dip_rows}))}.")
            out.append("The paper: " + ", ".join(f"{k} {v:.2f}"
                                                 for k, v in PAPER[(task, group)].items()) + ".")
            if DIP in means:
                targets += _targets(task, group, names, by_key, crop)
        if targets:
            out.append("\n## Targets (issue 7: full size on a GPU; on crops only the "
                       "classical tools, measured on the same crops, compare)\n")
            out.append("| target | dip | goal | met |\n|---|---|---|---|")
            out += targets
    return "\n".join(out) + "\n"


def _targets(task: str, group: str, names: list[str], by_key: dict, crop: int) -> list[str]:
    """dip's mean against issue 7's goals, on the images dip has run (each goal's mean is
    taken over the same images). On crops only the tools measured on the same crops compare:
    the paper's figures are full size."""
    def mean(method: str, offset: float = 0.0) -> tuple[float, float] | None:
        pairs = [(by_key[(crop, task, group, n, DIP)]["psnr"],
                  PAPER_INPAINT[n] if method == "paper" else
                  by_key[(crop, task, group, n, method)]["psnr"]) for n in done
                 if method == "paper" or (crop, task, group, n, method) in by_key]
        if not pairs:
            return None
        return (sum(p[0] for p in pairs) / len(pairs),
                sum(p[1] for p in pairs) / len(pairs) + offset)

    done = [n for n in names if (crop, task, group, n, DIP) in by_key]
    goals = {"denoise": [("published DIP images", PUBLISHED, 0.0),
                         ("CBM3D", "CBM3D (bm3d)", 0.0)],
             "inpaint": [("the paper's DIP", "paper", 0.0),
                         ("biharmonic", "biharmonic (scikit-image)", 0.0)],
             "superres": [("published DIP images", PUBLISHED, 0.0),
                          ("Lanczos + 1 dB", "Lanczos (Pillow)", 1.0)]}[task]
    out = []
    for what, method, offset in goals:
        if crop and method in (PUBLISHED, "paper"):
            continue
        pair = mean(method, offset)
        if pair is not None:
            mine, goal = pair
            out.append(f"| {group} ({len(done)}/{len(names)} images): ≥ {what} | {mine:.2f} | "
                       f"{goal:.2f} | {'yes' if mine >= goal else 'no'} ({mine - goal:+.2f}) |")
    return out


def csv_text(rows: list[dict]) -> str:
    fields = ["crop", "task", "set", "image", "method", "psnr", "seconds", "device", "preset",
              "steps", "returned_step", "stop", "commit", "error"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: tuple(str(v) for v in _key(r))))
    return buf.getvalue()


def read_rows(paths: list[Path]) -> list[dict]:
    rows = {}
    for path in paths:
        if path.exists():
            for line in path.read_text().splitlines():
                row = json.loads(line)
                if "error" not in row or _key(row) not in rows:
                    rows[_key(row)] = row
    return list(rows.values())


# --- main --------------------------------------------------------------------------------------

def commit_id() -> str:
    """``DIP_COMMIT`` if set (a copied tree's git metadata may be stale), else git's HEAD."""
    if os.environ.get("DIP_COMMIT"):
        return os.environ["DIP_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_CROP}x{QUICK_CROP} centre crops (not the paper's protocol)")
    parser.add_argument("--crop", type=int, help="centre crop size; 0 = full size")
    parser.add_argument("--tasks", default="denoise,inpaint,superres")
    parser.add_argument("--methods", default="dip,classical,published",
                        help="dip, classical, published (comma-separated)")
    parser.add_argument("--images", help="only these image names (comma-separated)")
    parser.add_argument("--sets", help="only these image sets: color9, table1, Set5, Set14 "
                                       "[default: all; --quick: all but Set14]")
    parser.add_argument("--records", type=Path,
                        help="also keep each dip run's JSON record (curves included) here")
    parser.add_argument("--device", default="cpu", help="dip's device")
    parser.add_argument("--workers", type=int, default=1, help="processes")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per process [default: cores / workers]")
    parser.add_argument("--cases", type=Path, default=CASES)
    parser.add_argument("--results", type=Path, action="append",
                        help="JSON-lines results (the first is written; all are read) "
                             "[default: benchmarks/results/paper_{quick,full}.jsonl]")
    parser.add_argument("--out", type=Path, help="write the markdown table here (and .csv)")
    parser.add_argument("--table-only", action="store_true", help="only print the tables")
    parser.add_argument("--prepare-only", action="store_true", help="only make the cases")
    args = parser.parse_args(argv)
    crop = args.crop if args.crop is not None else (QUICK_CROP if args.quick else 0)
    results = args.results or [RESULTS / f"paper_{'quick' if crop else 'full'}.jsonl"]
    tasks = args.tasks.split(",")
    if not args.table_only:
        prepare(args.cases, crop, tasks)
        if not args.prepare_only:
            collect(args, crop, tasks, results)
    if args.prepare_only:
        return
    rows = read_rows(results)
    text = tables(rows)
    print(text)
    print(csv_text(rows))
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".csv").write_text(csv_text(rows))
    if LEFT_OUT:
        sys.exit(f"left out: {', '.join(sorted(LEFT_OUT))} (pip install -e '.[bench]')")


def collect(args: argparse.Namespace, crop: int, tasks: list[str], results: list[Path]) -> None:
    wanted = args.methods.split(",")
    sets = (args.sets.split(",") if args.sets else
            [g for t in SETS for g in SETS[t] if not (crop and g == "Set14")])
    done = {_key(r) for r in read_rows(results) if "error" not in r}
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    commit = commit_id()
    todo = []
    for task in tasks:
        methods = (([DIP] if "dip" in wanted else [])
                   + (list(runnable(CLASSICAL[task])) if "classical" in wanted else [])
                   + ([PUBLISHED] if "published" in wanted and not crop else []))
        for group, names in SETS[task].items():
            for name in names:
                if args.images and name not in args.images.split(","):
                    continue
                if group not in sets:
                    continue
                for method in methods:
                    job = {"crop": crop, "task": task, "set": group, "image": name,
                           "method": method}
                    if _key(job) not in done:
                        todo.append({**job, "commit": commit, "device": args.device,
                                     "threads": threads, "records": args.records,
                                     "folder": str(case_folder(
                                         args.cases, crop, task, group, name))})
    # The DIP runs first: they are the long ones, and a run cut off by a time limit keeps them.
    todo.sort(key=lambda j: j["method"] != DIP)
    print(f"{len(todo)} runs to do, {len(done)} already in {results[0]}", file=sys.stderr,
          flush=True)
    append_runs(run_job, todo, results[0], args.workers, lambda row: (
        f"{row['task']:>8} {row['set']:>6} {row['image']:>12} {row['method']:>26}: "
        + (row["error"] if "error" in row else f"{row['psnr']:.2f} dB, {row['seconds']:.1f} s")),
        maxtasksperchild=1)


if __name__ == "__main__":
    main()
