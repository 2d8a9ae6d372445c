"""The process's standard streams as a run needs them: open (a caller may have closed one)
and unbreakable (a pipe's reader may leave). Standard library only: the ``dip`` command
calls these before it imports torch, and ``dip run``'s workers when they start."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import sys
from typing import Any


def open_closed_standard_streams() -> None:
    """A standard stream closed by the caller (``2>&-``, a daemon's) is opened on the null
    device: with none, Python's ``sys.stderr`` is None, and the progress bar's first write
    raised in a fit's thread while holding tqdm's lock, so that ``dip denoise`` hung for
    ever. What would have been written there goes nowhere, as the caller chose."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        try:
            opened = os.open(os.devnull, os.O_RDWR)
        except OSError:
            return
        if opened != fd:  # the lowest free descriptor is this one, unless it is not free
            os.dup2(opened, fd)
            os.close(opened)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, mode, closefd=False, errors="backslashreplace"))


class _PipeDrain(io.FileIO):
    """A standard output that takes what its reader no longer reads: a closed pipe (``|
    head -1``, a log reader gone) is not the run's failure."""

    def write(self, data: Any) -> int:
        try:
            return super().write(data)
        except OSError as exc:  # EPIPE; Windows says EINVAL for a pipe whose reader left
            if not (isinstance(exc, BrokenPipeError)
                    or (sys.platform == "win32" and exc.errno == errno.EINVAL)):
                raise
            return memoryview(data).nbytes


def survive_closed_pipes() -> None:
    """Standard output and error that are pipes drop what a closed pipe cannot take instead
    of raising: ``| head -1`` stopped a run at its first message with nothing written, or
    turned a finished run's exit code into 1, with no message (click's answer to EPIPE)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        try:
            mode = os.fstat(stream.fileno()).st_mode
        except (AttributeError, OSError, ValueError):  # not a file: a caller's own object
            continue
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            continue
        with contextlib.suppress(OSError):
            stream.flush()
        raw = _PipeDrain(stream.fileno(), "w", closefd=False)
        # as unbuffered as it was (python -u, PYTHONUNBUFFERED: no buffer under the text)
        buffered = isinstance(getattr(stream, "buffer", None), io.BufferedIOBase)
        setattr(sys, name, io.TextIOWrapper(
            io.BufferedWriter(raw) if buffered else raw, encoding=stream.encoding,
            errors=stream.errors, line_buffering=stream.line_buffering,
            write_through=getattr(stream, "write_through", False)))
