"""Shared fixtures: tiny synthetic images (never downloaded, never from shared data)."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


def synthetic(size: int = 32, channels: int = 3) -> torch.Tensor:
    """A smooth, structured test picture ``(1, C, size, size)`` in [0, 1]: gradients, a disc
    and a bar — the kind of content the network's prior fits quickly."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    disc = ((x - 0.6) ** 2 + (y - 0.4) ** 2 < 0.06).float()
    bar = ((x > 0.15) & (x < 0.3)).float()
    planes = [0.2 + 0.5 * x + 0.3 * disc, 0.3 + 0.4 * y - 0.2 * bar + 0.1 * torch.sin(6 * x),
              0.7 - 0.4 * x * y + 0.2 * bar]
    img = torch.stack(planes[:channels])[None].clamp(0, 1)
    return img if channels != 1 else img.mean(1, keepdim=True)


def save(t: torch.Tensor, path: Path) -> Path:
    array = np.round(t[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)
    return path


@pytest.fixture(scope="session", autouse=True)
def own_cache(tmp_path_factory):
    """dip's calibration cache (dip.estimate) in a folder of the test run's own, for this
    process and the dip processes tests start, never the user's ~/.cache."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(scope="session", autouse=True)
def threads_as_dip_chooses():
    """No OMP_NUM_THREADS from the shell that ran the suite (dip takes it as perf.threads):
    the tests of automatic threads and packing see dip's own choice."""
    before = os.environ.pop("OMP_NUM_THREADS", None)
    yield
    if before is not None:
        os.environ["OMP_NUM_THREADS"] = before


@pytest.fixture
def clean_png(tmp_path: Path) -> Path:
    return save(synthetic(32), tmp_path / "clean.png")


@pytest.fixture
def noisy_png(tmp_path: Path) -> Path:
    g = torch.Generator().manual_seed(1)
    noisy = (synthetic(32) + torch.randn(1, 3, 32, 32, generator=g) * 25 / 255).clamp(0, 1)
    return save(noisy, tmp_path / "noisy.png")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1 / torch.mean((a - b) ** 2).item())


# --- processes started by tests: deadlines that scale with the machine, nothing left running --

#: seconds the calibration run took on the machine the suite was written on, idle
CALIBRATION_SECONDS = 4.5
#: process groups of every ``dip`` a test started (see :func:`spawn_dip`)
_GROUPS: list[int] = []


def dip_command() -> list[str]:
    """The installed ``dip`` console script (what users run), else ``python -m dip.cli``."""
    script = Path(sys.executable).with_name("dip")
    return [str(script)] if script.exists() else [sys.executable, "-m", "dip.cli"]


def _default_signals() -> None:
    """In the child before exec: Ctrl-C and SIGTERM as a terminal would deliver them, even when
    the test run itself was started with them ignored (a background job of a script)."""
    for signum in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", signal.SIGTERM)):
        signal.signal(signum, signal.SIG_DFL)


@pytest.fixture(scope="session")
def slowness(tmp_path_factory) -> float:
    """How many times slower this machine is, now, than the one the suite was written on (at
    least 1): a short ``dip denoise`` (start-up, the import of torch, 60 steps) run the way
    the process tests start theirs, timed. A process test waits for a readiness condition with
    a deadline of its generous base times this, so a slow or busy machine gets longer and a
    fast one still goes on as soon as the condition holds."""
    folder = tmp_path_factory.mktemp("calibration")
    noisy = save(synthetic(32), folder / "in.png")
    started = time.perf_counter()
    subprocess.run(dip_command() + ["denoise", str(noisy), "-o", str(folder / "out.png"),
                                    "--iters", "60", "--stop", "fixed", "--device", "cpu", "-q",
                                    "--set", "net.channels_down=[8,8,8,8,8]",
                                    "--set", "net.channels_up=[8,8,8,8,8]"],
                   check=True, start_new_session=True, preexec_fn=_default_signals,
                   capture_output=True)
    return max(1.0, (time.perf_counter() - started) / CALIBRATION_SECONDS)


def wait_until(condition, seconds: float, proc: subprocess.Popen | None = None) -> bool:
    """Poll ``condition()`` until it holds, ``proc`` has exited, or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc is not None and proc.poll() is not None:
            return bool(condition())
        time.sleep(0.05)
    return bool(condition())


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@pytest.fixture
def spawn_dip():
    """Start ``dip ARGS...`` in its own process group (``start(*args)`` returns the Popen, with
    text stdout/stderr pipes). Whatever the test's outcome, the whole group -- workers
    included -- is killed afterwards."""
    started: list[subprocess.Popen] = []

    def start(*args, **popen) -> subprocess.Popen:
        popen.setdefault("stdout", subprocess.PIPE)
        popen.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.Popen(dip_command() + [str(a) for a in args], start_new_session=True,
                                preexec_fn=_default_signals, text=True, **popen)
        _GROUPS.append(proc.pid)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        _kill_group(proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=30)


def _leftovers() -> list[str]:
    """Processes a test left running: members of a group :func:`spawn_dip` started, and
    children of this process other than multiprocessing's resource tracker (one per process
    that used a spawn context, it ends with the process)."""
    found = [f"pid {pid} (group of a dip started by a test)" for group in _GROUPS
             for pid in _group_members(group)]
    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z" and "resource_tracker" not in cmdline:
            found.append(f"pid {stat.parent.name} ({cmdline.strip()[:120]})")
    return found


@pytest.fixture(scope="session", autouse=True)
def no_process_survives():
    """Fails the run when a process started by a test outlives the tests (and kills it)."""
    yield
    left = []
    if not wait_until(lambda: not _leftovers(), 10):
        left = _leftovers()
        for group in _GROUPS:
            _kill_group(group)
        for entry in left:
            with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                os.kill(int(entry.split()[1]), signal.SIGKILL)
    assert not left, f"processes started by tests were still running: {left}"
