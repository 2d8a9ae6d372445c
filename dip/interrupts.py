"""Finishing what must not be cut in half: a signal that arrives while a finished result is
being drawn and written takes effect right after, not in the middle."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: the signals a program may turn into an exception (Ctrl-C, and SIGTERM and SIGHUP where
#: the program installed a handler for them, as the ``dip`` command does)
STOPPING = (signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else []))


@contextmanager
def deferred() -> Iterator[list[int]]:
    """While inside, SIGINT, SIGTERM and SIGHUP are only noted; on leaving, the first one
    noted is passed to the handler it would have reached (which raises KeyboardInterrupt, or
    whatever the program installed). Yields the list of signals noted so far: a caller that
    is already stopping clears it to drop them. Signals whose disposition is not a Python
    function (the default action, ignored) are left alone, and outside the main thread this
    does nothing: Python runs signal handlers there only."""
    pending: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield pending
        return
    saved = {signum: signal.getsignal(signum) for signum in STOPPING}
    handled = {signum: h for signum, h in saved.items() if callable(h)}
    for signum in handled:
        signal.signal(signum, lambda s, frame: pending.append(s))
    try:
        yield pending
    finally:
        for signum, handler in handled.items():
            signal.signal(signum, handler)
        if pending:
            handled[pending[0]](pending[0], None)
