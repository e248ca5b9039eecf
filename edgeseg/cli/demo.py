"""Live polyp segmentation on a camera, a video file or the synthetic endoscopy sequence (the full help text lives
with the app: apps/endoscopy/cli.py)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    # The demo's arguments live with the app (apps.endoscopy.cli), which does not import edgeseg.cli.
    from edgeseg.apps.endoscopy import cli as app_cli

    p.description = app_cli.__doc__.split("\n\n", 1)[1]  # the app's help, without its module line
    app_cli.add_arguments(p)


def main(args: argparse.Namespace) -> int:
    from edgeseg.apps.endoscopy.cli import run

    return run(args)
