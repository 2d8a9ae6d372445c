"""The ``dip`` console script: signal handlers first, then the heavy imports.

torch takes a second or more to import. SIGINT and SIGTERM are blocked meanwhile, not turned
into an exception half-way through an import: one that arrives then is delivered the moment the
import is done, to the handlers of :mod:`dip.cli.signals`, and the run stops with nothing
written.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from collections.abc import Callable

from dip import streams
from dip.cli import signals

#: what to say where no writable temporary folder is found (exit 2, as for bad input: the
#: user's to fix, and nothing was run)
NO_TEMPORARY_FOLDER = ("no writable temporary folder (TMPDIR, /tmp, /var/tmp, the current "
                       "folder); set TMPDIR to one")


def require_temporary_folder() -> None:
    """Exit 2 with one line unless :func:`tempfile.gettempdir` finds a folder it can write
    in (it raises FileNotFoundError where none is, and remembers the one it found). Not for
    the help and the version, which run nothing."""
    if not sys.argv[1:] or {"--help", "-h", "--version"} & set(sys.argv[1:]):
        return
    try:
        tempfile.gettempdir()
    except OSError:
        sys.stderr.write(f"dip: error: {NO_TEMPORARY_FOLDER}\n")
        sys.exit(2)


def require_current_folder() -> None:
    """Exit 2 with one line where the current folder was deleted (or cannot be read): torch's
    import then failed with oneMKL's "FATAL ERROR: Cannot load libtorch_cpu.so", for the help
    and the version too."""
    try:
        os.getcwd()
    except OSError as exc:
        sys.stderr.write(f"dip: error: the current folder cannot be used ({exc.strerror}: "
                         f"deleted?); change to another folder\n")
        sys.exit(2)


def load_main() -> Callable[[], None]:
    """The click app (torch with it); a library that cannot be loaded (out of address space
    under ``ulimit -v``, a broken install) is one line and exit 1, not a traceback."""
    try:
        from dip.cli.main import main as run
    except (ImportError, OSError, MemoryError) as exc:  # (torch's own loader raises OSError)
        why = next((line.strip() for line in str(exc).splitlines() if line.strip()),
                   type(exc).__name__)  # (numpy's message starts with blank lines)
        sys.stderr.write(f"dip: error: cannot load the libraries dip runs on: {why}\n")
        sys.exit(1)
    return run


def escape_what_the_terminal_cannot_show() -> None:
    """A name the output's encoding cannot hold (照片.png where it is Latin-1, or Windows'
    code page when the output goes to a file) is written escaped (``\\u7167``), as Python's
    standard error already writes it: standard output's strict default ended a finished
    run in a traceback at its 'wrote ...' line."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)  # (None: not a text file)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def main() -> None:
    streams.open_closed_standard_streams()
    streams.survive_closed_pipes()
    signals.install()
    escape_what_the_terminal_cannot_show()
    stopping = tuple(signals.EXIT_CODES)
    blocking = hasattr(signal, "pthread_sigmask")  # POSIX
    try:
        require_current_folder()
        require_temporary_folder()
        if blocking:
            signal.pthread_sigmask(signal.SIG_BLOCK, stopping)
        run = load_main()
        if blocking:  # a signal that came meanwhile is raised here
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stopping)
    except KeyboardInterrupt:  # nothing is read or written yet
        signals.interrupted()
    try:
        run()
    finally:
        signals.finished()
