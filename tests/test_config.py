"""Presets, precedence and the errors a config mistake gets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from dip import config
from dip.errors import ConfigError, InputError
from dip.tasks import TASKS


@pytest.mark.parametrize("task, iters, perturb", [
    ("denoise", 3000, 1 / 30), ("inpaint", 5000, 0.03), ("superres", 2000, 0.03)])
def test_presets_hold_the_papers_settings(task: str, iters: int, perturb: float) -> None:
    cfg = config.resolve(task, explicit={"preset": "paper"})
    assert cfg.preset == "paper"
    assert cfg.optim.iters == iters
    assert cfg.input.perturb_std == pytest.approx(perturb, rel=1e-4)
    assert (cfg.optim.lr, cfg.input.channels, cfg.input.scale) == (0.01, 32, 0.1)
    assert cfg.net.channels_down == [128] * 5 and cfg.net.channels_skip == [4] * 5


@pytest.mark.parametrize("task", list(TASKS))
def test_auto_preset_is_fast_on_the_cpu_and_paper_on_a_gpu(task: str, monkeypatch) -> None:
    fast = config.resolve(task, explicit={"device": "cpu"})
    assert fast.preset == "fast"  # the record names the preset used, not "auto"
    assert fast.net.channels_up != [128] * 5
    assert config.resolve(task, explicit={"device": "cuda"}).preset == "paper"
    monkeypatch.setattr(config, "gpu_available", lambda: True)
    assert config.resolve(task).preset == "paper"
    monkeypatch.setattr(config, "gpu_available", lambda: False)
    assert config.resolve(task).preset == "fast"


def test_cpu_denoising_averages_two_restarts_and_a_flag_takes_one() -> None:
    """The fast denoising preset averages two fits, the paper's objective's and SURE's in turn
    (benchmarks/README.md); the paper's settings and the other tasks fit one with the paper's
    objective; --restarts 1 is the single fit."""
    assert config.resolve("denoise", explicit={"device": "cpu"}).optim.restarts == 2
    assert config.resolve("denoise", explicit={"device": "cuda"}).optim.restarts == 1
    assert config.resolve("inpaint", explicit={"device": "cpu"}).optim.restarts == 1
    assert config.resolve("denoise", explicit={"device": "cpu",
                                               "optim.restarts": 1}).optim.restarts == 1
    for device, objective in (("cpu", "alternate"), ("cuda", "mse")):
        cfg = config.resolve("denoise", explicit={"device": device})
        assert cfg.section("noise").objective == objective


def test_user_settings_win_over_the_fast_preset(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("preset: fast\nnet:\n  channels_up: [8, 8, 8, 8, 8]\n")
    cfg = config.resolve("denoise", [f])
    assert cfg.preset == "fast" and cfg.net.channels_up == [8] * 5
    assert config.resolve("denoise", [f], ["preset=paper"]).preset == "paper"


def test_unknown_preset_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="preset.*auto, paper, fast"):
        config.resolve("denoise", overrides=["preset=quick"])


def test_superres_x8_takes_its_own_budget_and_perturbation() -> None:
    cfg = config.resolve("superres", explicit={"factor": 8, "preset": "paper"})
    assert (cfg.optim.iters, cfg.input.perturb_std) == (4000, 0.05)
    # the fast preset keeps the paper's x8 perturbation and takes its own x8 budget
    fast = config.resolve("superres", explicit={"factor": 8, "preset": "fast"})
    assert (fast.optim.iters, fast.input.perturb_std) == (1800, 0.05)
    # DeepRED's denoiser (dip.red) is the fast preset's, not the paper's
    assert (fast.red.weight, fast.red.every, cfg.red.weight) == (0.05, 20, 0.0)


def test_precedence_preset_file_set_flag(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  lr: 0.03\n  iters: 10\nseed: 5\n")
    cfg = config.resolve("denoise", [f])
    assert (cfg.optim.lr, cfg.optim.iters, cfg.seed) == (0.03, 10, 5)
    cfg = config.resolve("denoise", [f], ["optim.iters=20", "seed=6"])
    assert (cfg.optim.lr, cfg.optim.iters, cfg.seed) == (0.03, 20, 6)
    cfg = config.resolve("denoise", [f], ["optim.iters=20"], {"optim.iters": 30, "seed": None})
    assert (cfg.optim.iters, cfg.seed) == (30, 5)


def test_a_user_file_overrides_the_per_factor_preset(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("optim.iters: 7\n")  # dotted keys work in files too
    assert config.resolve("superres", [f], explicit={"factor": 8}).optim.iters == 7


def test_unknown_key_names_it_and_suggests_the_nearest() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'optim\.lrr'; did you mean "
                                          r"'optim\.lr'\?"):
        config.resolve("denoise", overrides=["optim.lrr=0.1"])


def test_unknown_key_in_a_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("net:\n  chanels_down: [8, 8]\n")
    with pytest.raises(ConfigError, match="'net.chanels_down'; did you mean 'net.channels_down'"):
        config.resolve("denoise", [f])


@pytest.mark.parametrize("override, message", [
    ("optim.lr=fast", "'optim.lr' expects a number"),
    ("optim.iters=1.5", "'optim.iters' expects an integer"),
    ("net.channels_down=8", "'net.channels_down' expects a list"),
    ("net.need1x1_up=3", "'net.need1x1_up' expects true or false"),
    ("optim=3", "'optim' is a section"),
    ("optim.iters=0", "'optim.iters' must be > 0"),
    ("optim.average=1", "'optim.average' must be in"),
    ("lr", "overrides expects key.path=value"),  # the library names the argument
    # values the network cannot take
    ("net.kernel_up=2", "'net.kernel_up' must be an odd size"),
    ("net.kernel_down=0", "'net.kernel_down' must be an odd size"),
    ("seed=99999999999999999999", "'seed' must be in"),
    ("seed=-1", "'seed' must be in"),
    # past these a run overflowed, or was killed for memory, instead of one line
    ("optim.restarts=101", "'optim.restarts' must be from 1 to 100"),
    ("optim.iters=99999999999999999999", "'optim.iters' must be from 1 to 10000000"),
    # the network's input: refused after the estimate, as the first network was built
    ("input.kind=grid", "unknown input.kind 'grid'; known: noise, meshgrid"),
    ("input.kind=meshgrid", "input.kind 'meshgrid' has 2 channels; set input.channels: 2"),
    ("perf.max_memory=1e308", "'perf.max_memory' must be from 0"),
    ("perf.threads=100000", "'perf.threads' must be auto or a number of threads from 1 to 1024"),
    ("input.perturb_std=1e300", "'input.perturb_std' must be <= 1000"),
    ("input.scale=1e300", "'input.scale' must be <= 1000"),
    ("stop.sigma=1e300", "'stop.sigma' is in 0-255 pixel units"),
    # the fixed budget too: SURE and the Wiener filter use it (1e6: an all-black image)
    ("stop.sigma=1e6,stop.rule=fixed", "'stop.sigma' is in 0-255 pixel units"),
    ("stop.sigma=-3", "'stop.sigma' is in 0-255 pixel units"),
    ("stop.window=100000000000", "'stop.window' must be from 2 to 10000"),
    ("noise.peak=1e300", "'noise.peak' must be from 0"),
])
def test_wrong_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.resolve("denoise", overrides=override.split(",") if "=" in override else
                       [override])


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("optim:\n  lr: 0.01\n  iters: [1, 2\nseed: 0\n")
    with pytest.raises(ConfigError, match=r"invalid YAML in .*bad\.yaml line \d+"):
        config.resolve("denoise", [f])


@pytest.mark.parametrize("text, key, line, first", [
    ("optim:\n  lr: 0.01\noptim:\n  iters: 3\n", "optim", 3, 1),  # the first lr was dropped
    ("optim:\n  lr: 0.01\n  lr: 0.02\n", "lr", 3, 2),
    ("seed: 1\nstop: {rule: fixed, rule: auto}\n", "rule", 2, 2),
])
def test_a_key_given_twice_is_refused_not_the_last_one_kept(tmp_path: Path, text: str, key: str,
                                                            line: int, first: int) -> None:
    f = tmp_path / "twice.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=rf"invalid YAML in .*twice\.yaml line {line}: "
                                          rf"'{key}' is given twice \(first on line {first}\)"):
        config.resolve("denoise", [f])


@pytest.mark.parametrize("text, key", [
    ("optim.lr: 0.1\noptim:\n  lr: 0.2\n", "optim.lr"),  # 0.2 was kept without a word
    ("optim:\n  lr: 0.2\n  iters: 3\noptim.iters: 5\n", "optim.iters"),
])
def test_a_key_given_dotted_and_nested_in_one_file_is_refused(tmp_path: Path, text: str,
                                                              key: str) -> None:
    f = tmp_path / "twice.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=rf"config key '{key}' is given twice in .*twice\.yaml "
                                          rf"\(once dotted, once in its section\)"):
        config.resolve("denoise", [f])
    with pytest.raises(ConfigError, match=rf"'{key}' is given twice in the config mapping"):
        config.resolve("denoise", base=[yaml.safe_load(text)])


def test_a_section_given_as_a_mapping_keeps_the_keys_set_before_it() -> None:
    """--set optim.iters=5 --set 'optim={lr: 0.2}' dropped the 5 (the mapping replaced the
    section the first override had made)."""
    cfg = config.resolve("denoise", overrides=["optim.iters=5", "optim={lr: 0.2}"])
    assert (cfg.optim.iters, cfg.optim.lr) == (5, 0.2)
    # across layers a later value still wins, dotted or not
    cfg = config.resolve("denoise", overrides=["optim.lr=0.3", "optim={lr: 0.2}"])
    assert cfg.optim.lr == 0.2


@pytest.mark.parametrize("text, later, got", [
    ("optim:\n#  lr: 0.005\n", {"explicit": {"optim.iters": 5}}, "None"),
    ("optim: 3\n", {"overrides": ["optim.restarts=1"]}, "3"),
    ("stop: off\n", {"explicit": {"stop.rule": "fixed"}}, "False"),
])
def test_a_section_given_a_value_is_refused_whatever_sets_its_keys_later(
        tmp_path: Path, text: str, later: dict, got: str) -> None:
    """It replaced the preset's section, so a later key in it left every other setting of
    the section at the code's default without a word (the fast preset's lr and restarts)."""
    f = tmp_path / "c.yaml"
    f.write_text(text)
    section = text.split(":")[0]
    for extra in ({}, later):
        with pytest.raises(ConfigError, match=rf"config key '{section}' is a section; expected "
                                              rf"keys under it, got {got}"):
            config.resolve("denoise", [f], **extra)


@pytest.mark.parametrize("text, message", [
    # a second jobs: list dropped the first one's jobs
    ("jobs:\n  - {task: denoise, input: a.png}\njobs:\n  - {task: denoise, input: b.png}\n",
     r"line 3: 'jobs' is given twice \(first on line 1\)"),
    ("jobs:\n  - task: denoise\n    input: a.png\n    set: {optim.lr: 0.1, optim: {lr: 0.2}}\n",
     r"jobs\[0\] \(line 2\): 'set' gives 'optim.lr' twice"),
])
def test_a_key_a_batch_file_gives_twice_is_refused(tmp_path: Path, text: str,
                                                   message: str) -> None:
    from dip.batch import load_batch

    f = tmp_path / "batch.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_batch(f)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="config file not found"):
        config.resolve("denoise", [tmp_path / "nope.yaml"])


def test_resolved_config_round_trips_through_its_record() -> None:
    cfg = config.resolve("inpaint", overrides=["net.upsample=nearest"])
    again = config.resolve("inpaint", base=[cfg.to_dict()])
    assert again == cfg


def test_a_results_record_is_a_valid_config_file(tmp_path: Path) -> None:
    import json

    cfg = config.resolve("denoise", overrides=["optim.lr=0.003", "seed=9"])
    record = tmp_path / "a.png.json"
    record.write_text(json.dumps({"task": "denoise", "versions": {}, "config": cfg.to_dict()}))
    assert config.resolve("denoise", [record]) == cfg


def test_yaml_1_1_exponents_are_numbers() -> None:
    # PyYAML reads "1e-3" as a string; a float key accepts it anyway
    assert config.resolve("denoise", overrides=["optim.lr=1e-3"]).optim.lr == 0.001


def test_perf_switches_read_yaml_booleans_as_words_and_check_values() -> None:
    cfg = config.resolve("denoise", overrides=["perf.graphs=off", "perf.channels_last=on"])
    assert (cfg.perf.graphs, cfg.perf.channels_last) == ("off", "on")
    with pytest.raises(ConfigError, match="optim.schedule"):
        config.resolve("denoise", overrides=["optim.schedule=linear"])
    with pytest.raises(ConfigError, match="optim.lr_end"):
        config.resolve("denoise", overrides=["optim.lr_end=1.0"])


def test_only_switch_keys_read_yaml_booleans_as_on_and_off() -> None:
    # device: no became 'off' ("unknown device 'off'", a word the user never wrote)
    with pytest.raises(ConfigError, match="'device' expects a string, but YAML read the "
                                          "value as false .* put it in quotes"):
        config.resolve("denoise", overrides=["device=no"])
    with pytest.raises(ConfigError, match="'net.upsample' expects a string, but YAML read"):
        config.resolve("denoise", overrides=["net.upsample=yes"])
    assert config.resolve("denoise", overrides=["tile.size=off"]).tile.size == "off"
    assert config.resolve("denoise", overrides=["perf.stack=on"]).perf.stack == "on"


def test_a_tile_side_written_as_a_float_is_its_whole_number() -> None:
    # tile.size: 64.0 was "expects a string, got 64.0"
    assert config.resolve("denoise", overrides=["tile.size=64.0"]).tile.size == "64"
    assert config.resolve("denoise", base=[{"tile": {"size": 96.0}}]).tile.size == "96"
    from dip.tiles import check_tiles
    with pytest.raises(ConfigError, match="'tile.size' must be auto, off or a tile's side .* "
                                          "got '64.5'"):
        check_tiles(config.resolve("denoise", overrides=["tile.size=64.5"]).tile)


def test_cuda_graphs_on_a_cpu_is_a_clear_error() -> None:
    import torch

    from dip.engine import resolve_perf

    cfg = config.resolve("denoise", overrides=["perf.graphs=on"])
    with pytest.raises(ConfigError, match="perf.graphs=on needs a CUDA device"):
        resolve_perf(cfg.perf, torch.device("cpu"))
    with pytest.raises(ConfigError, match="perf.precision"):
        config.resolve("denoise", overrides=["perf.precision=fp8"])
    bf16 = config.resolve("denoise", overrides=["perf.precision=bfloat16"])
    with pytest.raises(ConfigError, match="bfloat16 is for CUDA"):
        resolve_perf(bf16.perf, torch.device("cpu"))


# --- what the super-resolution task owns: the factor and its per_factor tables ----------------

def test_the_factor_is_super_resolutions_own() -> None:
    with pytest.raises(ConfigError, match="'factor' must be one of 2, 4, 8"):
        config.resolve("superres", overrides=["factor=3"])
    for task in set(TASKS) - {"superres"}:
        with pytest.raises(ConfigError, match=f"config key 'factor' applies to superres only, "
                                              f"not {task}; leave it out \\(or at its "
                                              f"default, 4\\)"):
            config.resolve(task, overrides=["factor=8"])
        assert config.resolve(task, overrides=["factor=4"]).factor == 4  # the default is fine


def test_dip_denoise_refuses_a_factor_in_one_line(clean_png: Path) -> None:
    from click.testing import CliRunner

    from dip.cli.main import cli

    result = CliRunner().invoke(cli, ["denoise", str(clean_png), "--set", "factor=8"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "dip: error: config key 'factor' applies to superres only, not denoise; leave it out (or "
        "at its default, 4)"]
    assert not list(clean_png.parent.glob("*_denoise*"))


def test_a_per_factor_table_is_read_for_super_resolution_only(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("per_factor:\n  2:\n    optim.iters: 9\n  8:\n    optim.iters: 11\n")
    assert config.resolve("superres", [f], explicit={"factor": 2}).optim.iters == 9
    assert config.resolve("superres", [f], explicit={"factor": 8}).optim.iters == 11
    # a factor no table names keeps the layers' own settings
    assert config.resolve("superres", [f], explicit={"factor": 4, "preset": "paper"}) \
        .optim.iters == 2000
    with pytest.raises(ConfigError, match="'per_factor' applies to superres only, not denoise"):
        config.resolve("denoise", [f])
    for text in ("per_factor: 3\n", "per_factor: []\n", "per_factor: 0\n", "per_factor: ''\n"):
        f.write_text(text)  # ([], 0 and '' were dropped as empty without a word)
        with pytest.raises(ConfigError, match="'per_factor' must map factors to settings"):
            config.resolve("superres", [f])
    preset = config.resolve("superres", explicit={"factor": 8})
    for text in ("per_factor:\n", "per_factor: {}\n"):  # none given: the preset's x8 entry
        f.write_text(text)
        assert config.resolve("superres", [f], explicit={"factor": 8}) == preset


@pytest.mark.parametrize("text, words", [
    ("per_factor: {x8: {optim.iters: 5}}", "names factor 'x8'; the factors are 2, 4, 8"),
    ("per_factor: {8: {optim.iterz: 5}}", "'optim.iterz' in per_factor 8; did you mean "
                                          "'optim.iters'"),
    ("per_factor: {8: {optim: {iterz: 5}}}", "'optim.iterz' in per_factor 8"),
    ("per_factor: {8: {noise.model: poisson}}", "config key 'noise' in per_factor 8 applies to "
                                                "denoise only, not superres"),
    ("per_factor: {8: 5}", "maps factor 8 to 5; expected a mapping of config keys"),
])
def test_every_per_factor_entry_is_checked_whatever_the_runs_factor(tmp_path: Path, text: str,
                                                                    words: str) -> None:
    """Only the run's factor's entry was read, so a typo in another passed without a word
    until the day a run had that factor."""
    f = tmp_path / "c.yaml"
    f.write_text(text + "\n")
    with pytest.raises(ConfigError, match=re.escape(words)):
        config.resolve("superres", [f], explicit={"factor": 2})
    # both spellings, a float, and an entry left empty
    f.write_text("per_factor: {'8': {optim.iters: 5}, 2.0: {optim.iters: 7}, 4: null}\n")
    assert config.resolve("superres", [f], explicit={"factor": 8}).optim.iters == 5
    assert config.resolve("superres", [f], explicit={"factor": 2}).optim.iters == 7


def test_the_keys_a_users_per_factor_entry_sets_for_the_run_count_as_given(tmp_path: Path
                                                                         ) -> None:
    """The run warns of ``stop.*`` keys it never reads among those the user gave
    (:attr:`RunConfig.given`); one given in ``per_factor``'s entry for the run's factor was
    missed. Another factor's entry sets nothing for this run, and the preset's own table is
    not the user's."""
    f = tmp_path / "c.yaml"
    f.write_text("per_factor: {2: {stop.patience: 50}, 8: {stop: {window: 9}}}\n")
    assert "stop.patience" in config.resolve("superres", [f], explicit={"factor": 2}).given
    at8 = config.resolve("superres", [f], explicit={"factor": 8}).given
    assert "stop.window" in at8 and "stop.patience" not in at8
    # the preset's x8 entry sets optim.iters; the user set nothing
    assert "optim.iters" not in config.resolve("superres", explicit={"factor": 8}).given


def test_info_describes_each_preset_by_its_network() -> None:
    assert config.resolve("denoise", explicit={"preset": "paper"}).net.describe() == \
        "128 channels"


# --- the run's options take their choices and ranges from where they are defined ------------

def test_the_options_choices_come_from_the_config_and_the_stop_rules() -> None:
    from dip.request import request_options
    from dip.stopping import STOP_RULES

    choices = {o.name: o.choices for o in request_options()}
    assert choices["preset"] == config.PRESETS
    assert choices["stop"] == tuple(STOP_RULES)


def test_a_poisson_peak_of_0_is_refused_by_the_option_itself(clean_png: Path) -> None:
    from click.testing import CliRunner

    import dip
    from dip.cli.main import cli

    out = clean_png.with_name("dark.png")
    result = CliRunner().invoke(cli, ["corrupt", str(clean_png), "-o", str(out),
                                      "--poisson", "0"])
    assert result.exit_code == 2 and "'--poisson'" in result.output and "x>0" in result.output
    with pytest.raises(InputError, match="poisson must be > 0, got 0"):
        dip.corrupt(clean_png, out, poisson=0)
    assert not out.exists()
    # the smallest peak the option allows is one add_poisson takes
    assert CliRunner().invoke(cli, ["corrupt", str(clean_png), "-o", str(out),
                                    "--poisson", "0.5"]).exit_code == 0


def _record(tmp_path: Path, task: str = "denoise", **overrides) -> Path:
    import json

    cfg = config.resolve(task, overrides=[f"{k}={v}" for k, v in overrides.items()])
    path = tmp_path / f"{task}.png.json"
    path.write_text(json.dumps({"task": task, "versions": {}, "config": cfg.to_dict()}))
    return path


def test_iters_over_a_record_is_the_budget_but_the_record_alone_grows_as_it_did(
        tmp_path: Path) -> None:
    record = _record(tmp_path, **{"stop.budget_sigma": 25, "optim.iters": 1800})
    assert config.resolve("denoise", [record]).stop.budget_sigma == 25
    fixed = config.resolve("denoise", [record], explicit={"optim.iters": 3})
    assert fixed.optim.iters == 3 and fixed.stop.budget_sigma == 0
    both = config.resolve("denoise", [record], ["stop.budget_sigma=20"], {"optim.iters": 3})
    assert both.stop.budget_sigma == 20  # asked for in the same layer as the budget


def test_a_users_budget_sigma_a_later_budget_overrules_is_told(tmp_path: Path) -> None:
    """``stop.budget_sigma`` in the user's file under ``--iters`` was zeroed without a word;
    the run now warns of it (:attr:`RunConfig.overruled`). A record's, the preset's, a 0, or
    one set with the budget, are not the user's asking in vain."""
    f = tmp_path / "c.yaml"
    f.write_text("stop: {budget_sigma: 20}\n")
    over = config.resolve("denoise", [f], explicit={"optim.iters": 3})
    assert over.stop.budget_sigma == 0 and over.overruled == {"stop.budget_sigma": "optim.iters"}
    assert not config.resolve("denoise", [f]).overruled
    assert not config.resolve("denoise", [f], ["stop.budget_sigma=20"], {"optim.iters": 3}
                              ).overruled
    assert not config.resolve("denoise", explicit={"optim.iters": 3}).overruled  # the preset's
    record = _record(tmp_path, **{"stop.budget_sigma": 25})
    assert not config.resolve("denoise", [record], explicit={"optim.iters": 3}).overruled
    f.write_text("stop: {budget_sigma: 0}\n")
    assert not config.resolve("denoise", [f], explicit={"optim.iters": 3}).overruled
    # checked as given before it is zeroed: a wrong value, another task's key
    for task, text, words in (
            ("denoise", "stop: {budget_sigma: -5}\n", "stop.budget_sigma"),
            ("denoise", "stop: {budget_sigma: abc}\n", "stop.budget_sigma"),
            ("superres", "stop: {budget_sigma: 20}\n", "applies to denoise only, not superres")):
        f.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(words)):
            config.resolve(task, [f], explicit={"optim.iters": 3})


def test_a_value_where_a_section_belongs_is_refused_with_a_budget_too(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text("stop: fixed\n")
    for explicit in (None, {"optim.iters": 3}):  # the budget's own key merged over it once
        with pytest.raises(ConfigError, match="'stop' is a section; expected keys under it"):
            config.resolve("denoise", [tmp_path / "s.yaml"], explicit=explicit)
    with pytest.raises(ConfigError, match="'optim' is a section; expected keys under it, got 1"):
        config.resolve("denoise", overrides=["optim=1"], explicit={"optim.iters": 3})


@pytest.mark.parametrize("text, message", [
    ("optim:\n  lr: " + "9" * 5000 + "\n", "line 2: an int cannot be made of '99999"),
    ("{" * 3000 + "}" * 3000 + "\n", "nested too deeply to read"),
])
def test_a_config_file_too_long_or_deep_to_read_is_one_clear_error(tmp_path: Path, text: str,
                                                                   message: str) -> None:
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        config.resolve("denoise", [tmp_path / "c.yaml"])
    with pytest.raises(ConfigError, match="'optim.lr' expects a number"):
        config.resolve("denoise", overrides=["optim.lr=" + "[" * 3000])


def test_a_record_reruns_its_own_task_only(tmp_path: Path) -> None:
    record = _record(tmp_path, "superres")
    with pytest.raises(ConfigError, match="config is of a superres run; it reruns that task only"):
        config.resolve("denoise", [record])
    with pytest.raises(ConfigError, match="config is of an inpaint run; it reruns that task"):
        config.resolve("denoise", [_record(tmp_path, "inpaint")])


def test_a_list_keys_message_reads_as_english() -> None:
    with pytest.raises(ConfigError, match="expects a list of integers, got 5"):
        config.resolve("denoise", overrides=["net.channels_down=5"])


def test_a_config_mapping_built_in_python_takes_numpys_numbers() -> None:
    """{'optim': {'iters': np.int64(3)}} was 'expects an integer, got np.int64(3)', though
    restore(iters=np.int64(3)) was taken; a float32 is the number it prints as."""
    import numpy as np

    cfg = config.resolve("denoise", base=[{"optim": {"iters": np.int64(3), "lr": np.float32(0.02)},
                                           "stop": {"sigma": np.float64(25.0)}}])
    assert (cfg.optim.iters, cfg.optim.lr, cfg.stop.sigma) == (3, 0.02, 25.0)
    assert type(cfg.optim.iters) is int and type(cfg.optim.lr) is float
    with pytest.raises(ConfigError, match="'optim.iters' expects an integer, got 2.5"):
        config.resolve("denoise", base=[{"optim": {"iters": np.float64(2.5)}}])


@pytest.mark.parametrize("text, line, problem", [
    # PyYAML's constructors raised KeyError, AttributeError and IndexError: a traceback
    ("seed: 1\noptim:\n  iters: !!bool maybe\n", 3, "a bool cannot be made of 'maybe'"),
    ("seed: !!timestamp x\n", 1, "a timestamp cannot be made of 'x'"),
    ("optim: {iters: !!int ''}\n", 1, "an int cannot be made of ''"),
])
def test_a_value_an_explicit_tag_cannot_make_is_invalid_yaml_at_its_line(
        tmp_path: Path, text: str, line: int, problem: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(f"invalid YAML in {f} line {line}: "
                                                    f"{problem}")):
        config.resolve("denoise", [f])


def test_numbers_are_read_as_yaml_1_2_reads_them(tmp_path: Path) -> None:
    """YAML 1.1's octal made seed: 010 eight (and --set seed=010 another seed than --seed
    010), and its base 60 made optim.iters: 1:30 ninety steps and 190:20:30 685,830."""
    f = tmp_path / "c.yaml"
    f.write_text("seed: 010\noptim: {iters: 1_000}\nstop: {patience: 0x10, window: 0o20}\n")
    cfg = config.resolve("denoise", [f])
    assert (cfg.seed, cfg.optim.iters, cfg.stop.patience, cfg.stop.window) == (10, 1000, 16, 16)
    assert config.resolve("denoise", overrides=["seed=010"]).seed == 10
    for minutes in ("1:30", "190:20:30"):
        with pytest.raises(ConfigError, match=f"'optim.iters' expects an integer, got "
                                              f"'{minutes}'"):
            config.resolve("denoise", overrides=[f"optim.iters={minutes}"])


def test_a_utf16_config_file_is_read_and_another_encoding_is_named(tmp_path: Path) -> None:
    """Windows PowerShell 5's '>' writes UTF-16 with its byte-order mark (valid YAML): it
    was refused with "'utf-8' codec can't decode byte 0xff in position 0"."""
    f = tmp_path / "c.yaml"
    f.write_bytes("optim:\n  iters: 3   # é\n".encode("utf-16"))
    assert config.resolve("denoise", [f]).optim.iters == 3
    f.write_bytes("optim:\n  iters: 3   # é\n".encode("latin-1"))
    with pytest.raises(InputError, match=re.escape(f"cannot read config file {f}: it is not "
                                                   f"UTF-8 text (save it as UTF-8)")):
        config.resolve("denoise", [f])


@pytest.mark.parametrize("override, message", [
    # the duplicate key or alias was swallowed: "config key 'optim' is a section; expected
    # keys under it, got '{lr: 1, lr: 2}'"
    ("optim={lr: 1, lr: 2}", "'lr' is given twice"),
    ("optim={iters: *a}", "aliases (*name) are not allowed"),
    ("net.channels_down=[8, 8", "expected ',' or ']', but got '<stream end>'"),
])
def test_a_set_value_yaml_refuses_says_why(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"overrides {override!r}: {message}")):
        config.resolve("denoise", overrides=[override])


def test_a_second_document_in_a_config_file_is_named_as_such(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("seed: 1\n---\nseed: 2\n")
    with pytest.raises(ConfigError, match="line 2: expected a single document in the stream, "
                                          "but found another document"):
        config.resolve("denoise", [f])
