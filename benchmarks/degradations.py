"""dip's newer tasks against the classical tools a user would pick instead, on 128 px crops.

    pip install -e '.[bench]'                       # bm3d, scikit-image
    python benchmarks/degradations.py --task deblur --workers 2 --threads 1
    python benchmarks/degradations.py --task poisson --workers 2 --threads 1
    python benchmarks/degradations.py --task deblur --table-only
    python benchmarks/degradations.py --task superres --levels bicubic,area --workers 2 --threads 1
    python benchmarks/degradations.py --task gaussian --levels sigma15,sigma50 --workers 2
    python benchmarks/degradations.py --task inpaint --workers 2 --threads 1

Images: the paper's 9 colour denoising images (their clean *_GT.png), 128x128 crops from the
centre (the settings were chosen looking at these) and from the top-left corner (held out:
never looked at while choosing), ../shared/data/dip-paper (its MANIFEST.md).

deblur   each crop blurred by a Gaussian (sigma 1.6, 25x25) or a 9x9 box, then Gaussian noise
         of sigma sqrt(2) in 0-255 units (sigma^2 = 2): the protocol of NCSR, IDD-BM3D and
         DeepRED. The blur is dip's own operator (reflected borders), the noise seeded per
         image. Baselines (scikit-image): Richardson-Lucy and Wiener at several settings,
         the best of each chosen per set WITH the clean images (an upper bound for them), and
         the unsupervised Wiener filter (no setting). They get the input extended by
         reflection (a kernel's width on each side) and cropped back, so their FFT/zero
         borders cost them nothing.
poisson  each crop scaled so that white is PEAK photons, Poisson counts drawn (seeded per
         image), divided by PEAK, saved as 8-bit PNG. Baseline: the Anscombe transform,
         CBM3D at sigma 1 and the exact unbiased inverse (Makitalo & Foi, IEEE TIP 2011, its
         closed-form approximation), given the true peak. dip runs with its defaults and
         estimates the peak from the image itself.
gaussian denoising at other noise levels than the paper's 25: each crop with Gaussian noise of
         sigma 15, 25 or 50 (0-255 units, seeded per image, clipped, 8-bit PNG). dip runs with
         its defaults (it estimates sigma itself, for the stop's noise floor); CBM3D is given
         the true sigma (the usual protocol, and an advantage for it).
superres each crop made 4x smaller with one of Pillow's downscalers -- bicubic (how most small
         pictures are made), box (area: block means) or Lanczos (Pillow's, 3 lobes) -- and
         saved as 8-bit PNG. dip runs with its defaults (the paper's Lanczos-2 operator, a
         mismatch for every one of these), and with ``--kernel`` naming the downscaler that
         made the input (bicubic, area). Baselines: Pillow's Lanczos and bicubic upscaling.
         "kernel choice": for each candidate kernel a 200-step fit, then the candidate whose
         result passed back through its own operator is closest to the input (the data fit
         after a short run): is the downscaler recognisable without being told?
         bicubic_x8: bicubic, 8x smaller (the factor's own budget); bicubic_jpeg90 and
         bicubic_jpeg75: bicubic, then saved as a JPEG at that quality (Pillow's encoder, its
         default 4:2:0 chroma); bicubic_n5: bicubic, then Gaussian noise of sigma 5. Each
         runs only when --levels names it. The defaults' rows also score the network's image
         and the same image back-projected exactly (dip's result before it heeded a JPEG
         input's coding, and still for a PNG).
inpaint  half of each crop's pixels dropped (the same pixels in every channel, seeded per
         image), the mask beside: the 9 colour images (drop50) and Table 1's 11 grey ones
         (drop50grey; the fast preset was chosen on their centre crops: those are tuned).
         Baselines: scikit-image's biharmonic fill (per channel) and OpenCV's Navier-Stokes.

Scores: RGB PSNR over the whole crop, known pixels included as Table 1 scores (superres:
Y-PSNR, as many border pixels cropped as the factor: the SR protocol). Every result is a JSON
line in benchmarks/results/{task}_crop128.jsonl (a re-run skips what is there); the tables go to
benchmarks/results/{task}_crop128.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
import zlib
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from early_stopping import DATA, DENOISE, INPAINT  # noqa: E402  (benchmarks/)
from paper import LEFT_OUT, _numpy, _tensor, commit_id, needs, runnable  # noqa: E402
from presets import append_runs  # noqa: E402

CASES = ROOT / "benchmarks" / "cases" / "degradations"
RESULTS = ROOT / "benchmarks" / "results"
CROP = 128
WHERE = ("centre", "corner")
#: the degradations of each task: name -> parameters
LEVELS = {
    "deblur": {"gaussian": {"kernel": "gaussian:1.6,25", "noise": 2 ** 0.5},
               "box": {"kernel": "box:9", "noise": 2 ** 0.5},
               # noisier photos than the protocol's (which stop to use): run with --levels only
               "gaussian_n5": {"kernel": "gaussian:1.6,25", "noise": 5, "named": True},
               "gaussian_n10": {"kernel": "gaussian:1.6,25", "noise": 10, "named": True}},
    "poisson": {"peak30": {"peak": 30}, "peak10": {"peak": 10}},
    "gaussian": {f"sigma{s}": {"sigma": s} for s in (15, 25, 50)},
    # the downscaler that made the input (Pillow's filter) and dip's --kernel for it
    "superres": {"bicubic": {"resample": "bicubic", "kernel": "bicubic"},
                 "area": {"resample": "box", "kernel": "area"},
                 # Pillow's Lanczos has three lobes (the paper's, dip's default, two)
                 "lanczos": {"resample": "lanczos", "kernel": "lanczos3"},
                 # x8, the factor's own budget (configs' per_factor): run with --levels only
                 "bicubic_x8": {"resample": "bicubic", "kernel": "bicubic", "factor": 8},
                 # the small picture saved as a JPEG (Pillow's default 4:2:0 chroma), or
                 # noisy: run with --levels only
                 "bicubic_jpeg90": {"resample": "bicubic", "kernel": "bicubic", "jpeg": 90,
                                    "named": True},
                 "bicubic_jpeg75": {"resample": "bicubic", "kernel": "bicubic", "jpeg": 75,
                                    "named": True},
                 "bicubic_n5": {"resample": "bicubic", "kernel": "bicubic", "noise": 5,
                                "named": True}},
    "inpaint": {"drop50": {"fraction": 0.5},
                # Table 1's 11 grey images (the fast preset was chosen on their centre crops)
                "drop50grey": {"fraction": 0.5, "grey": True}},
}
FACTOR = 4  # superres, where a level names no factor of its own
#: superres: the kernels the short fits choose among, and their steps
CHOICES = ("lanczos", "lanczos3", "bicubic", "area")
CHOICE_STEPS = 200
RL_ITERS = (10, 30, 100)
WIENER_BALANCE = (0.003, 0.01, 0.03, 0.1)


# --- cases ----------------------------------------------------------------------------------------

def factor(level: str) -> int:
    """A superres level's factor."""
    return LEVELS["superres"][level].get("factor", FACTOR)


def images(task: str, level: str) -> list[str]:
    return INPAINT if LEVELS[task][level].get("grey") else DENOISE


def crop(t, where: str):
    h, w = t.shape[-2:]
    top, left = ((h - CROP) // 2, (w - CROP) // 2) if where == "centre" else (0, 0)
    return t[..., top:top + CROP, left:left + CROP]


def make_case(task: str, level: str, name: str, where: str, folder: Path) -> None:
    import torch

    from dip import image, operators
    from dip.tasks.deblur import parse_spec

    spec = LEVELS[task][level]
    source = (DATA / "Reconstruction" / "Gray" / "50p" if spec.get("grey")
              else DATA / "Denoising" / "Color" / "25")
    clean = crop(image.load_image(source / f"{name}_GT.png").pixels, where)
    g = torch.Generator().manual_seed(zlib.crc32(f"{task}/{level}/{name}/{where}".encode()))
    if task == "deblur":
        blurred = operators.Blur(parse_spec(spec["kernel"]))(clean)
        damaged = operators.add_noise(blurred, spec["noise"], g)
    elif task == "gaussian":
        damaged = operators.add_noise(clean, spec["sigma"], g)
    elif task == "superres":
        damaged = image.resize(clean, (CROP // factor(level),) * 2, spec["resample"])
        if spec.get("noise"):
            damaged = operators.add_noise(damaged, spec["noise"], g)
    elif task == "inpaint":
        damaged, known = operators.drop_pixels(clean, spec["fraction"], g)
        folder.mkdir(parents=True, exist_ok=True)
        image.save_image(image.Picture(1 - known), folder / "mask.png")  # white = missing
    else:
        damaged = operators.add_poisson(clean, spec["peak"], g)
    folder.mkdir(parents=True, exist_ok=True)
    if spec.get("jpeg"):  # Pillow's encoder at that quality, its own chroma subsampling
        from PIL import Image

        array = (damaged[0].permute(1, 2, 0) * 255).round().clamp(0, 255).byte().numpy()
        Image.fromarray(array).save(folder / "input.jpg", quality=spec["jpeg"])
    else:
        image.save_image(image.Picture(damaged), folder / "input.png")
    image.save_image(image.Picture(clean), folder / "reference.png")


def case_folder(task: str, level: str, name: str, where: str) -> Path:
    return CASES / task / f"{level}_{where}_{name}"


def input_file(folder: Path) -> Path:
    """The case's damaged picture: a PNG, or the JPEG a level saves."""
    jpeg = folder / "input.jpg"
    return jpeg if jpeg.exists() else folder / "input.png"


# --- methods --------------------------------------------------------------------------------------


def _per_channel(blurred, kernel, fn):
    """``fn(channel, psf)`` on the input extended by reflection, cropped back."""
    import numpy as np

    a = np.atleast_3d(_numpy(blurred))
    pad = max(kernel.shape)
    out = []
    for c in range(a.shape[-1]):
        padded = np.pad(a[..., c], pad, mode="symmetric")
        out.append(fn(padded, kernel)[pad:-pad, pad:-pad])
    return _tensor(np.stack(out, -1))


def richardson_lucy(iters: int):
    @needs("skimage")
    def run(blurred, kernel, level):
        from skimage.restoration import richardson_lucy as rl

        return _per_channel(blurred, kernel, lambda a, k: rl(a, k, num_iter=iters, clip=True))
    return run


def wiener(balance: float):
    @needs("skimage")
    def run(blurred, kernel, level):
        from skimage.restoration import wiener as wf

        return _per_channel(blurred, kernel, lambda a, k: wf(a, k, balance, clip=True))
    return run


@needs("skimage")
def unsupervised_wiener(blurred, kernel, level):
    import numpy as np
    from skimage.restoration import unsupervised_wiener as uw

    rng = np.random.default_rng(0)
    return _per_channel(blurred, kernel, lambda a, k: uw(a, k, clip=True, rng=rng)[0])


@needs("bm3d")
def anscombe_bm3d(noisy, kernel, level):
    """The Anscombe transform, CBM3D at sigma 1, the exact unbiased inverse (Makitalo & Foi
    2011, closed form), with the true peak."""
    import bm3d
    import numpy as np

    peak = LEVELS["poisson"][level]["peak"]
    z = 2 * np.sqrt(np.maximum(_numpy(noisy) * peak, 0) + 3 / 8)
    d = bm3d.bm3d_rgb(z, 1.0) if z.ndim == 3 else bm3d.bm3d(z, 1.0)
    d = np.maximum(d, 0.8)  # the closed form holds above ~0.8 (where the counts are ~0)
    inverse = (d ** 2 / 4 + np.sqrt(1.5) / (4 * d) - 11 / (8 * d ** 2)
               + 5 * np.sqrt(1.5) / (8 * d ** 3) - 1 / 8)
    return _tensor(np.maximum(inverse, 0) / peak)


@needs("bm3d")
def cbm3d(noisy, kernel, level):
    """CBM3D given the true sigma."""
    import bm3d

    sigma = LEVELS["gaussian"][level]["sigma"] / 255
    a = _numpy(noisy)
    return _tensor(bm3d.bm3d_rgb(a, sigma) if a.ndim == 3 else bm3d.bm3d(a, sigma))


@needs("skimage")
def biharmonic(holes, mask, level):
    from skimage.restoration import inpaint_biharmonic

    a = _numpy(holes)
    return _tensor(inpaint_biharmonic(a, _numpy(mask) > 0.5,
                                      channel_axis=-1 if a.ndim == 3 else None))


@needs("cv2")
def navier_stokes(holes, mask, level):
    import cv2
    import numpy as np

    a = np.ascontiguousarray((_numpy(holes) * 255).round().astype(np.uint8))
    m = ((_numpy(mask) > 0.5) * 255).astype(np.uint8)
    return _tensor(cv2.inpaint(a, m, 3, cv2.INPAINT_NS) / 255.0)


def upscale(method: str):
    def run(small, kernel, level):
        from dip import image

        return image.resize(small, (CROP, CROP), method)
    return run


def methods(task: str) -> dict:
    if task == "superres":
        return {"Lanczos": upscale("lanczos"), "bicubic": upscale("bicubic")}
    if task == "deblur":
        out = {f"Richardson-Lucy, {n} iterations": richardson_lucy(n) for n in RL_ITERS}
        out.update({f"Wiener, balance {b}": wiener(b) for b in WIENER_BALANCE})
        out["unsupervised Wiener"] = unsupervised_wiener
        return out
    if task == "gaussian":
        return {"CBM3D (true sigma)": cbm3d}
    if task == "inpaint":
        return {"biharmonic (scikit-image)": biharmonic, "Navier-Stokes (OpenCV)": navier_stokes}
    return {"Anscombe + CBM3D + exact unbiased inverse": anscombe_bm3d}


DIP = "dip (defaults)"
#: dip with one setting changed, measured beside its defaults: method -> (task, overrides)
DIP_VARIANTS = {"dip, noise.loss=anscombe": ("poisson", ("noise.loss=anscombe",)),
                # the fast preset's 1200 steps at every noise level (the defaults before
                # stop.budget_sigma), and 2400 at every level
                "dip, stop.budget_sigma=0": ("gaussian", ("stop.budget_sigma=0",)),
                "dip, optim.iters=2400": ("gaussian", ("optim.iters=2400",
                                                       "stop.budget_sigma=0")),
                # the fast super-resolution preset before DeepRED's denoiser (dip.red), and
                # before that with the other fast presets' rate, not the paper's 0.01
                "dip, optim.iters=1000; red.weight=0": ("superres", ("optim.iters=1000",
                                                                    "red.weight=0")),
                "dip, optim.lr=0.02; optim.iters=1000; red.weight=0": (
                    "superres", ("optim.lr=0.02", "optim.iters=1000", "red.weight=0"))}
#: superres: dip told the downscaler (--kernel), and the short fits that guess it
MATCHED, CHOICE = "dip, --kernel matched", "kernel choice"
#: superres: dip told one kernel for every input, whichever downscaler made it
KERNEL = "dip, --kernel "
#: superres: the defaults' network image, before the back-projection (a column, not a run)
NETWORK = "dip, network's image"
EXACT = "dip, back-projected exactly"  # superres: the whole residual put back, as before
#: superres: the images the fast preset's x4 settings were chosen on (a2d0967)
SUPERRES_TUNED = ("F16", "baboon", "hill")


def variant(method: str) -> tuple[str, ...] | None:
    """A dip method's ``--set`` overrides (None: not a dip run). Besides the named ones, any
    ``"dip, KEY=VALUE; KEY=VALUE"`` is dip with those overrides: a search's candidates,
    measured without naming each here first."""
    if method in (DIP, MATCHED, CHOICE) or method.startswith(KERNEL):
        return ()
    if method in DIP_VARIANTS:
        return DIP_VARIANTS[method][1]
    if method.startswith("dip, ") and "=" in method:
        return tuple(part.strip() for part in method[len("dip, "):].split(";"))
    return None


def dip_methods(task: str, others: Iterable[str] = ()) -> list[str]:
    """The task's dip methods: the defaults, its named variants, and the searched ``others``
    of them."""
    fixed = [DIP, MATCHED, CHOICE] if task == "superres" else [DIP]
    fixed += [m for m, (t, _) in DIP_VARIANTS.items() if t == task]
    return fixed + sorted({m for m in others if variant(m) is not None and m not in fixed})


def _superres(job: dict, folder: Path, ref) -> None:
    """The superres task's dip runs: the defaults, the matched kernel, or the kernel choice."""
    import torch

    import dip
    from dip import image, metrics, operators
    from dip.tasks.superres import back_projected

    picture = image.load_image(input_file(folder))
    small = picture.pixels
    f = factor(job["level"])
    if job["method"] == CHOICE:
        misfit = {}
        for kernel in CHOICES:
            r = dip.restore("superres", input_file(folder), factor=f, kernel=kernel,
                            iters=CHOICE_STEPS, stop="fixed", write=False, device="cpu")
            again = operators.Downsample(f, kernel)(r.picture.pixels)
            misfit[kernel] = round(((again - small) ** 2).mean().item(), 8)
        chosen = min(misfit, key=misfit.get)
        job.update(misfit=misfit, chosen=chosen,
                   right=chosen == LEVELS["superres"][job["level"]]["kernel"])
        return
    kernel = (LEVELS["superres"][job["level"]]["kernel"] if job["method"] == MATCHED
              else job["method"][len(KERNEL):] if job["method"].startswith(KERNEL)
              else "lanczos")
    # the network's image; the defaults' result is it back-projected onto the input, the same
    # arithmetic as dip's own (tests/test_restarts_and_tiles.py), so one fit scores both
    r = dip.restore("superres", input_file(folder), factor=f, kernel=kernel,
                    reference=folder / "reference.png", write=False, device="cpu",
                    no_back_projection=True,
                    overrides=(f"perf.threads={torch.get_num_threads()}",
                               *variant(job["method"])))
    out = back_projected(r.picture.pixels, small, f, kernel, error=picture.coding_error)
    # the exact correction: dip's result before it heeded the input's own error
    op = operators.Downsample(f, kernel)
    exact = operators.back_project(op, r.picture.pixels, small).clamp(0, 1)
    job.update(_dip_row(r.record), psnr=metrics.psnr_y(out, ref, f),
               network_psnr=metrics.psnr_y(r.picture.pixels, ref, f),
               exact_psnr=metrics.psnr_y(exact, ref, f))


def _dip_row(rec: dict) -> dict:
    """What a dip run's record says of the fit, for its row."""
    return {"steps": rec["iterations"], "stop": rec["stop_reason"],
            "peak": rec["metrics"].get("peak_psnr"), "preset": rec["preset"],
            "guard_restores": len(rec["guard_restores"])}


def run_job(job: dict) -> dict:
    import torch

    torch.set_num_threads(job.pop("threads"))
    import dip
    from dip import image, metrics
    from dip.tasks.deblur import parse_spec

    folder = Path(job.pop("folder"))
    task, level = job["task"], job["level"]
    ref = image.load_image(folder / "reference.png").pixels
    started = time.perf_counter()
    try:
        if task == "superres" and variant(job["method"]) is not None:
            _superres(job, folder, ref)
        elif variant(job["method"]) is not None:
            args = {"deblur": {"kernel": LEVELS[task][level].get("kernel")},
                    "poisson": {"noise": "poisson"}, "gaussian": {},
                    "inpaint": {"mask": folder / "mask.png"}}[task]
            # dip's own threads pinned too: "auto" adapts them to the load, and two runs of
            # the same settings then drift apart in rounding (benchmarks/README.md)
            overrides = (f"perf.threads={torch.get_num_threads()}",
                         *variant(job["method"]))
            if task == "inpaint":
                # the network's image everywhere; the defaults' result is it with the known
                # pixels put back, the same arithmetic as dip's own (tests/
                # test_restarts_and_tiles.py: the holes are equal either way), so one fit
                # scores both
                args["redraw_known"] = True
            r = dip.restore(task if task in ("deblur", "inpaint") else "denoise",
                            folder / "input.png", reference=folder / "reference.png",
                            write=False, device="cpu", overrides=overrides, **args)
            out = r.picture.pixels
            if task == "inpaint":
                known = 1 - image.load_image(folder / "mask.png").pixels
                job["redrawn_psnr"] = metrics.psnr(out, ref)
                out = out * (1 - known) + image.load_image(folder / "input.png").pixels * known
            job.update(_dip_row(r.record), psnr=metrics.psnr(out, ref),
                       estimated_peak=r.record.get("noise_peak"),
                       estimated_sigma=r.record.get("noise_sigma"))
        else:
            kernel = (parse_spec(LEVELS[task][level]["kernel"]).numpy() if task == "deblur"
                      else image.load_image(folder / "mask.png").pixels if task == "inpaint"
                      else None)
            out = methods(task)[job["method"]](image.load_image(input_file(folder)).pixels,
                                               kernel, level)
            job.update(psnr=metrics.psnr_y(out, ref, factor(level)) if task == "superres"
                       else metrics.psnr(out, ref))
        if task != "superres":
            job["input_psnr"] = metrics.psnr(image.load_image(folder / "input.png").pixels,
                                             ref)
    except Exception as exc:  # a failed image is a row, not the end of the benchmark
        job["error"] = f"{type(exc).__name__}: {exc}"
    job["seconds"] = round(time.perf_counter() - started, 2)
    for key in ("psnr", "input_psnr", "peak", "network_psnr", "redrawn_psnr", "exact_psnr"):
        if job.get(key) is not None:
            job[key] = round(job[key], 4)
    return job


# --- tables ---------------------------------------------------------------------------------------

def _key(r: dict) -> tuple:
    return r["task"], r["level"], r["where"], r["image"], r["method"]


def superres_table(rows: list[dict]) -> str:
    by = {_key(r): r for r in rows if "error" not in r and r["task"] == "superres"}
    # the defaults' fit before its back-projection: a column of its own
    by.update({_key(r)[:-1] + (NETWORK,): dict(r, psnr=r["network_psnr"])
               for r in list(by.values()) if r["method"] == DIP and "network_psnr" in r})
    by.update({_key(r)[:-1] + (EXACT,): dict(r, psnr=r["exact_psnr"])
               for r in list(by.values()) if r["method"] == DIP and "exact_psnr" in r})
    out = ["# superres: dip's defaults (CPU) against upscaling, 128 px crops (Y-PSNR, as many "
           "border pixels cropped as the factor)\n",
           "commit " + ", ".join(sorted({r.get("commit", "?") for r in by.values()})),
           f"\nSettings chosen on {', '.join(SUPERRES_TUNED)} (both crops); the others held "
           "out."]
    shown = [NETWORK, EXACT, DIP, *(m for m, (t, _) in DIP_VARIANTS.items() if t == "superres"),
             MATCHED]
    # the other dip runs (a kernel for every input, a search's candidates): where they ran on
    # every crop of a group
    shown += sorted({k[-1] for k in by if variant(k[-1]) is not None} - set(shown) - {CHOICE})
    shown += ["Lanczos", "bicubic"]
    for level in LEVELS["superres"]:
        for where in WHERE:
            # the defaults lead; in a file of variants only, the first variant that ran
            ran = [m for m in shown if m not in (NETWORK, EXACT) and variant(m) is not None
                   and any(("superres", level, where, n, m) in by
                           for n in images("superres", level))]
            if not ran:
                continue
            lead = ran[0]
            names = [n for n in images("superres", level)
                     if ("superres", level, where, n, lead) in by]
            cols = [m for m in shown if all(("superres", level, where, n, m) in by
                                            for n in names)]
            spec = LEVELS["superres"][level]
            then = (f", then saved as a JPEG of quality {spec['jpeg']}" if spec.get("jpeg")
                    else f", then noise of sigma {spec['noise']}" if spec.get("noise") else "")
            out.append(f"\n## input made with Pillow's {spec['resample']}, x{factor(level)}"
                       f"{then}, {where} crops\n")
            out.append("| image | " + " | ".join(cols) + " |")
            out.append("|---" * (len(cols) + 1) + "|")
            for n in names:
                out.append(f"| {n} | " + " | ".join(
                    f"{by[('superres', level, where, n, m)]['psnr']:.2f}" for m in cols) + " |")
            groups = {"tuned": [n for n in names if n in SUPERRES_TUNED],
                      "held out": [n for n in names if n not in SUPERRES_TUNED]}
            lines = []
            for label, group in groups.items():
                if not group:
                    continue
                means = {m: statistics.fmean(by[("superres", level, where, n, m)]["psnr"]
                                             for n in group) for m in cols}
                out.append(f"| **mean, {label} ({len(group)})** | "
                           + " | ".join(f"**{means[m]:.2f}**" for m in cols) + " |")
                if "Lanczos" in means:
                    lines.append(f"{label}: {lead} - Lanczos "
                                 f"{means[lead] - means['Lanczos']:+.2f} dB")
            secs = {m: statistics.fmean(by[("superres", level, where, n, m)]["seconds"]
                                        for n in names) for m in cols}
            out.append("| seconds/image | " + " | ".join(f"{secs[m]:.1f}" for m in cols) + " |")
            if lines:
                out.append("\n" + "; ".join(lines))
    return "\n".join(out) + "\n"


def _notes(task: str, level: str, dips: list[dict], means: dict, lead: str,
           rivals: list[str]) -> list[str]:
    """The lines under a group's table: dip against the best classical tool (when the
    results hold one), its steps, best moment and noise estimates."""
    steps = statistics.fmean(r["steps"] for r in dips)
    rival = max(rivals, key=lambda m: means[m], default=None)  # a search's file: dip only
    versus = ("" if rival is None
              else f"dip - best classical ({rival}): {means[lead] - means[rival]:+.2f} dB; ")
    out = [f"\n{versus}dip ran {steps:.0f} steps on average."]
    if all(r.get("peak") is not None for r in dips) and task != "inpaint":
        # (inpainting runs its whole budget; its peak is the network's image's)
        peak = statistics.fmean(r["peak"] for r in dips)
        out.append(f"dip's best moment on the way (found with the clean image): "
                   f"{peak:.2f} dB, {peak - means[lead]:.2f} dB over what its stop returned.")
    if all(r.get("redrawn_psnr") is not None for r in dips):
        redrawn = statistics.fmean(r["redrawn_psnr"] for r in dips)
        out.append(f"The network's image everywhere (`--redraw-known`, what the defaults "
                   f"returned before they kept the known pixels): {redrawn:.2f} dB.")
    if task == "gaussian" and all(r.get("estimated_sigma") is not None for r in dips):
        sigmas = ", ".join(f"{r['estimated_sigma']:.1f}" for r in dips)
        out.append(f"The noise sigma dip estimated (true {LEVELS[task][level]['sigma']}): "
                   f"{sigmas}.")
    return out


def table(task: str, rows: list[dict]) -> str:
    if task == "superres":
        return superres_table(rows)
    by = {_key(r): r for r in rows if "error" not in r and r["task"] == task}
    dip_ms = dip_methods(task, {r["method"] for r in by.values()})
    out = [f"# {task}: dip's defaults (CPU) against the classical tools, 128 px crops\n",
           "commit " + ", ".join(sorted({r.get("commit", "?") for r in by.values()}))]
    for level in LEVELS[task]:
        for where in WHERE:
            # the defaults lead; where they ran on some images only (a rerun of a few), the
            # first dip variant that ran on all of them
            every = images(task, level)
            counts = {m: sum((task, level, where, n, m) in by for n in every)
                      for m in dip_ms}
            lead = max(counts, key=lambda m: (counts[m] == len(every),
                                              m == DIP and counts[m] > 0, counts[m]))
            names = [n for n in every if (task, level, where, n, lead) in by]
            if not names:
                continue
            out.append(f"\n## {level}, {where} crops "
                       f"({'settings chosen here' if where == 'centre' else 'held out'})\n")
            ms = [m for m in [*dip_ms, *methods(task)]
                  if all((task, level, where, n, m) in by for n in names)]
            best = {}
            for m in ms:
                if m == lead:
                    continue
                family = m if variant(m) else m.split(",")[0]
                mean = statistics.fmean(by[(task, level, where, n, m)]["psnr"] for n in names)
                if family not in best or mean > best[family][1]:
                    best[family] = (m, mean)
            shown = [lead] + [m for m, _ in best.values()]
            out.append("| image | input | " + " | ".join(shown) + " |")
            out.append("|---" * (len(shown) + 2) + "|")
            for n in names:
                cells = [f"{by[(task, level, where, n, m)]['psnr']:.2f}" for m in shown]
                out.append(f"| {n} | {by[(task, level, where, n, lead)]['input_psnr']:.2f} | "
                           + " | ".join(cells) + " |")
            means = {m: statistics.fmean(by[(task, level, where, n, m)]["psnr"] for n in names)
                     for m in shown}
            secs = {m: statistics.fmean(by[(task, level, where, n, m)]["seconds"] for n in names)
                    for m in shown}
            damaged = statistics.fmean(by[(task, level, where, n, lead)]["input_psnr"]
                                       for n in names)
            out.append(f"| **mean** | {damaged:.2f} | "
                       + " | ".join(f"**{means[m]:.2f}**" for m in shown) + " |")
            out.append("| seconds/image | | " + " | ".join(f"{secs[m]:.1f}" for m in shown)
                       + " |")
            out += _notes(task, level, [by[(task, level, where, n, lead)] for n in names],
                          means, lead, [m for m in shown if m not in dip_ms])
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=list(LEVELS), required=True)
    parser.add_argument("--methods", default="dip,classical",
                        help="dip, classical, or method names (commas without a space between)")
    parser.add_argument("--where", default=",".join(WHERE))
    parser.add_argument("--levels", help="only these levels (comma-separated)")
    parser.add_argument("--images", help="only these images (comma-separated)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--results", type=Path)
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args(argv)
    results = args.results or RESULTS / f"{args.task}_crop128.jsonl"
    unknown = set((args.images or "").split(",")) - {""} - {
        n for level in LEVELS[args.task] for n in images(args.task, level)}
    if unknown:
        parser.error(f"no image {', '.join(sorted(unknown))} in {args.task}'s sets")
    if not args.table_only:
        collect(args, results)
    rows = [json.loads(line) for line in results.read_text().splitlines()] \
        if results.exists() else []
    text = table(args.task, rows)
    print(text)
    results.with_suffix(".md").write_text(text)
    if LEFT_OUT:
        sys.exit(f"left out: {', '.join(sorted(LEFT_OUT))} (pip install -e '.[bench]')")


def collect(args: argparse.Namespace, results: Path) -> None:
    done = set()
    if results.exists():
        done = {_key(json.loads(line)) for line in results.read_text().splitlines()
                if "error" not in json.loads(line)}
    wanted = re.split(r",(?! )", args.methods)  # a method's own name has ", " in it
    plain, dips = dip_methods(args.task), dip_methods(args.task, wanted)
    tools = methods(args.task)
    asked = {m: tools[m] for m in tools if m in wanted or "classical" in wanted}
    ms = [m for m in dips + list(runnable(asked))  # a missing module only where it is asked
          if m in wanted or ("dip" in wanted and m in plain)
          or ("classical" in wanted and m not in dips)]
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    todo, commit = [], commit_id()
    for level in (args.levels.split(",") if args.levels
                  else [lv for lv, spec in LEVELS[args.task].items()
                        if "factor" not in spec and not spec.get("named")]):
        for where in args.where.split(","):
            # --images: those of this level's set (Table 1's grey ones, or the colour ones)
            for name in [n for n in images(args.task, level)
                         if not args.images or n in args.images.split(",")]:
                folder = case_folder(args.task, level, name, where)
                if not (folder / "reference.png").exists():
                    make_case(args.task, level, name, where, folder)
                for m in ms:
                    if m == MATCHED and LEVELS[args.task][level]["kernel"] == "lanczos":
                        continue  # the defaults' kernel already (the paper's Lanczos-2)
                    job = {"task": args.task, "level": level, "where": where, "image": name,
                           "method": m}
                    if _key(job) not in done:
                        todo.append({**job, "commit": commit, "threads": threads,
                                     "folder": str(folder)})
    todo.sort(key=lambda j: j["method"] not in dips)  # the long ones first
    print(f"{len(todo)} runs to do", file=sys.stderr, flush=True)
    append_runs(run_job, todo, results, args.workers, lambda r: (
        f"{r['level']:>9} {r['where']:>6} {r['image']:>8} {r['method'][:30]:>30}: "
        + (r["error"] if "error" in r else f"chose {r['chosen']}" if "chosen" in r
           else f"{r['psnr']:.2f} dB, {r['seconds']:.1f} s")),
        maxtasksperchild=1)


if __name__ == "__main__":
    main()
