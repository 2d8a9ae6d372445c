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
