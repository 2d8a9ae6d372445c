"""The ``dip`` console script: signal handlers first, then the heavy imports.

torch takes a second or more to import. SIGINT and SIGTERM are blocked meanwhile, not turned
into an exception half-way through an import: one that arrives then is delivered the moment the
import is done, to the handlers of :mod:`dip.cli.signals`, and the run stops with nothing
written.
"""

from __future__ import annotations

import signal

from dip.cli import signals


def main() -> None:
    signals.install()
    stopping = tuple(signals.EXIT_CODES)
    blocking = hasattr(signal, "pthread_sigmask")  # POSIX
    try:
        if blocking:
            signal.pthread_sigmask(signal.SIG_BLOCK, stopping)
        from dip.cli.main import main as run
        if blocking:  # a signal that came meanwhile is raised here
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stopping)
    except KeyboardInterrupt:  # nothing is read or written yet
        signals.interrupted()
    run()
