"""How the ``dip`` command stops: Ctrl-C (SIGINT), SIGTERM (``kill``, ``timeout``, SLURM's
time limit, ``docker stop``) and SIGHUP (the terminal closed) all stop a run the same way --
the estimate so far is written, marked ``interrupted`` -- and exit with 128 + the signal's
number (130, 143, 129).

:func:`install` runs before anything heavy is imported (see :mod:`dip.cli.entry`), so a
signal in the first second is answered like a later one. This module imports nothing but the
standard library and :mod:`dip.interrupts` (the stopping signals; standard library only).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import NoReturn

from dip import interrupts

#: the signals that stop a run, and the exit code each one gives: also SIGHUP, which a
#: terminal closed (or an SSH connection lost) sends, where its default would kill the run
#: with its claims and created folders left behind
EXIT_CODES = {signum: 128 + int(signum) for signum in interrupts.STOPPING}  # 130, 143, 129

_received: list[int] = []
#: the standard outputs that were a terminal when the handlers were installed
_terminal: list[int] = []


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by SIGINT or SIGTERM; the fit and ``dip run`` treat it as
    Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum: int, frame: object) -> None:
    _received.append(signum)
    if signum == getattr(signal, "SIGHUP", None):
        _away_from_the_terminal()
    raise Interrupted(signum)


def _away_from_the_terminal() -> None:
    """After a hangup the terminal is gone, and writing to it fails (EIO): what would have
    gone there (the progress bar, the messages) goes nowhere instead. Output redirected to a
    file still goes there."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    for fd in _terminal:
        try:
            os.dup2(devnull, fd)
        except OSError:
            pass
    os.close(devnull)


def install() -> None:
    """SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` from now on (main thread only). A
    signal the process was started with ignored (``nohup``, a background job of a script)
    stays ignored, as Python itself leaves it."""
    # which outputs are the terminal, asked now: once it has hung up, isatty says no
    _terminal[:] = [fd for fd in (1, 2) if os.isatty(fd)]
    for signum in EXIT_CODES:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _raise)


def exit_code() -> int:
    """128 + the last stopping signal received (130 when none was: a KeyboardInterrupt that
    came another way is Ctrl-C too)."""
    return EXIT_CODES.get(_received[-1], 130) if _received else 130


def stopped(code: object) -> bool:
    """Whether a ``SystemExit`` code is a stop's (:func:`exit_code`)."""
    return code == exit_code()


def interrupted() -> None:
    """Say so on stderr and exit with the signal's code."""
    sys.stderr.write("dip: interrupted\n")
    sys.exit(exit_code())


def finished() -> None:
    """The run is over: its files are written, or its error said. Ctrl-C from now on (pressed
    as the run ended) would only interrupt the interpreter's shutdown, torch's teardown, with
    a traceback on stderr ("Exception ignored in atexit callback") and exit 0: it is ignored
    for the last moments. SIGTERM and SIGHUP end the process as they would without dip (a
    shutdown that hangs can still be stopped)."""
    for signum in EXIT_CODES:
        if signal.getsignal(signum) is not signal.SIG_IGN:  # (nohup's stays ignored)
            signal.signal(signum, signal.SIG_IGN if signum == signal.SIGINT else signal.SIG_DFL)


def leave(code: int) -> NoReturn:
    """End the ``dip`` process after a stop, at once: everything the run writes is written
    and closed by then. Not through the interpreter's shutdown: after a Ctrl-C during fits
    stepped on several threads (restarts, tiles), torch's C++ teardown at exit sometimes calls
    ``std::terminate`` (``terminate called without an active exception``, exit status -6
    instead of 130; about 1 run in 4 here). Only the console script calls this; a caller of
    :func:`dip.cli.main.cli` gets its ``SystemExit`` as before."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said there
            pass
    os._exit(code)
