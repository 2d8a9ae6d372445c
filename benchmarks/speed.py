"""Seconds per step, GFLOP/s and peak memory of the paper's network: dip's step against a plain
eager float32 NCHW loop measured in the same run.

    python benchmarks/speed.py                       # CPU, 64/128/256/512 px
    python benchmarks/speed.py --device cuda --modes baseline,dip,dip-cl,dip-bf16,dip-nograph
    python benchmarks/speed.py --check               # + PSNR of each mode on a real denoise

Every (mode, size) runs in a fresh Python process, so one measurement's allocator and caches do
not leak into the next. The ratio to the baseline is the figure to read: absolute times on a
shared machine drift.

Modes:
    baseline     the official notebooks' loop: the paper network (a pad layer before every
                 conv, 1×1 included), torch's default Adam, loss.item() every step, output
                 average; eager, float32, NCHW, default allocator.
    dip          dip.fitting.fit with the settings `perf: auto` picks for the device, the divergence
                 guard and the automatic stop rule (which cannot fire within the timed steps).
    dip-eager    dip.fitting.fit with every perf switch off (what dip's own loop costs).
    dip-bf16     dip + bfloat16 autocast (CUDA only).
    dip-nograph  dip without CUDA graphs (eager steps on CUDA).
    dip-cl       dip + channels_last.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MODES = {
    "baseline": None,
    "dip": {},
    "dip-eager": {"graphs": "off", "channels_last": "off", "keep_cpu_memory": False},
    "dip-bf16": {"precision": "bfloat16"},
    "dip-nograph": {"graphs": "off"},
    "dip-cl": {"channels_last": "on"},
}


def _paper_net(channels: int, seed: int):
    from dip.nets import build_net
    torch.manual_seed(seed)
    return build_net("skip", 32, channels)


def _baseline_net(channels: int, seed: int):
    net = _paper_net(channels, seed)
    # The official code puts a ReflectionPad2d(0) before every 1×1 conv too: a copy forward
    # and backward. dip skips it; the baseline keeps it, as the notebooks run.
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d) and module.kernel_size == (1, 1) \
                and module.out_channels != channels:
            module.padding_mode = "reflect"
    return net


def _problem(size: int, device: torch.device, image: str | None):
    """(observation, clean or None): a noisy image of ``size``², real if ``image`` is given."""
    g = torch.Generator().manual_seed(1)
    if image:
        from dip import image as dimage
        clean = dimage.load_image(image).pixels
        h, w = clean.shape[-2:]
        top, left = (h - size) // 2, (w - size) // 2
        clean = clean[..., top:top + size, left:left + size]
    else:
        clean = torch.rand(1, 3, size, size, generator=g)
    noisy = (clean + 25 / 255 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    return noisy.to(device), clean.to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def worker(mode: str, size: int, device_name: str, steps: int, warmup: int,
           image: str | None, seed: int) -> dict:
    """Time one mode at one size; run in its own process."""
    from dip import fit, metrics
    from dip.config import PerfConfig
    from dip.engine import resolve_perf
    from dip.inputs import make_code
    from dip.stopping import VarianceStop

    device = torch.device(device_name)
    observation, clean = _problem(size, device, image)
    channels = observation.shape[1]
    generator = torch.Generator(device=device).manual_seed(seed)
    code = make_code("noise", 32, (size, size), 0.1, generator)
    total = warmup + steps
    stamps: list[float] = []
    flops = None

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if mode == "baseline":
        net = _baseline_net(channels, seed).to(device)
        optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
        identity = torch.nn.Identity()
        estimate = None

        def one_step() -> None:
            nonlocal estimate
            out = net(code + torch.randn(code.shape, generator=generator, device=device) / 30)
            loss = torch.mean((identity(out) - observation) ** 2)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()
            out = out.detach()
            estimate = out if estimate is None else estimate * 0.99 + out * 0.01

        if image is None:
            from torch.utils.flop_counter import FlopCounterMode
            counter = FlopCounterMode(display=False)
            with counter:
                one_step()
            flops = counter.get_total_flops()
            total -= 1
        _sync(device)
        stamps.append(time.perf_counter())
        for _ in range(total):
            one_step()
            _sync(device)
            stamps.append(time.perf_counter())
        result_image = estimate
    else:
        net = _paper_net(channels, seed).to(device)
        switches = dict(MODES[mode])
        keep = switches.pop("keep_cpu_memory", None)
        perf = resolve_perf(PerfConfig(**switches), device)
        if keep is not None:
            perf = dataclasses.replace(perf, keep_cpu_memory=keep)
        _sync(device)
        stamps.append(time.perf_counter())

        def tick(p) -> None:
            stamps.append(time.perf_counter())  # the loop reads the loss each step: synced

        # timing: with the stop rule's per-step cost; the PSNR check: the output average,
        # as the baseline returns
        rule = None if image else VarianceStop()
        result = fit(net, code, torch.nn.Identity(), observation, iters=total,
                     generator=generator, stop_rule=rule, callback=tick, perf=perf)
        result_image = result.image if clean is not None and image else None
        mode = f"{mode} ({perf.describe()})"

    timed = [b - a for a, b in zip(stamps[-steps - 1:-1], stamps[-steps:])]
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    out = {"mode": mode, "size": size, "device": device_name,
           "s_per_step": statistics.median(timed), "mean_s_per_step": statistics.fmean(timed),
           "first_steps_s": stamps[-steps - 1] - stamps[0], "peak_gib": peak, "flops": flops}
    if image and result_image is not None:
        out["psnr"] = metrics.psnr(result_image.clamp(0, 1), clean)
    return out


def run_one(mode: str, size: int, args: argparse.Namespace, steps: int,
            image: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--sizes", str(size), "--device",
           args.device, "--steps", str(steps), "--warmup", str(args.warmup),
           "--seed", str(args.seed)]
    if image:
        cmd += ["--image", image]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"mode": mode, "size": size, "error": (proc.stderr.strip().splitlines()
                                                       or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="64,128,256,512")
    parser.add_argument("--modes", default="baseline,dip")
    parser.add_argument("--steps", type=int, default=0,
                        help="timed steps per run [default: 10 on CPU, 50 on CUDA]")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check", action="store_true",
                        help="also run each mode on a real denoise and compare PSNR")
    parser.add_argument("--check-image",
                        default=str(ROOT / "sample_images" / "landscape.png"))
    parser.add_argument("--check-size", type=int, default=128)
    parser.add_argument("--check-steps", type=int, default=300)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--image", help=argparse.SUPPRESS)
    args = parser.parse_args()
    steps = args.steps or (50 if args.device.startswith("cuda") else 10)

    if args.worker:
        print(json.dumps(worker(args.worker, int(args.sizes), args.device, steps, args.warmup,
                                args.image, args.seed)))
        return

    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; known: {', '.join(MODES)}")
    rows = []
    print(f"# speed of the paper network ({args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {steps} timed steps after "
          f"{args.warmup} warm-up)\n")
    print("| size | mode | s/step | speed-up vs baseline | GFLOP/step | GFLOP/s | peak GiB |")
    print("|---|---|---|---|---|---|---|")
    for size in map(int, args.sizes.split(",")):
        base, flops = None, None
        for mode in modes:
            row = run_one(mode, size, args, steps)
            rows.append(row)
            if "error" in row:
                print(f"| {size} | {mode} | failed: {row['error']} | | | | |", flush=True)
                continue
            flops = row["flops"] or flops
            if mode == "baseline":
                base = row["s_per_step"]
            ratio = f"{base / row['s_per_step']:.2f}x" if base else "-"
            gflop = flops / 1e9 if flops else None
            print(f"| {size} | {row['mode']} | {row['s_per_step']:.4f} | {ratio} | "
                  f"{gflop:.1f} | {gflop / row['s_per_step']:.0f} | {row['peak_gib']:.2f} |"
                  if gflop else
                  f"| {size} | {row['mode']} | {row['s_per_step']:.4f} | {ratio} | - | - | "
                  f"{row['peak_gib']:.2f} |", flush=True)
    if args.check:
        print(f"\n# same seed, same image: PSNR after {args.check_steps} steps, denoising a "
              f"{args.check_size}px crop of {Path(args.check_image).name} (sigma 25)\n")
        print("| mode | PSNR (dB) | difference to baseline (dB) |")
        print("|---|---|---|")
        base_psnr = None
        for mode in modes:
            row = run_one(mode, args.check_size, args, args.check_steps - args.warmup,
                          args.check_image)
            row["check"] = True
            rows.append(row)
            if "error" in row:
                print(f"| {mode} | failed: {row['error']} | |", flush=True)
                continue
            if mode == "baseline":
                base_psnr = row["psnr"]
            diff = f"{row['psnr'] - base_psnr:+.3f}" if base_psnr is not None else "-"
            print(f"| {row['mode']} | {row['psnr']:.3f} | {diff} |", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
