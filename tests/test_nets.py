"""The paper's skip network: shapes for any size, the paper's size, configuration errors."""

from __future__ import annotations

import re

import pytest
import torch

from dip.errors import ConfigError
from dip.nets import SkipNet, build_net

SMALL = dict(channels_down=[8, 8, 8], channels_up=[8, 8, 8], channels_skip=[2, 2, 2])


@pytest.mark.parametrize("size", [(37, 23), (32, 32), (9, 50), (1, 1)])
def test_output_has_the_input_size_for_any_size(size: tuple[int, int]) -> None:
    net = build_net("skip", 4, 3, **SMALL)
    out = net(torch.rand(1, 4, *size))
    assert out.shape == (1, 3, *size)
    assert 0 <= out.min() and out.max() <= 1  # sigmoid output


def test_paper_configuration_has_about_2_2_million_parameters() -> None:
    net = build_net("skip", 32, 3)  # 5 scales x 128 channels, 4 skip channels
    n = sum(p.numel() for p in net.parameters())
    assert 2.1e6 < n < 2.3e6


@pytest.mark.parametrize("options", [
    dict(channels_skip=[0, 0, 0]),  # the paper's hourglass
    dict(upsample="nearest", downsample="avg", padding="zero", activation="relu"),
    dict(downsample="max", upsample="bicubic", padding="replicate", need1x1_up=False),
])
def test_variants_are_the_same_class(options: dict) -> None:
    net = SkipNet(2, 1, **{**SMALL, **options})
    assert net(torch.rand(1, 2, 24, 40)).shape == (1, 1, 24, 40)


def test_hourglass_has_no_skip_branches() -> None:
    net = SkipNet(2, 1, **{**SMALL, "channels_skip": [0, 0, 0]})
    assert all(m.skip is None for m in net.modules() if hasattr(m, "skip"))


@pytest.mark.parametrize("options, message", [
    (dict(channels_down=[8, 8]), "same length"),
    (dict(padding="mirror"), "net.padding must be one of reflection"),
    (dict(upsample="magic"), "net.upsample"),
    (dict(channels_up=[8, 0, 8]), "net.channels_up. holds widths of at least 1"),
])
def test_invalid_options_raise_config_errors(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SkipNet(2, 3, **{**SMALL, **options})


def test_unknown_net_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="known nets: skip"):
        build_net("resnet", 2, 3)


@pytest.mark.parametrize("args, options, words", [
    (("skip", "8", 3), {}, "in_channels must be a whole number >= 1, got str '8'"),
    (("skip", 8, 0), {}, "out_channels must be a whole number >= 1, got int 0"),
    (("skip", 8, 3), {"seed": "0"}, "seed must be a whole number in 0 .. 2**63-1 (or None)"),
    (("skip", 8, 3), {"seed": -1}, "seed must be a whole number in 0 .. 2**63-1"),
    (("skip", 8, 3), {"device": "gpu"}, "no such device 'gpu': "),
])
def test_build_nets_arguments_are_checked(args: tuple, options: dict, words: str) -> None:
    """They were a garbled ConfigError ("not all arguments converted during string
    formatting"), torch's RuntimeError, or a network of no channels."""
    from dip.errors import InputError

    with pytest.raises(InputError, match=re.escape(words)):
        build_net(*args, **options)


def test_build_net_takes_numpys_numbers() -> None:
    import numpy as np

    made = build_net("skip", np.int64(4), 3, seed=np.int64(1), **SMALL)
    again = build_net("skip", 4, 3, seed=1, **SMALL)
    assert all(torch.equal(a, b) for a, b in zip(made.parameters(), again.parameters()))


@pytest.mark.parametrize("kernels", [{"kernel_down": 5}, {"kernel_down": 31},
                                     {"kernel_up": 31}, {"kernel_skip": 31}])
def test_a_large_kernel_works_on_a_small_image(kernels: dict) -> None:
    # a reflected pad longer than the coarsest scale's side was torch's RuntimeError
    net = SkipNet(4, 3, channels_down=[4] * 5, channels_up=[4] * 5, channels_skip=[2] * 5,
                  **kernels)
    assert net(torch.rand(1, 4, 48, 64)).shape == (1, 3, 48, 64)


def test_a_kernel_past_the_largest_is_refused() -> None:
    with pytest.raises(ConfigError, match="'net.kernel_down' must be an odd size from 1 to 31"):
        SkipNet(4, 3, kernel_down=33)


def test_check_net_builds_each_passing_network_once(monkeypatch) -> None:
    # a batch resolves every job's config up to three times: building the network on the
    # meta device each time was most of a resumed batch's time (200 jobs done: 8.3 s, 3.9 s)
    import dip.nets as nets

    built = []
    real = nets.build_net
    monkeypatch.setattr(nets, "_PASSED", set())
    monkeypatch.setattr(nets, "build_net", lambda *a, **k: built.append(a) or real(*a, **k))
    for _ in range(3):
        nets.check_net("skip", channels_down=[8] * 5, channels_up=[8] * 5, channels_skip=[4] * 5)
    assert len(built) == 1
    nets.check_net("skip", channels_down=[8] * 4, channels_up=[8] * 4, channels_skip=[4] * 4)
    assert len(built) == 2
    with pytest.raises(ConfigError):  # a refusal is not remembered as a pass
        nets.check_net("skip", no_such_option=1)
    with pytest.raises(ConfigError):
        nets.check_net("skip", no_such_option=1)
