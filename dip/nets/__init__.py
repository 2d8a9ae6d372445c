"""Generators behind one registry: ``build_net(name, in_channels, out_channels, **options)``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from dip.errors import ConfigError
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
    with torch.device("meta"):
        build_net(name, 1, 1, **options)
    if len(_PASSED) >= 256:  # a long-lived process trying many networks
        _PASSED.clear()
    _PASSED.add(key)


#: the networks :func:`check_net` passed, by their name and options' repr
_PASSED: set[str] = set()


def build_net(name: str, in_channels: int, out_channels: int, **options) -> nn.Module:
    """Build the generator registered under ``name``.

    Raises:
        ConfigError: ``name`` is not registered, or an option is invalid.
    """
    try:
        factory = NETS[name]
    except KeyError:
        raise ConfigError(f"unknown net.name {name!r}; known nets: "
                          f"{', '.join(sorted(NETS))}") from None
    try:
        return factory(in_channels, out_channels, **options)
    except TypeError as exc:  # an option this network does not take
        raise ConfigError(f"net {name}: {exc}") from None


__all__ = ["NETS", "SkipNet", "build_net", "check_net"]
