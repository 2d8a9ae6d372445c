"""The tiler: tiles cover the image with the overlap asked for, and blending tiles that return
their input gives the image back exactly, at any size."""

from __future__ import annotations

import pytest
import torch

from dip.tiles import Blend, Tile, grid, window


def _reassembled(image: torch.Tensor, tiles: list[Tile], scale: int = 1) -> torch.Tensor:
    blend = Blend((1, image.shape[1], image.shape[-2] * scale, image.shape[-1] * scale))
    for t in tiles:
        piece = t.crop(image)
        if scale > 1:
            piece = piece.repeat_interleave(scale, -2).repeat_interleave(scale, -1)
        blend.add(t.scaled(scale), piece)
    return blend.result()


@pytest.mark.parametrize("size", [(128, 128), (97, 131), (300, 41), (17, 17), (257, 500)])
@pytest.mark.parametrize("tile,overlap", [(64, 8), (128, 32), (33, 16)])
def test_tiles_that_return_their_input_blend_back_to_the_image(size, tile, overlap) -> None:
    image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    tiles = grid(size, tile, overlap)
    assert torch.allclose(_reassembled(image, tiles), image, atol=1e-6)


def test_every_pixel_is_covered_and_neighbours_share_the_overlap() -> None:
    tiles = grid((300, 200), 64, 16)
    covered = torch.zeros(300, 200, dtype=torch.int32)
    for t in tiles:
        assert t.height == 64 and t.width == 64
        t.crop(covered[None, None])[...] += 1
    assert covered.min() >= 1
    tops = sorted({t.top for t in tiles})
    assert tops[0] == 0 and tops[-1] + 64 == 300
    assert all(b - a <= 64 - 16 for a, b in zip(tops, tops[1:]))  # overlap >= 16


def test_a_tile_larger_than_the_image_is_the_image() -> None:
    assert grid((40, 30), 128, 16) == [Tile(0, 0, 40, 30)]
    assert torch.equal(window(Tile(0, 0, 40, 30)), torch.ones(40, 30))


def test_the_weights_of_two_neighbours_sum_to_one_across_their_overlap() -> None:
    a, b = grid((64, 112), 64, 16)  # two tiles side by side, overlapping by 16
    assert (a.left, b.left, a.ramps[3], b.ramps[2]) == (0, 48, 16, 16)
    wa, wb = window(a), window(b)
    assert torch.allclose(wa[:, 48:] + wb[:, :16], torch.ones(64, 16), atol=1e-6)
    assert wa[:, 0].eq(1).all() and wa[:, -1].lt(0.01).all()  # 1 at the image's border


def test_super_resolution_tiles_scale_with_the_factor() -> None:
    small = torch.rand(1, 1, 50, 70, generator=torch.Generator().manual_seed(1))
    tiles = grid((50, 70), 32, 8)
    big = _reassembled(small, tiles, scale=4)
    assert big.shape == (1, 1, 200, 280)
    assert torch.allclose(big, small.repeat_interleave(4, -2).repeat_interleave(4, -1),
                          atol=1e-6)


@pytest.mark.parametrize("tile,overlap", [(64, 32), (64, -1), (0, 0)])
def test_an_overlap_of_half_a_tile_or_more_is_refused(tile: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="overlap"):
        grid((100, 100), tile, overlap)
