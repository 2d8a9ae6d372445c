"""``python -m dip.cli``: the ``dip`` command."""

from dip.cli.entry import main

main()
