"""dip — restore a damaged photograph with Deep Image Prior (Ulyanov et al., CVPR 2018).

    >>> import dip
    >>> result = dip.restore("denoise", "noisy.png", output="clean.png")  # doctest: +SKIP

:func:`restore` does what the ``dip`` command does; :func:`fit` is the loop underneath, for
tensors.

The names below are imported on first use (PEP 562), so that ``import dip`` alone does not
import torch: the ``dip`` command installs its signal handlers before that heavy import, and a
Ctrl-C in the first second is answered like any other.
"""

from __future__ import annotations

import importlib

from dip.version import __version__  # noqa: F401  (re-exported)

#: public name -> the module that defines it
_EXPORTS = {
    "ConfigError": "dip.errors", "DipError": "dip.errors", "InputError": "dip.errors",
    "RunError": "dip.errors",
    "FitResult": "dip.fitting", "Progress": "dip.fitting", "fit": "dip.fitting",
    "Restoration": "dip.run", "corrupt": "dip.damage", "restore": "dip.run",
    "RunRequest": "dip.request",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dip' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
