"""A run's members (restarts x tiles): their seeds, and how their images make the result."""

from __future__ import annotations

import pytest
import torch

from dip.errors import RunError
from dip.fitting import FitResult
from dip.members import Part, combine, parts, uncertainty_map
from dip.tiles import grid


def _result(image: torch.Tensor) -> FitResult:
    return FitResult(image, 10, 10, "budget")


def test_restart_zero_of_the_whole_image_keeps_the_runs_seed_the_others_differ() -> None:
    seeds = [p.seed(7) for p in parts(3, None)]
    assert seeds[0] == 7 and len(set(seeds)) == 3
    tiles = grid((100, 100), 64, 8)
    tiled = [p.seed(7) for p in parts(2, tiles)]
    assert len(set(tiled)) == len(tiled) == 2 * len(tiles)
    assert Part(1, tiles[2]).seed(7) == parts(5, tiles)[2 * 5 + 1].seed(7)  # what, not how many


def test_restarts_are_averaged_and_their_spread_is_the_uncertainty() -> None:
    a, b = torch.full((1, 3, 8, 8), 0.2), torch.full((1, 3, 8, 8), 0.6)
    out = combine(parts(2, None), [_result(a), _result(b)], (1, 3, 8, 8))
    assert torch.allclose(out.image, torch.full((1, 3, 8, 8), 0.4))
    assert torch.allclose(out.spread, torch.full((1, 3, 8, 8), 0.4 / 2 ** 0.5))
    assert torch.allclose(uncertainty_map(out.spread), torch.ones(1, 1, 8, 8))  # 4 x 0.28 > 1
    single = combine(parts(1, None), [_result(a)], (1, 3, 8, 8))
    assert single.spread is None and torch.equal(single.image, a)


def test_tiles_blend_into_the_whole_and_a_failed_restart_is_left_out() -> None:
    image = torch.rand(1, 1, 40, 70, generator=torch.Generator().manual_seed(0))
    tiles = grid((40, 70), 32, 8)
    members = parts(2, tiles)
    outcomes = [RunError("diverged") if p.restart == 1 and p.tile is tiles[0]
                else _result(p.tile.crop(image)) for p in members]
    out = combine(members, outcomes, (1, 1, 40, 70))
    assert torch.allclose(out.image, image, atol=1e-6)
    assert [p.tile for p, _ in out.failed] == [tiles[0]]


def test_a_tile_whose_every_restart_failed_fails_the_run() -> None:
    tiles = grid((40, 40), 32, 8)
    members = parts(1, tiles)
    outcomes = [RunError("diverged at step 3") if i == 1 else _result(torch.zeros(1, 1, 32, 32))
                for i in range(len(members))]
    with pytest.raises(RunError, match="step 3"):
        combine(members, outcomes, (1, 1, 40, 40))


def test_super_resolution_tiles_are_placed_at_scale() -> None:
    tiles = grid((20, 20), 16, 4)
    outcomes = [torch.full((1, 3, 64, 64), 0.5) for _ in tiles]  # already images
    out = combine(parts(1, tiles), outcomes, (1, 3, 80, 80), scale=4)
    assert out.image.shape == (1, 3, 80, 80) and torch.allclose(out.image, torch.tensor(0.5))
