"""dip's version, in a module of its own: the package and its record writer read it without
importing each other."""

__version__ = "0.1.0"
