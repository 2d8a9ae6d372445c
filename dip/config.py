"""Typed run configuration: dataclasses, YAML presets, ``--set`` overrides.

Precedence, lowest first: the task's preset (``configs/<task>.yaml``, the paper's settings,
with ``configs/fast/<task>.yaml`` over it when the ``preset`` key resolves to ``fast``) <
YAML files given by the user < ``--set key.path=value`` < explicit flags (``--iters``,
``--seed``, ...). The ``preset`` key itself is read from the user's layers first (``auto``:
``fast`` where the run will use a CPU, ``paper`` on a GPU). A YAML layer may also hold the
tables its task reads (:attr:`dip.tasks.Task.tables`: super-resolution's ``per_factor``);
each applies right after the layer that holds it. Unknown keys and values of the wrong type
are :class:`ConfigError`\\ s that name the key and what is allowed; the task then checks the
keys it owns (:meth:`dip.tasks.Task.check_config`, :func:`dip.tasks.owner_check`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import functools
import math
import numbers
import re
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dip.errors import ConfigError, InputError

#: ``paper``: the paper's settings; ``fast``: dip's CPU settings (configs/fast/), measured in
#: benchmarks/README.md; ``auto``: fast on a CPU, paper on a GPU
PRESETS = ("auto", "paper", "fast")


@dataclass
class NetConfig:
    """The generator: ``name`` picks it from :data:`dip.nets.NETS`, the other keys are its
    options, which it checks itself (:class:`dip.nets.SkipNet`)."""

    name: str = "skip"
    channels_down: list[int] = field(default_factory=lambda: [128] * 5)
    channels_up: list[int] = field(default_factory=lambda: [128] * 5)
    channels_skip: list[int] = field(default_factory=lambda: [4] * 5)
    kernel_down: int = 3
    kernel_up: int = 3
    kernel_skip: int = 1
    upsample: str = "bilinear"
    downsample: str = "stride"
    padding: str = "reflection"
    activation: str = "leaky_relu"
    need1x1_up: bool = True

    def describe(self) -> str:
        """The network's size in words (``dip info``): its width at full resolution."""
        return f"{self.channels_down[0]} channels"


@dataclass
class InputConfig:
    """The code ``z`` fed to the generator and its per-step perturbation."""

    kind: str = "noise"
    channels: int = 32
    scale: float = 0.1
    perturb_std: float = 1 / 30


@dataclass
class OptimConfig:
    """Adam on the generator's weights."""

    lr: float = 0.01
    iters: int = 3000
    #: weight of the exponential moving average of outputs; 0 returns the last output
    average: float = 0.99
    #: a loss this many times the previous step's is a divergence: restore and reset Adam.
    #: 0 disables the guard.
    guard: float = 3.16
    #: learning-rate schedule over the step budget: constant | cosine (lr -> lr_end)
    schedule: str = "constant"
    #: the rate a cosine schedule ends at
    lr_end: float = 0.0
    #: independent fits of the image with different seeds, averaged (dip.members)
    restarts: int = 1


@dataclass
class StopConfig:
    """When to stop: ``rule`` picks it from :data:`dip.stopping.STOP_RULES` -- ``auto``
    (variance-based detection, :class:`dip.stopping.VarianceStop`), ``fixed`` (run all
    ``optim.iters`` steps) or ``auto_if_noisy`` (``auto`` where the input's noise reads
    ``noisy_sigma`` or more, else ``fixed``: :class:`dip.stopping.AutoIfNoisy`). The keys are
    checked by :func:`dip.stopping.build_stop_rule`, all of them whichever the rule."""

    rule: str = "auto"
    #: outputs in the running variance (ES-WMV's W)
    window: int = 200
    #: steps without a new variance minimum before stopping (ES-WMV's P)
    patience: int = 200
    #: patience grows to patience_ratio x (step of the minimum) when that is larger
    patience_ratio: float = 0.25
    #: variance within this fraction of the minimum still counts as the minimum (flat valleys)
    tolerance: float = 0.05
    #: the image kept at the minimum: output | average | window
    returns: str = "window"
    #: denoise only: steps count once mean((estimate - input)^2) <= noise_floor x sigma^2
    #: (the discrepancy principle; 0: off)
    noise_floor: float = 0.0
    #: the noise's standard deviation in 0-255 pixel units for the floor (0: estimate it)
    sigma: float = 0.0
    #: denoise, automatic stop only: optim.iters is the budget for noise of this standard
    #: deviation (0-255 units); a less noisy input gets up to twice the steps
    #: (dip.stopping.noise_budget; 0: optim.iters for every input)
    budget_sigma: float = 0.0
    #: auto_if_noisy: the noise (0-255 units) from which the automatic stop runs
    noisy_sigma: float = 3.0


@dataclass
class OutputConfig:
    #: write the current estimate every N steps into ``{stem}_{task}_steps/`` (0: never)
    save_every: int = 0
    #: with a reference, measure PSNR every N steps to find the peak
    metrics_every: int = 10


@dataclass
class PerfConfig:
    """How steps run on the device; :func:`dip.engine.resolve_perf` checks them. ``auto`` picks
    what measured fastest there (benchmarks/speed.py)."""

    #: capture each step as a CUDA graph: auto | on | off (CUDA only)
    graphs: str = "auto"
    #: channels_last memory layout: auto (off: measured slower here on CPU and CUDA) | on | off
    channels_last: str = "auto"
    #: float32 | bfloat16 (autocast of the network's forward pass)
    precision: str = "float32"
    #: members fitted at once (restarts, tiles, packed jobs) share one step: auto (on CUDA;
    #: off on the CPU, where their convolutions would run one after another) | on | off
    stack: str = "auto"
    #: CPU threads: auto (every core for several fits, the free cores for one) | N
    #: (dip.threads)
    threads: str = "auto"
    #: GB a run may use before it is tiled (tile.size auto); 0: the device's free memory
    #: (dip.estimate.free_bytes: on a CPU within its cgroup's limit and ulimit -v; on mps
    #: within Metal's recommended working set)
    max_memory: float = 0.0


@dataclass
class TileConfig:
    """Tiled restoration (:mod:`dip.tiles` checks the keys)."""

    #: auto (tile when the whole image would not fit the memory budget, or is larger than
    #: whole_max) | off | the side of a tile in pixels of the result
    size: str = "auto"
    #: pixels of the result that neighbouring tiles share (at most a quarter of a tile's side:
    #: more is cut to that)
    overlap: int = 32
    #: auto fits an image whole only when its result's longer side is at most this (pixels;
    #: 0: any size that fits the memory budget). A preset whose step budget was chosen on
    #: small crops sets it: a larger image fitted whole stops under-fitted
    whole_max: int = 0
    #: the side of auto's tiles (pixels of the result): 256 is small enough that two fits at
    #: once take about 1 GB with the fast preset
    auto_size: int = 256


@dataclass
class RedConfig:
    """DeepRED's denoiser term beside the data term (:mod:`dip.red` checks the keys)."""

    #: lambda, the denoiser's pull; 0: off (the paper's fit)
    weight: float = 0.0
    #: mu, ADMM's penalty on the output's distance from the denoised copy
    admm: float = 0.06
    #: the noise level the denoiser (non-local means) is told, 0-255 units
    sigma: float = 5.0
    #: steps between two runs of the denoiser
    every: int = 10


@dataclass
class RunConfig:
    """Everything that decides a run's result, written beside every output."""

    #: which settings the task starts from: auto | paper | fast (resolved to paper or fast)
    preset: str = "auto"
    net: NetConfig = field(default_factory=NetConfig)
    input: InputConfig = field(default_factory=InputConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    perf: PerfConfig = field(default_factory=PerfConfig)
    tile: TileConfig = field(default_factory=TileConfig)
    red: RedConfig = field(default_factory=RedConfig)
    #: super-resolution factor (dip.tasks.superres owns and checks it; other tasks keep 4)
    factor: int = 4
    device: str = "auto"
    seed: int = 0
    #: the sections the run's task owns (dip.tasks.Task.sections), by name
    sections: dict[str, Any] = field(default_factory=dict, metadata={"internal": True})
    #: the dotted keys the user's layers set (files, mappings, --set, flags; not the preset,
    #: not a record's own keys): a setting the run cannot use is worth a warning only when
    #: the user asked for it
    given: frozenset[str] = field(default_factory=frozenset, compare=False,
                                  metadata={"internal": True})
    #: the user's settings a later one of theirs overrules, each -> the later one's key
    #: (``stop.budget_sigma`` in a file, ``--iters`` after it: a budget set is the budget)
    overruled: dict[str, str] = field(default_factory=dict, compare=False,
                                      metadata={"internal": True})

    def to_dict(self) -> dict[str, Any]:
        """The config as the record holds it: the task's sections beside the core ones."""
        out = {f.name: dataclasses.asdict(self)[f.name] for f in dataclasses.fields(self)
               if not f.metadata.get("internal")}
        out.update({name: dataclasses.asdict(value) for name, value in self.sections.items()})
        return out

    def section(self, name: str) -> Any:
        """The task-owned section ``name`` (e.g. ``noise`` for denoising)."""
        return self.sections[name]


# --- key paths and type checks ----------------------------------------------------------------

def _fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)
            if not f.metadata.get("internal")}


def all_keys(cls: type = RunConfig, prefix: str = "",
             sections: dict[str, type] | None = None) -> list[str]:
    """Every dotted leaf key, e.g. ``optim.lr`` (and those of the task's ``sections``)."""
    keys = []
    for name, tp in {**_fields(cls), **(sections or {})}.items():
        if dataclasses.is_dataclass(tp):
            keys += all_keys(tp, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def _unknown_key(key: str, known: list[str] | None = None, where: str = "") -> ConfigError:
    known = known if known is not None else all_keys()
    # a key below a leaf (optim.iters.x) is unknown, but optim.iters is not its correction
    close = [k for k in difflib.get_close_matches(key, known, n=2, cutoff=0.6)
             if not key.startswith(k + ".")]
    hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(known)}"
    return ConfigError(f"unknown config key '{quote(key)}'{where}{hint}")


def _foreign_key(name: str, foreign: dict[str, str], task: str, where: str = "") -> ConfigError:
    """Another task's section or table given to ``task``."""
    return ConfigError(f"config key '{name}'{where} applies to {foreign[name]} only, not {task}")


def check_known(data: dict[str, Any], task: str, where: str = "") -> None:
    """Refuse a key of ``data`` (nested or dotted) that ``task``'s runs have no setting for,
    as a layer's own are: for a task's table whose other entries the run does not read (a
    typo in ``per_factor``'s entry for x8 passed every x2 and x4 run). ``where``: said after
    the key (`` in per_factor 8``)."""
    _, sections, foreign = _task_parts(task)
    known = all_keys(sections=sections)
    for key in _leaf_keys(_expand_dotted(data)):
        head = key.split(".")[0]
        if head in foreign:
            raise _foreign_key(head, foreign, task, where)
        if key not in known and not any(k.startswith(key + ".") for k in known):
            raise _unknown_key(key, known, where)


#: the longest value or key a message quotes back (a 30 MB value must not become a 30 MB line)
QUOTE_LIMIT = 80


def quote(value: Any) -> str:
    """``repr`` of a value, cut to :data:`QUOTE_LIMIT` characters."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= QUOTE_LIMIT else text[:QUOTE_LIMIT - 3] + "..."


#: how messages name a value's expected type
TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
              dict: "a mapping", list: "a list"}
PLURALS = {int: "integers", float: "numbers", str: "strings", bool: "true or false values"}


def yaml_number(value: Any) -> Any:
    """``value``, or the float a string spells: PyYAML reads YAML 1.1, where ``1e-3`` and
    ``1e3`` (no dot, or no sign after the e) are strings, not numbers."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


#: the keys whose words include on and off, which YAML 1.1 reads as booleans
SWITCH_KEYS = ("perf.graphs", "perf.channels_last", "perf.stack", "tile.size")


def yaml_misread(value: Any, key: str) -> str:
    """For a key that takes text, what YAML made of a word meant as text (``output: no`` is
    false, ``input: 2024`` a number, ``mask_color: #ff00ff`` a comment) and that quotes keep
    it a word; 'got VALUE' for a mapping or a list."""
    if isinstance(value, (dict, list)):
        return f"got {str(value)[:60]!r}"
    read = (f"{str(value).lower()} (it reads yes, no, on and off as true or false)"
            if isinstance(value, bool) else "nothing (a # starts a comment)" if value is None
            else f"the number {value}" if isinstance(value, (int, float))
            else f"a {type(value).__name__} ({value})")
    return f"but YAML read the value as {read}: put it in quotes ({key}: '...')"


def yaml_word(value: Any) -> Any:
    """``value``, or the word a boolean stands for: YAML 1.1 reads on/off/yes/no as booleans,
    and a word key (perf.graphs, tile.size) means the word."""
    return ("on" if value else "off") if isinstance(value, bool) else value


def python_number(value: Any) -> Any:
    """Another library's number (numpy's) as Python's int or float, and numpy's True and False
    as Python's; anything else as is. A float32 is the number it prints as (np.float32(0.02)
    is 0.02, not 0.019999999552965164)."""
    if getattr(getattr(value, "dtype", None), "kind", None) == "b" and value.shape == ():
        return bool(value)  # numpy's bool is no numbers.Real: it was refused as "not a bool"
    if not isinstance(value, numbers.Real) or type(value) in (bool, int, float):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    with contextlib.suppress(ValueError):  # numpy's str is the shortest that reads back
        if hasattr(value, "dtype"):
            return float(str(value))
    return float(value)


def _check_value(key: str, value: Any, tp: Any) -> Any:
    """Return ``value`` as type ``tp`` or raise a ConfigError naming ``key`` (numpy's numbers,
    in a config mapping built in Python, taken as Python's)."""
    value = python_number(value)
    origin = typing.get_origin(tp)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' expects a list of {PLURALS[item]}, "
                              f"got {quote(repr(value))}")
        return [_check_value(key, v, item) for v in value]
    if tp is str and key in SWITCH_KEYS:
        value = yaml_word(value)
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        # a word-or-number key (tile.size: 256, 64.0), checked by its owner as a word
        value = str(int(value) if isinstance(value, float) and value.is_integer() else value)
    if tp is str and isinstance(value, bool):  # device: no meant a word, not 'off'
        raise ConfigError(f"config key '{key}' expects a string, {yaml_misread(value, key)}")
    if tp is float:
        value = yaml_number(value)
    ok = (isinstance(value, bool) if tp is bool
          else isinstance(value, (int, float)) and not isinstance(value, bool) if tp is float
          else isinstance(value, int) and not isinstance(value, bool) if tp is int
          else isinstance(value, tp))
    if not ok:
        raise ConfigError(f"config key '{key}' expects {TYPE_NAMES.get(tp, tp)}, got "
                          f"{quote(repr(value))}")
    if tp is float and not math.isfinite(value):
        raise ConfigError(f"config key '{key}' expects a finite number, got {value!r}")
    return float(value) if tp is float else value


def _build(cls: type, data: dict[str, Any], prefix: str = "",
           known: list[str] | None = None) -> Any:
    types = _fields(cls)
    kwargs = {}
    for name, value in data.items():
        key = prefix + name
        if name not in types:
            raise _unknown_key(key, known)
        tp = types[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{key}' is a section; expected keys under it, "
                                  f"got {quote(repr(value))}")
            kwargs[name] = _build(tp, value, key + ".", known)
        else:
            kwargs[name] = _check_value(key, value, tp)
    return cls(**kwargs)


def _validate_bounds(cfg: RunConfig) -> None:
    """The upper bounds: past them a run was killed for memory or overflowed mid-fit, with
    no message."""
    if cfg.optim.iters > MAX_ITERS:
        raise ConfigError(f"config key 'optim.iters' must be from 1 to {MAX_ITERS}, got "
                          f"{cfg.optim.iters}")
    if not 1 <= cfg.optim.restarts <= MAX_RESTARTS:
        raise ConfigError(f"config key 'optim.restarts' must be from 1 to {MAX_RESTARTS}, got "
                          f"{cfg.optim.restarts}")
    if not 0 <= cfg.perf.max_memory <= MAX_MEMORY_GB:
        raise ConfigError(f"config key 'perf.max_memory' must be from 0 (the device's free "
                          f"memory) to {MAX_MEMORY_GB} GB, got {cfg.perf.max_memory}")
    for key, value in {"input.perturb_std": cfg.input.perturb_std,
                       "input.scale": cfg.input.scale,
                       "input.channels": cfg.input.channels}.items():
        # the paper's are 0.03-0.05, 0.1 and 32; 1e300 overflowed float32, 100000 channels
        # ran out of memory building the network
        if value > 1000:
            raise ConfigError(f"config key '{key}' must be <= 1000, got {value}")


def _validate(cfg: RunConfig) -> None:
    """Range checks of the core keys that types alone do not catch. The components check their
    own keys where they are defined: the network (dip.nets), the stop rule (dip.stopping),
    perf.* (dip.engine.check_perf), optim.schedule (dip.fitting.SCHEDULES) and the task's
    (dip.tasks)."""
    positive = {"optim.iters": cfg.optim.iters, "optim.lr": cfg.optim.lr,
                "input.channels": cfg.input.channels,
                "output.metrics_every": cfg.output.metrics_every}
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"config key '{key}' must be > 0, got {value}")
    for key, value in {"input.perturb_std": cfg.input.perturb_std,
                       "input.scale": cfg.input.scale,
                       "output.save_every": cfg.output.save_every}.items():
        if value < 0:
            raise ConfigError(f"config key '{key}' must be >= 0, got {value}")
    if not 0 <= cfg.optim.lr_end <= cfg.optim.lr:
        raise ConfigError(f"config key 'optim.lr_end' must be in [0, optim.lr], got "
                          f"{cfg.optim.lr_end}")
    if not 0 <= cfg.optim.average < 1:
        raise ConfigError(f"config key 'optim.average' must be in [0, 1), got {cfg.optim.average}")
    if 0 < cfg.optim.guard <= 1 or cfg.optim.guard < 0:
        raise ConfigError(f"config key 'optim.guard' must be 0 (off) or > 1, got {cfg.optim.guard}")
    _validate_bounds(cfg)
    if not 0 <= cfg.seed < 2 ** 63:
        raise ConfigError(f"config key 'seed' must be in 0 .. 2**63-1, got {cfg.seed}")
    if cfg.preset not in PRESETS:
        raise ConfigError(f"config key 'preset' must be one of {', '.join(PRESETS)}, got "
                          f"{quote(cfg.preset)}")


def _check_components(cfg: RunConfig, task: Any) -> None:
    """Each component checks the keys it owns, once, where it is defined; the task checks its
    own and refuses those of other tasks."""
    from dip.engine import check_perf
    from dip.fitting import check_schedule
    from dip.inputs import check_input
    from dip.nets import check_net
    from dip.red import check_red
    from dip.stopping import build_stop_rule
    from dip.tasks import owner_check
    from dip.threads import check_threads
    from dip.tiles import check_tiles

    task.check_config(cfg)
    owner_check(task, cfg)
    check_net(cfg.net.name, **{k: v for k, v in dataclasses.asdict(cfg.net).items()
                               if k != "name"})
    build_stop_rule(cfg.stop)
    check_perf(cfg.perf)
    check_threads(cfg.perf.threads)
    check_tiles(cfg.tile)
    check_schedule(cfg.optim.schedule)
    check_red(cfg.red)
    check_input(cfg.input.kind, cfg.input.channels)


# --- layers -----------------------------------------------------------------------------------

def _set_path(tree: dict[str, Any], key: str, value: Any,
              known: list[str] | None = None) -> None:
    """``tree['a']['b'] = value`` for ``key='a.b'``, creating sections on the way."""
    *parents, leaf = key.split(".")
    node = tree
    for i, part in enumerate(parents):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):  # given a value before: optim=1, then optim.iters
            section = ".".join(parents[:i + 1])
            if not any(k.startswith(section + ".") for k in known or all_keys()):
                raise _unknown_key(section, known)
            raise ConfigError(f"config key '{quote(section)}' is a section; expected keys "
                              f"under it, got {quote(repr(node))}")
    # a section's keys given as a mapping join the ones set before (--set optim.iters=5 --set
    # 'optim={lr: 0.2}' keeps both), as a later layer's section does (_merge)
    both = isinstance(value, dict) and isinstance(node.get(leaf), dict)
    node[leaf] = _merge(node[leaf], value, key + ".") if both else value


def _merge(base: dict[str, Any], top: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``top`` over ``base``. A section given a value instead of keys (``optim:`` with its
    keys commented out) is refused here: replacing the section, it dropped the preset's
    settings of it without a word whenever a later layer set one key in it."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, f"{prefix}{key}.")
        elif isinstance(out.get(key), dict) and not isinstance(value, dict):
            raise ConfigError(f"config key '{quote(prefix + str(key))}' is a section; expected "
                              f"keys under it, got {quote(repr(value))}")
        else:
            out[key] = value
    return out


def _expand_dotted(data: dict[str, Any]) -> dict[str, Any]:
    """Allow ``optim.lr: 0.01`` as a key in YAML as well as nested sections."""
    tree: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigError(f"config keys must be strings, got {key!r}")
        if isinstance(value, dict):
            value = _expand_dotted(value)
        if "." in key:
            _set_path(tree, key, value)
        elif isinstance(value, dict) and isinstance(tree.get(key), dict):
            tree[key] = _merge(tree[key], value)
        else:
            tree[key] = value
    return tree


class NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without aliases (``*name``): a few hundred bytes of nested aliases expand to
    gigabytes (a "billion laughs"), and dip's files never need them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in dip's YAML files",
                self.peek_event().start_mark)
        return super().compose_node(parent, index)

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        """A value an explicit tag cannot make (``!!bool maybe``, ``!!int ""``) is a YAML error
        at its line: PyYAML's constructors raise KeyError, IndexError or AttributeError (and
        an integer thousands of digits long Python's ValueError)."""
        try:
            return super().construct_object(node, deep)
        except (KeyError, IndexError, AttributeError, TypeError, ValueError):
            raise yaml.constructor.ConstructorError(
                None, None, f"{'an' if node.tag.endswith(':int') else 'a'} "
                f"{node.tag.rsplit(':', 1)[-1]} cannot be made of {str(node.value)[:40]!r}",
                node.start_mark) from None

    def construct_yaml_int(self, node: Any) -> int:
        """YAML 1.2's integers: ``010`` is ten (YAML 1.1's octal made ``seed: 010`` 8 and
        ``--set seed=010`` another seed than ``--seed 010``); ``0o10`` is octal."""
        text = str(self.construct_scalar(node)).replace("_", "")
        sign, digits = (-1, text[1:]) if text[:1] == "-" else (1, text.lstrip("+"))
        base = {"0x": 16, "0o": 8, "0b": 2}.get(digits[:2].lower())
        return sign * (int(digits[2:], base) if base else int(digits, 10))

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        """A key given twice is refused: YAML's loaders keep the last one without a word, so
        a second ``optim:`` section dropped the first one's settings, a batch file's second
        ``jobs:`` list its first."""
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                    continue
                key = self.construct_object(key_node)
                if key in first:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"{key!r} is given twice (first on line {first[key]})",
                        key_node.start_mark)
                first[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


NoAliasLoader.add_constructor("tag:yaml.org,2002:int", NoAliasLoader.construct_yaml_int)
# YAML 1.2's numbers, without YAML 1.1's sexagesimal ones: optim.iters: 1:30 was 90 steps and
# 190:20:30 685,830 (now the words they look like, refused by a number key)
NoAliasLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
NoAliasLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[01_]+|[-+]?0o[0-7_]+|[-+]?[0-9][0-9_]*|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"))
NoAliasLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?"
               r"|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def _yaml_text(data: bytes) -> str:
    """A YAML file's text: UTF-8, or UTF-16 where it starts with its byte-order mark (what
    Windows PowerShell 5's ``>`` writes), as YAML itself allows."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data.decode("utf-16")
    return data.decode("utf-8")


def load_yaml(path: Path, what: str, loader: type = NoAliasLoader) -> Any:
    """Parse a YAML file; a missing or unreadable file is an InputError and invalid YAML a
    ConfigError, each naming ``what`` it is, the file and (for YAML) the line."""
    from dip.image import regular_file, shown

    regular_file(path, what, "a YAML file")
    try:
        return yaml.load(_yaml_text(path.read_bytes()), Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if isinstance(exc, yaml.composer.ComposerError) and getattr(exc, "context", None):
            problem = f"{exc.context}, {problem}"  # 'expected a single document in the
            # stream, but found another document' (the second half alone said nothing)
        raise ConfigError(f"invalid YAML in {shown(path)}{where}: {quote(problem)}") from None
    except UnicodeDecodeError:
        raise InputError(f"cannot read {what} {shown(path)}: it is not UTF-8 text (save it as "
                         f"UTF-8)") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} {shown(path)}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{what} {shown(path)} is nested too deeply to read") from None
    except ValueError as exc:  # a number thousands of digits long (Python's int limit)
        raise ConfigError(f"cannot read {what} {shown(path)}: {quote(str(exc))}") from None


def read_yaml(path: str | Path, sections: dict[str, type] | None = None) -> dict[str, Any]:
    """Read a YAML config file into a mapping; errors name the file and the line. A dip record
    reruns its run: its config, with what it lacks filled as it ran (:func:`record_config`)."""
    path = Path(path)
    data = load_yaml(path, "config file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got "
                          f"{type(data).__name__}")
    return _layer(data, str(path), sections)


def is_record(data: Any) -> bool:
    """Whether ``data`` (a config file's or mapping's content) is a result's record."""
    return isinstance(data, dict) and {"config", "versions", "task"} <= data.keys()


def _leaf_keys(data: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """The dotted key of every value in ``data``, dotted keys and nested sections alike."""
    for key, value in data.items():
        if isinstance(value, dict) and value:
            yield from _leaf_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def given_twice(data: dict[str, Any]) -> str | None:
    """The first key given both dotted and nested in one mapping (``optim.lr: 0.1`` and
    ``optim: {lr: 0.2}``), if any. Such a mapping is refused, as YAML's own duplicate keys are
    (:class:`NoAliasLoader`): merging them kept the one written last without a word."""
    seen: set[str] = set()
    for key in _leaf_keys(data):
        if key in seen:
            return key
        seen.add(key)
    return None


def _layer(data: dict[str, Any], name: str,
           sections: dict[str, type] | None = None) -> dict[str, Any]:
    """A user's config layer: the mapping itself, or a record's config (:func:`is_record`)."""
    if is_record(data):
        # a record written by dip: reproduce its run (every key is set, so the preset a
        # later layer names could not change any value)
        if not isinstance(data["config"], dict):
            raise ConfigError(f"{name} is a dip record whose 'config' is not a mapping of "
                              f"settings; it cannot be rerun")
        return {**record_config(data["config"], sections), RECORD_MARK: str(data["task"])}
    twice = given_twice(data)
    if twice is not None:
        raise ConfigError(f"config key '{quote(twice)}' is given twice in {name} (once "
                          f"dotted, once in its section); keep one")
    return data


def recorded_options(configs: tuple | list, task: str, names: list[str]) -> dict[str, Any]:
    """The values of the task options ``names`` held by the records among ``configs`` (files
    or mappings) made by ``task``, the last record's first: a rerun from a record runs with
    them unless the user gives them (:attr:`dip.request.Option.rerun`)."""
    found: dict[str, Any] = {}
    for config in configs:
        data = config if isinstance(config, dict) else load_yaml(Path(config), "config file")
        if is_record(data) and data.get("task") == task:
            found.update({n: data[n] for n in names if data.get(n) is not None})
    return found


#: marks a layer read from a result's record (see :func:`read_yaml`): the task it ran
RECORD_MARK = "__record__"

#: the most restarts a run takes: every member's network and optimiser exist from the start
#: (1000 members of a 16 px image held 5.3 GB with the fast network; 10^8 were killed for
#: memory without a word), and averaging more than a few gains little (benchmarks/README.md)
MAX_RESTARTS = 100
#: the largest memory budget, GB (a petabyte; 1e308 overflowed its byte count)
MAX_MEMORY_GB = 2 ** 20
#: the largest step budget: a thousand times the paper's longest run (10^20 was taken, and
#: estimated at 2 x 10^15 hours; the record's budget then overflowed a 64-bit integer)
MAX_ITERS = 10 ** 7

#: config keys added after records were first written, with the value that reproduces a run
#: recorded without them (the behaviour before the key existed)
ADDED_KEYS = {"stop.noise_floor": 0.0, "stop.sigma": 0.0, "optim.restarts": 1,
              "stop.budget_sigma": 0.0, "stop.noisy_sigma": 3.0,
              "perf.threads": "auto", "perf.max_memory": 0.0,
              # members fitted at once ran one after another on CUDA before stacks
              "perf.stack": "off",
              # auto fits an image that fits in memory whole, as every run before tiles did
              "tile.size": "auto", "tile.overlap": 32,
              # auto fitted whole any image that fit in memory, at tiles of 256 otherwise
              "tile.whole_max": 0, "tile.auto_size": 256,
              # no denoiser term before DeepRED
              "red.weight": 0.0, "red.admm": 0.06, "red.sigma": 5.0, "red.every": 10}


def record_config(config: dict[str, Any],
                  sections: dict[str, type] | None = None) -> dict[str, Any]:
    """A record's (nested) config with every :data:`ADDED_KEYS` key it lacks filled in, and
    each task section (``sections``) it lacks at its defaults -- a section's defaults are the
    behaviour before it existed -- so that an older record still reruns, and compares, as the
    run it records."""
    config = copy.deepcopy(config)
    for key, value in ADDED_KEYS.items():
        section, name = key.split(".")
        if section not in config:  # a whole section added after the record (tile, red)
            config[section] = {}
        if isinstance(config.get(section), dict):
            config[section].setdefault(name, value)
    for name, cls in (sections or {}).items():
        defaults = dataclasses.asdict(cls())
        if isinstance(config.get(name), dict):
            config[name] = {**defaults, **config[name]}
        elif name not in config:
            config[name] = defaults
    return config


def preset(task: str, name: str = "paper") -> list[dict[str, Any]]:
    """The task's bundled settings as layers: ``paper`` is configs/TASK.yaml; ``fast`` adds
    configs/fast/TASK.yaml over it (where the task has one). Each layer keeps its own tables
    (:attr:`dip.tasks.Task.tables`), which :func:`resolve` applies right after that layer."""
    from dip.tasks import get_task

    get_task(task)
    if name not in ("paper", "fast"):
        raise ConfigError(f"preset() takes paper or fast (resolve 'auto' with choose_preset), "
                          f"got {name!r}")
    names = [f"{task}.yaml"] + ([f"fast/{task}.yaml"] if name == "fast" else [])
    layers = [copy.deepcopy(_bundled(n)) for n in names if _bundled_exists(n)]
    layers[0]["preset"] = name
    return layers


@functools.lru_cache(maxsize=None)
def _bundled(name: str) -> dict[str, Any]:
    """A packaged preset file, parsed once per process (a batch resolves one config per job,
    twice); callers get deep copies."""
    return yaml.safe_load(resources.files("dip.configs").joinpath(name).read_text(
        encoding="utf-8")) or {}


@functools.lru_cache(maxsize=None)
def _bundled_exists(name: str) -> bool:
    return resources.files("dip.configs").joinpath(name).is_file()


def gpu_available() -> bool:
    """A GPU that ``device: auto`` would pick (CUDA or Apple's Metal)."""
    import torch

    return torch.cuda.is_available() or torch.backends.mps.is_available()


def choose_preset(preset_name: str, device: str) -> str:
    """``auto`` -> ``fast`` when the run will use the CPU, ``paper`` on a GPU."""
    if preset_name != "auto":
        return preset_name
    if device == "auto":
        return "paper" if gpu_available() else "fast"
    return "fast" if device == "cpu" else "paper"


def parse_override(text: str) -> tuple[str, Any]:
    """``'optim.lr=0.005'`` -> ``('optim.lr', 0.005)``; the value is read as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{{arg:overrides}} expects key.path=value, got {quote(text)!r}")
    try:
        value = yaml.load(raw, Loader=NoAliasLoader) if raw.strip() else ""
    except yaml.YAMLError as exc:
        if raw.strip()[:1] in ("{", "["):  # a mapping or a list YAML refused (a key twice,
            # an alias): why, not that the section got a word
            raise ConfigError(f"{{arg:overrides}} {quote(text)!r}: "
                              f"{quote(getattr(exc, 'problem', None) or exc)}") from None
        value = raw
    except (ValueError, RecursionError):  # (too many digits, nested too deep)
        value = raw
    return key, value


def _task_parts(task: str) -> tuple[Any, dict[str, type], dict[str, str]]:
    """The task, the config sections it owns, and every other task's sections and tables ->
    that task."""
    from dip.tasks import TASKS, get_task

    the_task = get_task(task)
    mine = {*the_task.sections, *the_task.tables}
    foreign = {name: other.name for other in TASKS.values() if other is not the_task
               for name in [*other.sections, *other.tables] if name not in mine}
    return the_task, the_task.sections, foreign


def resolve(task: str, files: list[str | Path] | tuple = (),
            overrides: list[str] | tuple = (), explicit: dict[str, Any] | None = None,
            base: list[dict[str, Any]] | None = None) -> RunConfig:
    """Build the run's config from its layers (see the module docstring).

    Args:
        task: a registered task's name (picks the preset and the sections it owns).
        files: YAML files, applied in order.
        overrides: ``key.path=value`` strings, applied in order.
        explicit: dotted keys set by explicit flags (``{'optim.iters': 300}``); None values
            are ignored.
        base: mappings applied after the preset and before ``files`` (used by the Python API
            to pass a config as a dict).
    """
    the_task, sections, foreign = _task_parts(task)
    users = ([_layer(b, "the config mapping", sections) for b in base or []]
             + [read_yaml(f, sections) for f in files])
    top: dict[str, Any] = {}
    known = all_keys(sections=sections)
    leaves = set(known)
    for key, value in [parse_override(o) for o in overrides]:
        parts = key.split(".")
        below = [".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in leaves]
        if below:
            raise ConfigError(f"config key '{below[0]}' expects a value, not keys below it "
                              f"('{quote(key)}')")
        _set_path(top, key, value, known)
    for key, value in (explicit or {}).items():
        if value is not None:
            _set_path(top, key, value, known)
    layers, tables, settings = _layers(the_task, foreign, users, top)
    merged: dict[str, Any] = {}
    for layer, own in zip(layers, tables):
        merged = _merge(merged, layer)
        for name, table in own.items():
            extra = the_task.table_settings(name, table, settings)
            if extra:
                merged = _merge(merged, _expand_dotted(extra))
    merged = _merge(merged, top)
    # checked as given (a task that reads none refuses it), then zeroed
    cfg = _built(merged, sections, foreign, the_task)
    if _budget_is_fixed(users, top) and cfg.stop.budget_sigma:
        if any(_sets(layer, "stop", "budget_sigma") for layer in users
               if not layer.get(RECORD_MARK)):  # theirs, not the preset's or a record's
            cfg.overruled = {"stop.budget_sigma": "optim.iters"}
        cfg.stop.budget_sigma = 0.0
    cfg.given = _given(the_task, [layer for layer in users if not layer.get(RECORD_MARK)]
                       + [top], settings)
    return cfg


def _given(task: Any, layers: list[dict[str, Any]], settings: dict[str, Any]) -> frozenset[str]:
    """The dotted keys the user set (a record's are not theirs), with those a table of theirs
    sets for this run (``per_factor``'s entry for its factor: ``stop.patience`` under ``4``)."""
    given = {key for layer in layers for key in _leaf_keys(layer)}
    for layer in layers:
        for name in task.tables:
            if isinstance(layer.get(name), dict):
                given.update(_leaf_keys(_expand_dotted(
                    task.table_settings(name, layer[name], settings))))
    return frozenset(given)


def _budget_is_fixed(users: list[dict[str, Any]], top: dict[str, Any]) -> bool:
    """A budget the user sets is the budget: the preset's growth of its own for a less noisy
    image (stop.budget_sigma) stays off unless they set that too, in the same layer or a later
    one (a record sets both; ``--iters`` over a record fixes the budget again)."""
    chain = [*users, top]
    last = max((i for i, layer in enumerate(chain) if _sets(layer, "optim", "iters")),
               default=None)
    return last is not None and not any(_sets(layer, "stop", "budget_sigma")
                                        for layer in chain[last:])


def _sets(layer: dict[str, Any], section: str, key: str) -> bool:
    """Whether ``layer`` sets ``section.key``, nested or dotted."""
    return (isinstance(layer.get(section), dict) and key in layer[section]
            or f"{section}.{key}" in layer)


def _layers(task: Any, foreign: dict[str, str], users: list[dict[str, Any]],
            top: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                          dict[str, Any]]:
    """The preset's layers and the users', in order, each with the task's tables apart; and
    the settings of all of them merged (tables apart, unchecked), which the tables are read
    for. Which preset, on which device: the users' layers decide."""
    records = [layer for layer in users if layer.get(RECORD_MARK)]
    users = [{k: v for k, v in layer.items() if k != RECORD_MARK} for layer in users]
    asked = top.get("preset")
    for record in records:
        if record[RECORD_MARK] != task.name:
            task_name = quote(record[RECORD_MARK])
            raise ConfigError(f"the record passed as {{arg:config}} is of "
                              f"{'an' if task_name[:1] in 'aeiou' else 'a'} {task_name} run; "
                              f"it reruns that task only")
        if asked is not None and record.get("preset") not in (None, asked):
            raise ConfigError(f"the record passed as {{arg:config}} was made with preset "
                              f"{quote(str(record.get('preset')))} and fixes every setting; "
                              f"{{arg:preset={asked}}} would change only its label (drop one "
                              f"of the two)")
    theirs = next((name for layer in users for name in layer if name in foreign), None)
    if theirs is not None:  # before a table of theirs is read as keys
        raise _foreign_key(theirs, foreign, task.name)
    merged: dict[str, Any] = {}
    for layer in [_expand_dotted({k: v for k, v in layer.items() if k not in task.tables})
                  for layer in users] + [top]:
        merged = _merge(merged, layer)
    name = merged.get("preset", RunConfig.preset)
    if name not in PRESETS:
        raise ConfigError(f"config key 'preset' must be one of {', '.join(PRESETS)}, "
                          f"got {quote(repr(name))}")
    device = merged.get("device", RunConfig.device)
    bundled = preset(task.name, choose_preset(name, device if isinstance(device, str)
                                              else "auto"))
    layers = [dict(layer) for layer in bundled + users]
    # The preset actually used, not "auto": the record then reruns the same settings anywhere.
    for layer in layers[1:] + [top]:
        layer.pop("preset", None)
    tables = [{n: layer.pop(n) for n in task.tables if n in layer} for layer in layers]
    layers = [_expand_dotted(layer) for layer in layers]
    settings: dict[str, Any] = {}
    for layer in layers + [top]:
        settings = _merge(settings, layer)
    # an empty table is none (null, {}); [], 0 or "" is checked, and refused, as a table
    return layers, [{n: t for n, t in own.items() if t is not None and t != {}}
                    for own in tables], settings


def _built(merged: dict[str, Any], sections: dict[str, type], foreign: dict[str, str],
           task: Any) -> RunConfig:
    """The merged layers as a checked RunConfig with the task's sections."""
    for name in merged:
        if name in foreign:
            raise _foreign_key(name, foreign, task.name)
    known = all_keys(sections=sections)
    owned = {}
    for name, cls in sections.items():
        value = merged.pop(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{name}' is a section; expected keys under it, "
                              f"got {quote(repr(value))}")
        owned[name] = _build(cls, value, name + ".", known)
        check = getattr(owned[name], "check", None)
        if check is not None:
            check()
    cfg = _build(RunConfig, merged, known=known)
    cfg.sections = owned
    _validate(cfg)
    _check_components(cfg, task)
    return cfg
