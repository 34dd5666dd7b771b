"""Command-line plumbing: the scripts' entry point and its error policy (``app``), and the
one place a config's values are checked before a command runs (``config``)."""

from segmenter.cli.app import main

__all__ = ["main"]
