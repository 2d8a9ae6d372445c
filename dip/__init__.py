"""dip — restore a damaged photograph with Deep Image Prior (Ulyanov et al., CVPR 2018).

    >>> import dip
    >>> result = dip.restore("denoise", "noisy.png", output="clean.png")  # doctest: +SKIP

:func:`restore` does what the ``dip`` command does; :func:`fit` is the loop underneath, for
tensors.
"""

__version__ = "0.1.0"

from dip.errors import ConfigError, DipError, InputError, RunError  # noqa: E402
from dip.fit import FitResult, Progress, fit  # noqa: E402
from dip.runner import Restoration, corrupt, restore  # noqa: E402

__all__ = ["ConfigError", "DipError", "FitResult", "InputError", "Progress", "Restoration",
           "RunError", "__version__", "corrupt", "fit", "restore"]
