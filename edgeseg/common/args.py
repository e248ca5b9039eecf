"""Command-line value checks shared by every command (the edgeseg CLI and the demo app alike)."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An argparse ``type`` for counts and sizes: a whole number >= 1. Zero is refused, not read as "default".

    Examples:
        >>> parser.add_argument("--threads", type=positive_int)
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value} (leave the option out for the default)")
    return value
