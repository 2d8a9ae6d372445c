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
    """Check a network's name and options without allocating it (built on the meta device).

    Raises:
        ConfigError: naming the ``net.*`` key.
    """
    with torch.device("meta"):
        build_net(name, 1, 1, **options)


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
