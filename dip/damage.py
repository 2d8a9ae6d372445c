"""Test inputs made from a clean image (``dip corrupt``): each task's kinds of damage
(:attr:`dip.tasks.Task.corruptions`), applied with a seeded generator."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from dip import image
from dip.config import python_number
from dip.errors import InputError
from dip.fitting import check_default_device
from dip.run import check_written, warn_of_what_the_format_drops, write_files
from dip.tasks import TASKS, Corruption


def corruptions() -> dict[str, Corruption]:
    """Every registered kind of damage, by its option's name, in the order they apply."""
    found = [c for task in TASKS.values() for c in task.corruptions]
    return {c.option.name: c for c in sorted(found, key=lambda c: c.order)}


def corrupt(clean: str | os.PathLike, output: str | os.PathLike, *, seed: int = 0,
            overwrite: bool = False, max_pixels: int = image.DEFAULT_MAX_PIXELS,
            **damage: Any) -> dict[str, Any]:
    """Make a test input from a clean image: one kind of damage (``noise=25``,
    ``drop_pixels=0.5``, ``downscale=4``, ...; see :func:`corruptions`), or one followed by
    those it may precede (noise after a blur). A clean image over ``max_pixels`` is refused,
    as the restoring commands refuse one; what the output's format cannot hold of it (16
    bits in a JPEG, transparency) is warned of, as theirs is.

    Returns:
        ``{"image": path}``, plus the extra files written (``"mask"`` for drop_pixels) and
        facts such as ``"cropped_to": (H, W)`` when downscaling had to crop.
    """
    kinds = corruptions()
    unknown = [name for name in damage if name not in kinds]
    if unknown:
        raise InputError(f"unknown kind of damage {unknown[0]!r}; known: {', '.join(kinds)}")
    chosen = [kinds[name] for name in kinds if damage.get(name) is not None]
    names = ", ".join(f"{{arg:{name}}}" for name in kinds)
    # one kind, or one followed only by kinds that may follow it (noise after a blur)
    if not chosen or any(chosen[0].option.name not in c.after for c in chosen[1:]):
        got = ", ".join(f"{{arg:{c.option.name}}}" for c in chosen)
        pairs = "".join(f", or {{arg:{first}}} then {{arg:{c.option.name}}}"
                        for c in kinds.values() for first in c.after)
        raise InputError(f"give one kind of damage: one of {names}{pairs}"
                         + (f" (got {got})" if chosen else ""))
    for c in chosen:
        c.option.check(damage[c.option.name])
    overwrite, seed, max_pixels = _checked(clean, output, overwrite, seed, max_pixels)
    check_default_device()
    clean, output = Path(clean), Path(output)
    picture = image.load_image(clean, max_pixels=max_pixels)
    generator = torch.Generator().manual_seed(seed)
    extra_files: dict[str, tuple[Path, image.Picture]] = {}
    facts: dict[str, Any] = {}
    for c in chosen:
        picture, files, notes = c.apply(picture, damage[c.option.name], generator, output)
        extra_files.update(files)
        facts.update(notes)
    targets = [output] + [path for path, _ in extra_files.values()]
    for path in targets:
        image.output_format(path)
    # a damage's value may name a file it reads (a kernel image for --blur): never written
    reads = [Path(v) for v in (damage[c.option.name] for c in chosen)
             if isinstance(v, (str, os.PathLike)) and Path(v).is_file()]
    check_written(targets, [clean, *reads], overwrite)
    warn_of_what_the_format_drops(output, picture)
    write_files([(output, picture)] + list(extra_files.values()))
    return {"image": output, **{name: path for name, (path, _) in extra_files.items()},
            **facts}


def _checked(clean: Any, output: Any, overwrite: Any, seed: Any,
             max_pixels: Any) -> tuple[bool, int, int]:
    """:func:`corrupt`'s arguments but the damage, checked (numpy's numbers as Python's)."""
    for name, value in (("clean", clean), ("output", output)):
        if not isinstance(value, (str, os.PathLike)):
            raise InputError(f"{name} must be a path to an image file, got "
                             f"{type(value).__name__}")
    overwrite = python_number(overwrite)  # numpy's bool as Python's
    if not isinstance(overwrite, bool):  # "no" is true
        raise InputError(f"overwrite must be True or False, got {type(overwrite).__name__} "
                         f"{overwrite!r}")
    seed, max_pixels = python_number(seed), python_number(max_pixels)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 63:
        raise InputError(f"{{arg:seed}} must be a whole number in 0 .. 2**63-1, got {seed!r}")
    if not isinstance(max_pixels, int) or isinstance(max_pixels, bool) or max_pixels < 1:
        raise InputError(f"{{arg:max_pixels}} must be a whole number >= 1, got "
                         f"{max_pixels!r}")
    return overwrite, seed, max_pixels
