"""What a run will cost, said before it starts: its time and its peak memory.

**Memory.** A fit's memory is mostly the activations its network saves for the backward pass,
which grow with the pixels. :func:`activation_bytes` measures them on a real 64x64 forward pass
(every saved tensor's storage, counted once) and scales by the pixels; the backward pass and
the convolutions' workspaces about double that (measured against peak RSS on the CPU at
256-512 px, fast and paper networks: 1.75-2x, :data:`BACKWARD`). Each member also keeps its
weights with Adam's moments and the guard's snapshots, its stop rule's window of outputs and
its output average; the run keeps the whole image a few times over (input, result, blend).

**Time.** Seconds per step are measured, not modelled: a few steps of throwaway members shaped
like the run's, fitted the way the run will fit them (:func:`calibrate`), cached per machine
in ``$XDG_CACHE_HOME/dip/calibration.json`` (``~/.cache``), so a second run or ``dip run
--dry-run`` costs nothing. The estimate is the step budget times that: an upper bound where
the automatic stop ends a fit early. A task's last step without a network (denoising's Wiener
filter, :meth:`dip.tasks.Task.finish_seconds`) is timed on a crop and cached the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch

from dip import cgroups

#: peak memory of a step over the activations it saves (measured 1.75-2.0 on the CPU)
BACKWARD = 2.0
#: floats per weight a member keeps: weights, gradients, Adam's two moments, and the
#: divergence guard's two snapshots of weights and moments
FLOATS_PER_WEIGHT = 10
#: the memory a run needs beyond its fits (the interpreter, torch, the kernels' libraries),
#: where it cannot be read from the process itself
BASE_BYTES = 600 * 2 ** 20
#: calibration steps after one warm-up step
CALIBRATION_STEPS = 3


@dataclass(frozen=True)
class Estimate:
    """Seconds and peak bytes of a run, and where it runs."""

    seconds: float
    peak_bytes: int
    device: str

    def describe(self) -> str:
        # from the seconds as the record keeps them (to_dict): said before the run and in its
        # summary from the record, 3.46 s was 'about 3 s' and then 'about 4 s'
        seconds = round(self.seconds, 1)
        minutes = seconds / 60
        when = (f"about {minutes / 1440:.1f} days" if minutes >= 2 * 1440
                else f"about {minutes / 60:.1f} h" if minutes >= 90
                else f"about {minutes:.0f} min" if minutes >= 1.5
                else f"about {max(1, round(seconds))} s")
        return f"{when}, peak {in_gb(self.peak_bytes)[0]} GB on {self.device}"

    def to_dict(self) -> dict:
        return {"seconds": round(self.seconds, 1),
                "peak_gb": round(self.peak_bytes / 2 ** 30, 2), "device": self.device}


#: bytes saved per output pixel, per network signature and code width: measured once a
#: process (a batch of thousands of same-shaped jobs measures once)
_SAVED: dict[tuple[str, int], float] = {}


def _saved_per_pixel(build: Callable[[], torch.nn.Module], code_channels: int) -> float:
    net = build()
    # its own generator, as ``build``'s: the caller's random numbers stay as they were
    x = torch.rand(1, code_channels, 64, 64, dtype=torch.float32,
                   generator=torch.Generator().manual_seed(0))
    net.train()
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        # detached: a saved output that is the saving node's own output (a ReLU's) would
        # otherwise hold its node, a cycle in autograd's C++ graph the garbage collector
        # cannot see, which kept its activations alive: 8.5 MB a job in a dip run
        return t.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(x)
    return sum(storages.values()) / x[0, 0].numel()


def activation_bytes(signature: str, build: Callable[[], torch.nn.Module], code_channels: int,
                     pixels: int) -> int:
    """Bytes one step of the network ``build()`` saves for its backward pass on an output of
    ``pixels`` (measured once per ``signature`` and code width, on the CPU: a tensor's size
    is the same on every device). ``build`` draws from a generator of its own (a seed of
    :func:`dip.nets.build_net`), not torch's global one."""
    key = (signature, code_channels)
    if key not in _SAVED:
        if len(_SAVED) >= 64:  # signatures a long-lived process has seen: keep the latest
            _SAVED.pop(next(iter(_SAVED)))
        _SAVED[key] = _saved_per_pixel(build, code_channels)
    return int(_SAVED[key] * pixels)


def member_bytes(weights: int, out_channels: int, code_channels: int, pixels: int,
                 stop_bytes: int) -> int:
    """What one member keeps between steps: weights and optimiser state, the code (with its
    perturbed copy and the perturbation), its output and the output average, and what its stop
    rule keeps (``stop_bytes``: :meth:`dip.stopping.StopRule.memory`)."""
    return (FLOATS_PER_WEIGHT * 4 * weights + 3 * 4 * code_channels * pixels
            + 3 * 4 * out_channels * pixels + stop_bytes)


def in_gb(*counts: int) -> tuple[str, ...]:
    """Byte counts in GB, two decimals below 10 (a --max-memory of 0.55 GB is not 'over
    0.5 GB', nor a need of 0.84 GB one that 'fits in 0.8 GB'), one above."""
    return tuple(f"{n / 2 ** 30:.2f}" if n < 10 * 2 ** 30 else f"{n / 2 ** 30:.1f}"
                 for n in counts)


#: what a process's first fit adds to its resident memory and keeps (libraries and kernels
#: loaded on first use, their caches): 190-205 MB measured on the CPU with torch 2.14
#: (denoise, inpaint with either preset, superres), rounded up
FIRST_FIT_BYTES = 256 * 2 ** 20
_first_resident: list[int] = []


def process_bytes() -> int:
    """The base a run adds to: this process's resident memory now, less the lasting growth
    of its first fit (:data:`FIRST_FIT_BYTES`), and at least what it held when first asked;
    :data:`BASE_BYTES` where it cannot be read. A batch's later jobs are so laid out as the
    first was, and as ``--dry-run`` (which fits nothing) said: counted, that growth tiled or
    refused (over ``--max-memory``) every job after the first that the first's estimate had
    let through. The first fit's growth itself is within the margin the estimate errs high
    by (3.9 GB said, 3.25 GB peak RSS: benchmarks/README.md, "tiles.py large")."""
    now = _own_memory("rss")
    if now is None:
        return BASE_BYTES
    if not _first_resident:
        _first_resident.append(now)
    return max(_first_resident[0], now - FIRST_FIT_BYTES)


def _own_memory(kind: str) -> int | None:
    """This process's memory in bytes (psutil, on Linux, macOS and Windows alike): ``rss``
    what it holds in RAM, ``vms`` what it maps; None where it cannot be read."""
    with contextlib.suppress(psutil.Error, OSError):
        return int(getattr(psutil.Process().memory_info(), kind))
    return None


def free_bytes(device: torch.device) -> int | None:
    """Memory a run on ``device`` may hold: CUDA's free memory; on the CPU what this process
    holds (as a run's estimate counts it: :func:`process_bytes`) plus the least of what it
    may still take: the machine's available memory, its control groups' headroom
    (:func:`dip.cgroups.memory_headroom`: a container's or a cluster job's memory limit,
    which the machine's figure does not show: a run sized by it was killed without a word)
    and its address-space limit (``ulimit -v``) less what it maps. On Apple's GPU (``mps``,
    which shares the machine's memory) also no more than Metal's recommended working set
    less what its driver holds. None where none can be read."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    free = [_mem_available(), cgroups.memory_headroom(), _address_space_headroom()]
    if device.type == "mps":
        free.append(_metal_headroom())
    least = min((f for f in free if f is not None), default=None)
    return None if least is None else least + (_own_memory("rss") or 0)


def _mem_available() -> int | None:
    """The memory the machine can give without swapping: Linux's MemAvailable, and what
    macOS and Windows count as available (psutil)."""
    with contextlib.suppress(psutil.Error, OSError, AttributeError):
        return int(psutil.virtual_memory().available)
    return None


def _metal_headroom() -> int | None:
    """Metal's recommended working set less what its driver holds (torch 2.5 and later)."""
    with contextlib.suppress(AttributeError, RuntimeError):
        return max(0, int(torch.mps.recommended_max_memory())
                   - int(torch.mps.driver_allocated_memory()))
    return None


def _address_space_headroom() -> int | None:
    """``ulimit -v`` less this process's virtual size, or None where there is no limit."""
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    except (ImportError, OSError, ValueError):  # not Unix
        return None
    mapped = _own_memory("vms")
    if limit == resource.RLIM_INFINITY or mapped is None:
        return None
    return max(0, limit - mapped)


# --- time: measured steps, cached per machine --------------------------------------------------

def _cache_path() -> Path | None:
    """The calibration cache, None where there is no place for it: no ``XDG_CACHE_HOME`` and
    no home folder (a container run as a user id with no account and no ``HOME``, as
    OpenShift runs them: ``Path.home()`` raises). Each run then measures its own rate."""
    root = os.environ.get("XDG_CACHE_HOME")
    if not root or not os.path.isabs(root):  # a relative one is to be ignored (the XDG spec)
        try:
            home = Path.home()
        except (RuntimeError, KeyError):
            return None
        if not home.is_dir():  # not made: /nonexistent, the home of nobody, is not to exist
            return None
        root = home / ".cache"
    return Path(root) / "dip" / "calibration.json"


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} x{os.cpu_count()}"


#: more seconds than any step takes (a day): a cached figure past it is not a measurement
SANE_STEP_SECONDS = 86400.0


def calibrate(key: str, device: torch.device, run_steps: Callable[[int], float]) -> float:
    """Seconds per member-step of the fits ``key`` describes (network, size, members at once,
    threads), from the cache or measured: ``run_steps(n)`` fits throwaway members for ``n``
    steps each after their warm-up steps and returns the seconds per member-step of those."""
    cached = _read_cache().get(_full_key(key, device))
    # a number a step can take: a hand-edited or damaged cache's NaN, infinity or negative
    # (json writes and reads NaN) is measured again, not printed as "about nan days"
    if (isinstance(cached, (int, float)) and not isinstance(cached, bool)
            and 0 < cached < SANE_STEP_SECONDS):
        return float(cached)
    seconds = run_steps(CALIBRATION_STEPS)
    remember(key, device, seconds)
    return seconds


def remember(key: str, device: torch.device, seconds: float) -> None:
    """Cache ``seconds`` per member-step for the fits ``key`` describes: a calibration's, or a
    real run's own rate afterwards (:func:`dip.run.fit_stage`), so that one calibration made
    while other processes held the cores does not mislead every later estimate."""
    path = _cache_path()
    if path is None:
        return
    # one thread at a time reads, adds and writes: runs in threads of one process (a server)
    # shared the temporary name and cut each other's writes short, and the next read of the
    # broken file found nothing. (Two processes may still lose one's entry to the other's
    # write: a recalibration, never a wrong figure.)
    with _cache_lock, contextlib.suppress(OSError):  # not written: a recalibration
        cache = _read_cache()
        full = _full_key(key, device)
        cache.pop(full, None)  # last, as the newest: the file lists them oldest first
        cache[full] = seconds
        for old in list(cache)[:-CACHE_MOST]:  # (one a picture size: they were never dropped)
            del cache[old]
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f".{path.name}.{os.getpid()}.part")
        try:
            part.write_text(json.dumps(cache, indent=1) + "\n")
            part.replace(path)
        finally:  # a write that failed (a full disk, ulimit -f) leaves no part file behind
            part.unlink(missing_ok=True)


_cache_lock = threading.Lock()
#: the most rates the cache keeps (about 400 bytes each), the ones written last
CACHE_MOST = 1000


def _full_key(key: str, device: torch.device) -> str:
    return f"{_machine(device)}|torch {torch.__version__}|{key}"


def _read_cache() -> dict[str, float]:
    path = _cache_path()
    if path is None:
        return {}
    with contextlib.suppress(OSError, ValueError):
        cache = json.loads(path.read_text())
        if isinstance(cache, dict):
            return cache
    return {}


def timed_steps(fit_steps: Callable[[Callable[[], None], int], None], members: int,
                warm: int = 1) -> Callable[[int], float]:
    """Wrap ``fit_steps(on_step, n)`` (fits ``members`` members n steps each, calling
    ``on_step()`` after each member-step) as :func:`calibrate`'s ``run_steps``: the rate from
    the end of the members' ``warm`` first steps (allocations, the kernels' first choices, a
    CUDA graph's capture: :func:`dip.engine.warm_steps`) to the end of the last."""
    def run(n: int) -> float:
        marks: list[float] = []
        fit_steps(lambda: marks.append(time.perf_counter()), warm + n)
        timed = marks[members * warm - 1:]
        return (timed[-1] - timed[0]) / (len(timed) - 1) if len(timed) > 1 else 0.0
    return run
