"""The shape of the code, checked: short functions in the library, and no module outside
dip/tasks/ that branches on a task's name (a new task is one file: issue 13)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = sorted((ROOT / "dip").rglob("*.py"))
#: the longest function (its whole span, docstring included) the library allows
MAX_LINES = 60


def test_no_library_function_is_longer_than_60_lines() -> None:
    long = []
    for path in LIBRARY:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} "
                                f"({lines} lines)")
    assert not long, long


def test_only_the_task_files_know_the_tasks_by_name() -> None:
    from dip.tasks import TASKS

    names = "|".join(TASKS)
    quoted = rf"""["']({names})["']"""
    pattern = re.compile(rf"(==|!=|\bin\b)\s*\(?\s*{quoted}|{quoted}\s*(==|!=)")
    outside = [p for p in [*LIBRARY, *sorted((ROOT / "cli").glob("*.py"))]
               if "tasks" not in p.relative_to(ROOT).parts]
    found = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in outside
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if pattern.search(line)]
    assert not found, found


#: a command-line flag in a message (``--shard``), not a YAML ``--- `` or a range's ``--``
FLAG = re.compile(r"(?<![\w-])--[a-z]")


def _message_strings(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_library_messages_name_arguments_not_flags() -> None:
    """The library's errors and warnings spell an argument ``{arg:NAME}`` (the CLI turns it
    into a flag, Python callers read the argument): no ``--flag`` in what they raise."""
    found = []
    for path in LIBRARY:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            raised = isinstance(node, ast.Raise) and node.exc is not None
            warned = (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                      and node.func.attr == "warn")
            for text in _message_strings(node.exc if raised else node) if raised or warned \
                    else []:
                if FLAG.search(text):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text.strip()}")
    assert not found, found


def test_messages_with_a_shown_hint_render_as_flags_for_the_command() -> None:
    from dip.batch import BatchError, parse_shard
    from dip.cli.main import flag_spelling
    from dip.errors import InputError
    from dip.report import PLOT_HINT

    hint = InputError(PLOT_HINT)
    assert str(hint).startswith("report=True draws with matplotlib")
    assert hint.render(flag_spelling).startswith("--report draws with matplotlib")
    try:
        parse_shard("0/2")
    except BatchError as exc:
        assert str(exc).startswith("shard expects K/N")
        assert exc.render(flag_spelling).startswith("--shard expects K/N")
    assert flag_spelling("devices", None) == "--devices"
    assert flag_spelling("shard", "K/N") == "--shard K/N"


def test_the_switches_python_names_as_true_are_the_options_that_are_flags() -> None:
    from dip.errors import _SWITCHES
    from dip.request import request_options
    from dip.tasks import TASKS

    options = [*request_options(), *(o for t in TASKS.values() for o in t.options),
               *(c.option for t in TASKS.values() for c in t.corruptions)]
    assert _SWITCHES == {o.name for o in options if o.kind == "flag" and not o.default}


def test_dip_corrupt_prints_the_note_its_damage_gives(tmp_path: Path) -> None:
    """The command knows no kind of damage: a note (the crop before downscaling) is the
    corruption's own words."""
    import numpy as np
    from click.testing import CliRunner
    from PIL import Image

    from dip.cli.main import cli
    from dip.damage import corruptions

    clean = tmp_path / "odd.png"
    Image.fromarray(np.full((30, 30, 3), 128, np.uint8)).save(clean)
    result = CliRunner().invoke(cli, ["corrupt", str(clean), "-o", str(tmp_path / "s.png"),
                                      "--downscale", "4"])
    assert result.exit_code == 0, result.output
    assert (f"dip: note: cropped {clean} to 28x28 (a multiple of 4) before downscaling; compare "
            f"results with that crop") in result.output
    assert result.output.strip().endswith(f"wrote {tmp_path / 's.png'}")
    downscale = corruptions()["downscale"]
    assert downscale.describe({"image": clean}, 4, clean) is None  # nothing was cropped


def test_the_readme_and_dip_run_help_name_every_job_key_once() -> None:
    """The job keys are generated from the request and the tasks; the README's list is
    written by hand and must follow them."""
    from dip.cli.main import _job_options_help

    keys = re.split(r", (?![^(]*\))", _job_options_help())  # (not inside "(deblur, superres)")
    assert len(keys) == len({k.split(" ")[0] for k in keys}), keys
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = readme[readme.index("- Job options:"):]
    listed = listed[:listed.index("\n- ")]
    assert {k.split(" ")[0] for k in keys} == set(re.findall(r"`(\w+)`", listed))
