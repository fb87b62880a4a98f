"""weir: a Git-driven, declarative automation server."""

__version__ = "0.1.0"
