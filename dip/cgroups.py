"""What this process's control groups allow it: a container's (Docker, Kubernetes) or a
cluster job's (Slurm) memory limit and CPU quota, which the machine-wide figures a process
sees otherwise (``/proc/meminfo``, the CPUs it may run on) do not show.

Both cgroup versions are read: v2's one tree (``memory.max``, ``cpu.max``; every group from
the process's own up to the root binds it, so the tightest decides) and v1's per-controller
trees (the memory controller's ``hierarchical_memory_limit``; the cpu controller's CFS quota).
Inside a container ``/proc/self/cgroup`` may name the host's path, which the container's
mount does not show: the mount's root is then the process's group. Where nothing can be read
(not Linux, no cgroups mounted) every answer is None: no limit known.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
MEMBERSHIP = Path("/proc/self/cgroup")
#: a cgroup v1 memory limit this high is no limit (the kernel's "unlimited", page-rounded)
_NO_LIMIT = 2 ** 62


def memory_headroom(root: Path = ROOT, membership: Path = MEMBERSHIP) -> int | None:
    """Bytes this process's groups may still take: each limit less its group's usage, where
    the page cache the group could drop (its inactive files, as ``docker stats`` counts them)
    is free; the least over the groups with a limit, None where none has one."""
    with contextlib.suppress(OSError, ValueError):
        if (folder := _v1_group(root, membership, "memory")) is not None:
            stat = _stat(folder)
            limit = min(int(_read(folder, "memory.limit_in_bytes")),
                        stat.get("hierarchical_memory_limit", _NO_LIMIT))
            if limit >= _NO_LIMIT:
                return None
            used = int(_read(folder, "memory.usage_in_bytes"))
            return max(0, limit - used + stat.get("total_inactive_file", 0))
        rooms = [max(0, int(limit) - int(_read(folder, "memory.current"))
                     + _stat(folder).get("inactive_file", 0))
                 for folder in _v2_groups(root, membership)
                 if (limit := _read(folder, "memory.max", "max")) != "max"]
        return min(rooms, default=None)
    return None


def cpu_quota(root: Path = ROOT, membership: Path = MEMBERSHIP) -> int | None:
    """The CPUs' worth of time this process's groups may use (a CFS quota: ``docker run
    --cpus 2``, a Kubernetes CPU limit), rounded up; the least over the groups with a
    quota, None where none has one. A quota is not a set of cores: a process that runs more
    threads than it allows is stopped for the rest of each period once it has used it up."""
    with contextlib.suppress(OSError, ValueError):
        if (folder := _v1_group(root, membership, "cpu")) is not None:
            quota = int(_read(folder, "cpu.cfs_quota_us", "-1"))
            period = int(_read(folder, "cpu.cfs_period_us", "100000"))
            return max(1, math.ceil(quota / period)) if quota > 0 and period > 0 else None
        quotas = []
        for folder in _v2_groups(root, membership):
            quota, _, period = _read(folder, "cpu.max", "max").partition(" ")
            if quota != "max" and int(period or 100000) > 0:
                quotas.append(max(1, math.ceil(int(quota) / int(period or 100000))))
        return min(quotas, default=None)
    return None


def _lines(membership: Path) -> list[tuple[list[str], str]]:
    """``/proc/self/cgroup``: ``ID:CONTROLLERS:PATH`` lines as (controllers, path)."""
    lines = []
    for line in membership.read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        lines.append((controllers.split(",") if controllers else [], path))
    return lines


def _folder(mount: Path, path: str) -> Path:
    folder = mount / path.lstrip("/")
    return folder if folder.is_dir() else mount


def _v1_group(root: Path, membership: Path, controller: str) -> Path | None:
    """The v1 folder of ``controller`` for this process, None where v1 does not run it (a
    v2 line stands beside v1 controllers on hybrid systems: v1's is taken first)."""
    for controllers, path in _lines(membership):
        if controller in controllers:  # mounted alone, or with others as cpu,cpuacct
            mount = root / controller
            return _folder(mount if mount.is_dir() else root / ",".join(controllers), path)
    return None


def _v2_groups(root: Path, membership: Path) -> Iterator[Path]:
    """This process's v2 group and each group above it, up to the root."""
    if not (root / "cgroup.controllers").is_file():
        return
    for controllers, path in _lines(membership):
        if not controllers:
            folder = _folder(root, path)
            while True:
                yield folder
                if folder == root or root not in folder.parents:
                    return
                folder = folder.parent


def _read(folder: Path, name: str, missing: str | None = None) -> str:
    path = folder / name
    if missing is not None and not path.is_file():
        return missing
    return path.read_text().strip()


def _stat(folder: Path) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in
                                   _read(folder, "memory.stat", "").splitlines())}
