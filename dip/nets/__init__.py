"""Generators behind one registry: ``build_net(name, in_channels, out_channels, **options)``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from dip.errors import ConfigError
from dip.nets.skip import SkipNet

NETS: dict[str, Callable[..., nn.Module]] = {
    "skip": SkipNet,
}


def build_net(name: str, in_channels: int, out_channels: int, **options) -> nn.Module:
    """Build the generator registered under ``name``.

    Raises:
        ConfigError: ``name`` is not registered, or an option is invalid.
    """
    try:
        factory = NETS[name]
    except KeyError:
        raise ConfigError(f"unknown net {name!r}; known nets: {', '.join(sorted(NETS))}") from None
    return factory(in_channels, out_channels, **options)


__all__ = ["NETS", "SkipNet", "build_net"]
