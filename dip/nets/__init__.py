"""Generators behind one registry: ``build_net(name, in_channels, out_channels, **options)``."""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from dip.errors import ConfigError, InputError
from dip.nets.skip import SkipNet

NETS: dict[str, Callable[..., nn.Module]] = {
    "skip": SkipNet,
}


def check_net(name: str, **options) -> None:
    """Check a network's name and options without allocating it (built on the meta device;
    each passing set once a process: a batch resolves every job's config up to three times,
    and building the paper's network took 11 ms of a resumed job's 31).

    Raises:
        ConfigError: naming the ``net.*`` key.
    """
    key = repr((name, sorted(options.items())))
    if key in _PASSED:
        return
    build_net(name, 1, 1, device="meta", **options)
    if len(_PASSED) >= 256:  # a long-lived process trying many networks
        _PASSED.clear()
    _PASSED.add(key)


#: the networks :func:`check_net` passed, by their name and options' repr
_PASSED: set[str] = set()


def build_net(name: str, in_channels: int, out_channels: int, *, seed: int | None = None,
              device: str | torch.device = "cpu", **options) -> nn.Module:
    """Build the generator registered under ``name``: float32 on ``device`` (``"meta"``: its
    shapes only, nothing allocated) whatever default dtype and device the caller set for
    torch, initialised as torch initialises its layers, from a generator seeded with ``seed``
    (the same weights as after ``torch.manual_seed(seed)`` on the CPU, on every device;
    torch's global generator, which another thread may be drawing from, is neither read nor
    moved), or from the global generator without one.

    Raises:
        ConfigError: ``name`` is not registered, or an option is invalid.
        InputError: the channels are not whole numbers >= 1, ``seed`` is not one of
            0 .. 2**63-1 (or None), or ``device`` names no device.
    """
    try:
        factory = NETS[name]
    except KeyError:
        raise ConfigError(f"unknown net.name {name!r}; known nets: "
                          f"{', '.join(sorted(NETS))}") from None
    _check_arguments(in_channels, out_channels, seed)
    generator = None if seed is None else torch.Generator().manual_seed(int(seed))
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:  # "gpu", 5.0: torch's own words
        raise InputError(f"build_net(): no such device {device!r}: "
                         f"{(str(exc).splitlines() or [type(exc).__name__])[0][:200]}") from None
    try:  # made on the CPU, where the generator draws, and moved
        with _Making(generator, device if device.type == "meta" else torch.device("cpu")):
            net = factory(in_channels, out_channels, **options)
    except TypeError as exc:  # an option this network does not take
        raise ConfigError(f"net {name}: {exc}") from None
    return net if device.type in ("meta", "cpu") else net.to(device)


def _check_arguments(in_channels: object, out_channels: object, seed: object) -> None:
    """:func:`build_net`'s numbers: a string's was a garbled ConfigError ("not all arguments
    converted"), a seed's a RuntimeError of torch's, and 0 channels made a network."""
    def whole(value: object) -> bool:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)

    for name, value, ok, what in (
            ("in_channels", in_channels, whole(in_channels) and in_channels >= 1,
             "a whole number >= 1"),
            ("out_channels", out_channels, whole(out_channels) and out_channels >= 1,
             "a whole number >= 1"),
            ("seed", seed, seed is None or whole(seed) and 0 <= seed < 2 ** 63,
             "a whole number in 0 .. 2**63-1 (or None)")):
        if not ok:
            raise InputError(f"build_net(): {name} must be {what}, got "
                             f"{type(value).__name__} {value!r}"[:200])


class _Making(TorchFunctionMode):
    """While a network is made: the floating tensors made without a dtype or device (by the
    functions of ``_MADE``: torch's layers' parameters and buffers) are float32 on
    ``device``, and random numbers drawn without a generator (torch.nn.init's functions,
    those of ``_RANDOM``) come from ``generator``. A torch function mode holds for this thread
    only: what other threads make or draw meanwhile is untouched."""

    _RANDOM = (torch.Tensor.uniform_, torch.Tensor.normal_, torch.Tensor.bernoulli_,
               torch.Tensor.random_, torch.Tensor.exponential_, torch.rand, torch.randn,
               torch.randint, torch.randperm, torch.normal, torch.bernoulli)
    _MADE = (torch.empty, torch.zeros, torch.ones, torch.rand, torch.randn)

    def __init__(self, generator: torch.Generator | None, device: torch.device) -> None:
        super().__init__()
        self.generator, self.device = generator, device

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in self._MADE:
            kwargs["dtype"] = kwargs.get("dtype") or torch.float32
            kwargs["device"] = kwargs.get("device") or self.device
        if (func in self._RANDOM or "generator" in kwargs) and kwargs.get("generator") is None \
                and self.generator is not None:
            kwargs["generator"] = self.generator
        return func(*args, **kwargs)


__all__ = ["NETS", "SkipNet", "build_net", "check_net"]
