"""dip inside a program that set torch's global state its own way: another default dtype, its
own random numbers drawn meanwhile, two restorations in two threads. dip's result must not
change, and the program's state must not either."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

import dip
from dip.nets import SkipNet, build_net
from dip.request import RunRequest

from conftest import save, synthetic

TINY = ("net.channels_down=[8,8,8]", "net.channels_up=[8,8,8]", "net.channels_skip=[2,2,2]",
        "input.channels=4", "perf.threads=1")
SMALL = dict(channels_down=[8, 8, 8], channels_up=[8, 8, 8], channels_skip=[2, 2, 2])


@pytest.fixture
def default_dtype():
    """Set torch's default dtype for the test; float32 again afterwards."""
    yield torch.set_default_dtype
    torch.set_default_dtype(torch.float32)


def test_a_seeded_network_is_torchs_own_initialisation_without_the_global_generator() -> None:
    torch.manual_seed(5)
    torchs = SkipNet(8, 3, **SMALL)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    seeded = build_net("skip", 8, 3, seed=5, **SMALL)
    assert torch.equal(torch.random.get_rng_state(), state)  # neither read nor moved
    for (name, a), b in zip(torchs.state_dict().items(), seeded.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_seeded_network_on_cuda_has_the_cpus_weights() -> None:
    cpu = build_net("skip", 8, 3, seed=5, **SMALL)
    cuda = build_net("skip", 8, 3, seed=5, device="cuda", **SMALL)
    assert next(cuda.parameters()).is_cuda
    for a, b in zip(cpu.state_dict().values(), cuda.state_dict().values()):
        assert torch.equal(a, b.cpu())


def _requests(tmp_path: Path) -> dict[str, RunRequest]:
    clean = save(synthetic(32), tmp_path / "clean.png")
    small = save(synthetic(16), tmp_path / "small.png")
    holes = dip.corrupt(clean, tmp_path / "holes.png", drop_pixels=0.5)["mask"]
    noisy = dip.corrupt(clean, tmp_path / "noisy.png", noise=25)["image"]
    photons = dip.corrupt(clean, tmp_path / "photons.png", poisson=30)["image"]

    def request(task: str, input: Path, *extra: str, **fields) -> RunRequest:
        return RunRequest(task=task, input=input, device="cpu", iters=4, write=False,
                          overrides=(*TINY, *extra), **fields)

    return {
        "denoise (the Wiener step)": request("denoise", noisy),
        "denoise (SURE and the squared error)": request("denoise", noisy, restarts=2),
        "denoise, photon noise": request("denoise", photons, task_args={"noise": "poisson"}),
        "inpaint": request("inpaint", clean, task_args={"mask": holes}),
        "superres, area kernel": request("superres", small,
                                         task_args={"factor": 2, "kernel": "area"}),
        "deblur": request("deblur", clean, task_args={"kernel": "box:3"}),
    }


def test_every_task_gives_the_same_image_whatever_torchs_default_dtype(
        tmp_path: Path, default_dtype) -> None:
    requests = _requests(tmp_path)
    float32 = {k: dip.restore(r).picture.pixels for k, r in requests.items()}
    default_dtype(torch.float64)
    for name, request in requests.items():
        pixels = dip.restore(request).picture.pixels
        assert pixels.dtype == torch.float32 and torch.equal(pixels, float32[name]), name


def test_corrupts_mask_is_the_seeds_whatever_torchs_default_dtype(tmp_path: Path,
                                                                  default_dtype) -> None:
    clean = save(synthetic(32), tmp_path / "clean.png")
    first = dip.corrupt(clean, tmp_path / "a.png", drop_pixels=0.5, seed=3)["mask"]
    default_dtype(torch.float64)
    second = dip.corrupt(clean, tmp_path / "b.png", drop_pixels=0.5, seed=3)["mask"]
    assert Path(first).read_bytes() == Path(second).read_bytes()


def test_two_restorations_in_two_threads_each_give_the_image_of_one_alone(
        tmp_path: Path) -> None:
    request = _requests(tmp_path)["inpaint"].replace(iters=6)
    alone = dip.restore(request).picture.pixels
    torch.manual_seed(123)
    drawn_alone = torch.rand(20000)
    results: list[torch.Tensor] = []

    def restore() -> None:
        results.append(dip.restore(request).picture.pixels)

    threads = [threading.Thread(target=restore) for _ in range(2)]
    torch.manual_seed(123)
    for t in threads:
        t.start()
    # the program's own random numbers, drawn while dip builds and fits: untouched by dip
    drawn = torch.cat([torch.rand(1) for _ in range(20000)])
    for t in threads:
        t.join()
    assert len(results) == 2 and all(torch.equal(r, alone) for r in results)
    assert torch.equal(drawn, drawn_alone)


@pytest.fixture
def default_device():
    """Set torch's default device for the test; none again afterwards."""
    yield torch.set_default_device
    torch.set_default_device(None)


def test_another_default_device_is_refused_in_one_line_before_anything_is_written(
        tmp_path: Path, default_device) -> None:
    request = _requests(tmp_path)["deblur"]
    default_device("meta")
    with pytest.raises(dip.InputError, match=r"default device is meta .*set_default_device"):
        dip.restore(request)
    with pytest.raises(dip.InputError, match="default device is meta"):
        dip.corrupt(tmp_path / "clean.png", tmp_path / "out.png", noise=25)
    assert not (tmp_path / "out.png").exists()
