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
    """--model NAME runs the fastest verified artifact of the model on this machine (converted once and cached;
    see edgeseg.benchmarks.fastest); torch eager only with --runtime torch, or where torch is absent the
    artifact shipped in the package."""
    import sys

    from edgeseg.apps.endoscopy.cli import run
    from edgeseg.common.deps import is_available

    if args.model and not args.artifact and args.runtime is None and is_available("torch"):
        from edgeseg.benchmarks.fastest import fastest_artifact

        choice = fastest_artifact(args.model, threads=args.threads,
                                  log=lambda m: print(f"edgeseg demo: {m}", file=sys.stderr, flush=True))
        print(f"edgeseg demo: {choice.line()}", file=sys.stderr, flush=True)
        args.artifact = str(choice.artifact)
    return run(args)
