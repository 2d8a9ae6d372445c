"""Errors a user can cause. The CLI prints their message as one line and exits non-zero."""


class DipError(Exception):
    """Base class of every error that is the user's to fix; ``exit_code`` is the CLI's."""

    exit_code = 1


class InputError(DipError):
    """A bad file or option: missing, unreadable, wrong size, would overwrite something."""

    exit_code = 2


class ConfigError(InputError):
    """An unknown config key, a value of the wrong type or out of range."""


class RunError(DipError):
    """The optimisation itself failed (diverged beyond recovery, out of memory)."""

    exit_code = 1
