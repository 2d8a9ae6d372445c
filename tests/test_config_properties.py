"""Property-based tests (hypothesis) of ``--set`` parsing and config validation: whatever a
user types, the answer is a config or a ConfigError that names the key — never a crash."""

from __future__ import annotations

import json
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dip import config
from dip.errors import ConfigError
from dip.operators import Downsample
from dip.tasks import TASKS

KEYS = config.all_keys()
TASKS = st.sampled_from(list(TASKS))
FAST = settings(max_examples=150, deadline=None)
# What a user can type: printable text (YAML refuses control characters in quoted strings).
TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=12)


def _leaf_type(key: str) -> typing.Any:
    cls: typing.Any = config.RunConfig
    for part in key.split("."):
        tp = typing.get_type_hints(cls)[part]
        cls = tp
    return cls


def _values(tp: typing.Any) -> st.SearchStrategy:
    if typing.get_origin(tp) is list:
        return st.lists(_values(typing.get_args(tp)[0]), max_size=6)
    return {int: st.integers(-10**6, 10**6), float: st.floats(allow_nan=False,
                                                             allow_infinity=False),
            bool: st.booleans(), str: TEXT}[tp]


ANY_VALUE = st.one_of(st.integers(), st.floats(), st.booleans(), TEXT,
                      st.none(), st.lists(st.integers(), max_size=3))


@pytest.mark.parametrize("key", ["perf.threads", "tile.size"])
def test_a_digit_that_is_no_number_is_refused_by_name(key: str) -> None:
    """'¹' is a digit to str.isdigit, and int() then raised a ValueError (found by the
    property below)."""
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config.resolve("denoise", overrides=[f"{key}=¹"])


@FAST
@given(task=TASKS, key=st.sampled_from(KEYS), data=st.data())
def test_a_well_typed_value_is_set_or_refused_by_name(task, key, data) -> None:
    value = data.draw(_values(_leaf_type(key)))
    try:
        cfg = config.resolve(task, overrides=[f"{key}={json.dumps(value, ensure_ascii=False)}"])
    except ConfigError as exc:
        assert key.split(".")[-1] in str(exc) or "preset" in str(exc)
        return
    got: typing.Any = cfg
    for part in key.split("."):
        got = getattr(got, part)
    if key != "preset":  # auto resolves to the preset used
        assert got == value


@FAST
@given(task=TASKS, key=st.sampled_from(KEYS), value=ANY_VALUE)
def test_any_value_gives_a_config_or_a_config_error(task, key, value) -> None:
    try:
        config.resolve(task, overrides=[f"{key}={json.dumps(value, ensure_ascii=False)}"])
    except ConfigError as exc:
        assert str(exc).splitlines() == [str(exc)]  # one line


@FAST
@given(task=TASKS, text=st.text(max_size=40))
def test_any_set_text_gives_a_config_or_a_config_error(task, text) -> None:
    try:
        config.resolve(task, overrides=[text])
    except ConfigError:
        pass


@FAST
@given(key=st.from_regex(r"[a-z_]{1,8}(\.[a-z_]{1,8}){0,2}", fullmatch=True), value=ANY_VALUE)
def test_an_unknown_key_is_named(key, value) -> None:
    if key in KEYS or any(k.startswith(key + ".") for k in KEYS):
        return
    try:
        config.resolve("denoise", overrides=[f"{key}={json.dumps(value, ensure_ascii=False)}"])
    except ConfigError as exc:
        assert "unknown config key" in str(exc) or "is a section" in str(exc)
    else:
        raise AssertionError(f"{key} was accepted")


@FAST
@given(task=TASKS, lr=st.floats(1e-5, 1.0), iters=st.integers(1, 10**6),
       seed=st.integers(0, 2**63 - 1), factor=st.sampled_from(Downsample.FACTORS))
def test_a_resolved_config_resolves_to_itself(task, lr, iters, seed, factor) -> None:
    # the factor is super-resolution's: every other task keeps the default (4)
    factor = factor if task == "superres" else config.RunConfig.factor
    cfg = config.resolve(task, overrides=[f"optim.lr={lr!r}", f"optim.iters={iters}",
                                          f"seed={seed}", f"factor={factor}"])
    again = config.resolve(task, base=[json.loads(json.dumps(cfg.to_dict()))])
    assert again.to_dict() == cfg.to_dict()  # every setting (not which ones the user gave)
    assert (cfg.optim.lr, cfg.optim.iters, cfg.seed, cfg.factor) == (lr, iters, seed, factor)
