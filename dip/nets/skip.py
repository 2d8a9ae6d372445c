"""The paper's encoder–decoder generator with skip connections ("skip").

Ulyanov et al., "Deep Image Prior", CVPR 2018, supplementary Fig. 1: ``n`` scales, each going
down through a stride-2 convolution and coming back up through an upsampling layer, with an
optional 1×1 "skip" branch at every scale concatenated into the decoder. With every skip width
set to 0 the network is the paper's hourglass; with skip widths > 0 it is the U-Net-like variant
the paper uses for most tasks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from dip.errors import ConfigError

#: the largest convolution a user may ask for: each scale pads its input to hold it
MAX_KERNEL = 31
# Padding names as a user writes them -> torch's Conv2d padding_mode.
PADDING_MODES = {"reflection": "reflect", "zero": "zeros", "replicate": "replicate"}
UPSAMPLE_MODES = ("bilinear", "nearest", "bicubic")
DOWNSAMPLE_MODES = ("stride", "avg", "max")
ACTIVATIONS = {
    # LeakyReLU(0.2): the paper's supplementary material, Sec. "Architectures".
    "leaky_relu": lambda: nn.LeakyReLU(0.2, inplace=True),
    "relu": lambda: nn.ReLU(inplace=True),
    "elu": lambda: nn.ELU(inplace=True),
    "silu": lambda: nn.SiLU(inplace=True),
}


def _conv_block(c_in: int, c_out: int, kernel: int, padding: str, activation: str,
                stride: int = 1, downsample: str = "stride") -> nn.Sequential:
    """conv → BatchNorm → activation; ``stride=2`` halves the size the chosen way."""
    layers: list[nn.Module] = []
    conv_stride = stride
    if stride > 1 and downsample != "stride":
        # Pooling does the downsampling; the conv keeps the size.
        layers.append(nn.AvgPool2d(stride) if downsample == "avg" else nn.MaxPool2d(stride))
        conv_stride = 1
    layers += [
        # A 1×1 conv pads nothing; with a non-zero padding_mode torch would still copy the
        # input through an empty pad (and back in the backward pass), so skip it there.
        nn.Conv2d(c_in, c_out, kernel, stride=conv_stride, padding=kernel // 2,
                  padding_mode=PADDING_MODES[padding] if kernel > 1 else "zeros"),
        nn.BatchNorm2d(c_out),
        ACTIVATIONS[activation](),
    ]
    return nn.Sequential(*layers)


class _Scale(nn.Module):
    """One scale of the hourglass: ``cat(skip(x), up(deeper(down(x))))`` → decoder convs."""

    def __init__(self, c_in: int, down: int, up_out: int, skip: int, deeper: nn.Module | None,
                 deeper_out: int, *, kernel_down: int, kernel_up: int, kernel_skip: int,
                 padding: str, activation: str, upsample: str, downsample: str,
                 need1x1_up: bool) -> None:
        super().__init__()
        self.skip = (_conv_block(c_in, skip, kernel_skip, padding, activation)
                     if skip > 0 else None)
        self.down = nn.Sequential(
            _conv_block(c_in, down, kernel_down, padding, activation, stride=2,
                        downsample=downsample),
            _conv_block(down, down, kernel_down, padding, activation),
        )
        self.deeper = deeper
        self.upsample = upsample
        merged = skip + deeper_out
        decoder: list[nn.Module] = [nn.BatchNorm2d(merged),
                                    _conv_block(merged, up_out, kernel_up, padding, activation)]
        if need1x1_up:
            decoder.append(_conv_block(up_out, up_out, 1, padding, activation))
        self.decoder = nn.Sequential(*decoder)

    def extra_repr(self) -> str:
        # the one choice of this module that is not a submodule (a stack compares reprs)
        return f"upsample={self.upsample}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.down(x)
        if self.deeper is not None:
            y = self.deeper(y)
        align = False if self.upsample in ("bilinear", "bicubic") else None
        y = F.interpolate(y, size=x.shape[-2:], mode=self.upsample, align_corners=align)
        if self.skip is not None:
            y = torch.cat([self.skip(x), y], dim=1)
        return self.decoder(y)


class SkipNet(nn.Module):
    """Encoder–decoder with skip connections mapping a code ``z`` to an image.

    Args:
        in_channels: channels of the input code ``z`` (the paper: 32).
        out_channels: image channels (1 gray, 3 colour).
        channels_down, channels_up, channels_skip: widths per scale, finest first (the paper:
            ``[128]*5``, ``[128]*5``, ``[4]*5``). All three must have the same length, the
            number of scales.
        kernel_down, kernel_up, kernel_skip: convolution sizes (the paper: 3, 3, 1).
        upsample: ``bilinear`` | ``nearest`` | ``bicubic``.
        downsample: ``stride`` (stride-2 convolution, the paper) | ``avg`` | ``max``.
        padding: ``reflection`` (the paper) | ``zero`` | ``replicate``.
        activation: ``leaky_relu`` (0.2, the paper) | ``relu`` | ``elu`` | ``silu``.
        need1x1_up: a 1×1 conv block after each decoder conv (the paper's default).
        sigmoid: squash the output to [0, 1].

    Any spatial size works: the input is reflection-padded up to a multiple of 2**scales (at
    least 2 pixels at the coarsest scale, more for kernels larger than 3) and the output
    cropped back, so every scale halves exactly.

    Shape:
        - Input: ``(N, in_channels, H, W)``
        - Output: ``(N, out_channels, H, W)``
    """

    def __init__(self, in_channels: int, out_channels: int, *,
                 channels_down: Sequence[int] = (128,) * 5,
                 channels_up: Sequence[int] = (128,) * 5,
                 channels_skip: Sequence[int] = (4,) * 5,
                 kernel_down: int = 3, kernel_up: int = 3, kernel_skip: int = 1,
                 upsample: str = "bilinear", downsample: str = "stride",
                 padding: str = "reflection", activation: str = "leaky_relu",
                 need1x1_up: bool = True, sigmoid: bool = True) -> None:
        super().__init__()
        n = len(channels_down)
        if n == 0 or len(channels_up) != n or len(channels_skip) != n:
            raise ConfigError(
                "net.channels_down, net.channels_up and net.channels_skip must be non-empty "
                f"lists of the same length (got {len(channels_down)}, {len(channels_up)}, "
                f"{len(channels_skip)})")
        for key, widths, least in (("net.channels_down", channels_down, 1),
                                   ("net.channels_up", channels_up, 1),
                                   ("net.channels_skip", channels_skip, 0)):
            if min(widths) < least:
                raise ConfigError(f"config key '{key}' holds widths of at least {least}, got "
                                  f"{list(widths)}")
        for name, value in (("net.kernel_down", kernel_down), ("net.kernel_up", kernel_up),
                            ("net.kernel_skip", kernel_skip)):
            if value < 1 or value % 2 == 0 or value > MAX_KERNEL:
                raise ConfigError(f"config key '{name}' must be an odd size from 1 to "
                                  f"{MAX_KERNEL} (the output keeps the input's size), got "
                                  f"{value}")
        for name, value, allowed in (("net.padding", padding, tuple(PADDING_MODES)),
                                     ("net.upsample", upsample, UPSAMPLE_MODES),
                                     ("net.downsample", downsample, DOWNSAMPLE_MODES),
                                     ("net.activation", activation, tuple(ACTIVATIONS))):
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)} (got {value!r})")
        self.scales = n
        # The side of the coarsest scale, at least: the second down conv runs there, the
        # first and the decoder's convs at twice it, and a reflected pad must be shorter than
        # the side it pads (BatchNorm needs 2 pixels anyway).
        self.least = max(2, kernel_down // 2 + 1, kernel_up // 4 + 1, kernel_skip // 4 + 1)
        common = dict(kernel_down=kernel_down, kernel_up=kernel_up, kernel_skip=kernel_skip,
                      padding=padding, activation=activation, upsample=upsample,
                      downsample=downsample, need1x1_up=need1x1_up)
        # Build from the coarsest scale outwards so each scale wraps the one below it.
        deeper: nn.Module | None = None
        for i in reversed(range(n)):
            c_in = in_channels if i == 0 else channels_down[i - 1]
            deeper_out = channels_up[i + 1] if i + 1 < n else channels_down[i]
            deeper = _Scale(c_in, channels_down[i], channels_up[i], channels_skip[i], deeper,
                            deeper_out, **common)
        self.body = deeper
        head: list[nn.Module] = [nn.Conv2d(channels_up[0], out_channels, 1)]
        if sigmoid:
            head.append(nn.Sigmoid())
        self.head = nn.Sequential(*head)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h, w = z.shape[-2:]
        m = 2 ** self.scales
        # Pad to a multiple of 2**scales, and to at least ``least`` pixels at the coarsest
        # scale (2: BatchNorm needs more than one value per channel there).
        least = self.least * m
        ph, pw = max((-h) % m, least - h), max((-w) % m, least - w)
        if ph or pw:
            # Reflection needs the pad to be smaller than the side; replicate covers the rest.
            mode = "reflect" if ph < h and pw < w else "replicate"
            z = F.pad(z, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode=mode)
        out = self.head(self.body(z))
        if ph or pw:
            out = out[..., ph // 2: ph // 2 + h, pw // 2: pw // 2 + w]
        return out
