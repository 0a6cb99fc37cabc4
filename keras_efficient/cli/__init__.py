"""The `keras-efficient` command line."""

from keras_efficient.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
