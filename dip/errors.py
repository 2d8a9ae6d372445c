"""Errors a user can cause, in the library's words.

The library names what to change by its Python argument (``overwrite``, ``max_pixels``) or
config key (``optim.lr``), never by a command-line flag: a message holds the placeholder
``{arg:NAME}`` or ``{arg:NAME=VALUE}`` (an argument of :class:`dip.request.RunRequest`, a
task option, or a config key), and :meth:`DipError.render` spells it for its reader. ``str()``
spells it as Python (``overwrite=True``, ``device='cpu'``, ``optim.lr``); the ``dip`` command
spells it as a flag (``--overwrite``, ``--device cpu``, ``--set optim.lr=...``) and chooses
the exit code. No exception here carries an exit code.
"""

from __future__ import annotations

import contextlib
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

_ARG = re.compile(r"\{arg:([\w.]+)(?:=([^}]*))?\}")


def python_spelling(name: str, value: str | None) -> str:
    """``overwrite`` -> ``overwrite=True``; ``device``, ``cpu`` -> ``device='cpu'``; a
    config key stays as it is."""
    if "." in name:
        return name if value is None else f"{name}={value}"
    if value is None:
        return f"{name}=True" if name in _SWITCHES else name
    return f"{name}={value!r}"


#: arguments that are switches: named as ``name=True`` in Python
_SWITCHES = {"overwrite", "report", "gif", "mask_keeps", "uncertainty",
             "redraw_known", "no_back_projection"}


class Spelled:
    """A message holding ``{arg:...}`` placeholders: an error's or a warning's."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.template = message

    def render(self, spell: Callable[[str, str | None], str] = python_spelling) -> str:
        """The message with each ``{arg:...}`` spelled by ``spell(name, value or None)``."""
        return _ARG.sub(lambda m: spell(m.group(1), m.group(2)), self.template)

    def __str__(self) -> str:
        return self.render()


class DipError(Spelled, Exception):
    """Base class of every error that is the user's to fix."""


class InputError(DipError):
    """A bad file or option: missing, unreadable, wrong size, would overwrite something."""


class ConfigError(InputError):
    """An unknown config key, a value of the wrong type or out of range."""


class RunError(DipError):
    """The optimisation itself failed (diverged beyond recovery, out of memory)."""


def outside_dip() -> int:
    """``warnings.warn``'s stacklevel for the first frame outside this package (by module
    name: ``dip.cli`` too, wherever it is installed) and outside the context managers'
    wrappers around its functions: a warning names the caller's line, as Python 3.12's
    ``skip_file_prefixes`` would, wherever in dip it is raised. In a thread dip started (no
    caller's frame above it) it names dip's last line."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and _ours(frame):
        frame, level = frame.f_back, level + 1
    if frame.f_globals.get("__name__") == "threading":
        return max(1, level - 1)
    return level


def _ours(frame: Any) -> bool:
    module = frame.f_globals.get("__name__", "")
    return module == "dip" or module.startswith("dip.") or module == "contextlib"


@contextlib.contextmanager
def held_until_start() -> Iterator[Callable[[Any], None]]:
    """The warnings of a run's set-up, held until its fit starts (``release``, restore's
    ``on_start``) and dropped if it never does: a run refused after them (a 16-bit input
    written as JPEG, then a reference of another size) showed the warnings of a run that did
    not happen before its one error, two lines or more for one mistake."""
    stack = contextlib.ExitStack()
    held = stack.enter_context(warnings.catch_warnings(record=True))
    released = False

    def release(_start: Any = None) -> None:
        nonlocal released
        if not released:
            released = True
            stack.close()  # the caller's filters and display again, then what was held
            for said in held:
                warn_again(said.message, said.category, said.filename, said.lineno,
                           source=said.source)

    try:
        yield release
    finally:
        if not released:
            stack.close()


def warn_again(message: Warning | str, category: type[Warning], filename: str, lineno: int,
               **where: Any) -> None:
    """``warnings.warn_explicit`` of a warning made elsewhere (a worker's, one held): where a
    caller's filter makes warnings errors, it is written to stderr as dip shows one, not
    raised into the run that passes it on."""
    try:
        warnings.warn_explicit(message, category, filename, lineno, **where)
    except Warning:
        sys.stderr.write(f"dip: warning: {message}\n")
