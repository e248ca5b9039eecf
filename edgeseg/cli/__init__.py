"""The ``edgeseg`` command line: one module per subcommand, each with ``add_arguments`` and ``main``.

Subcommand modules are discovered in this package (any module not starting with ``_``) and must stay cheap
to import: heavy imports (torch, converters, runtimes, benchmarks, apps) happen inside their ``main``.
Errors reach the user as one line and a non-zero exit; ``EDGESEG_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from edgeseg import __version__
from edgeseg.common.errors import first_line

# Listing order in --help; discovered modules not named here follow alphabetically.
_ORDER = ["models", "info", "devices", "train", "evaluate", "predict", "convert", "tune", "bench", "run", "demo"]


class UserError(Exception):
    """An error caused by the user's input or environment; printed as one line, exit code 2."""


def _subcommands() -> list[str]:
    found = {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}
    return [n for n in _ORDER if n in found] + sorted(found - set(_ORDER))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeseg",
        description="Lightweight medical image segmentation, from training to point-of-care devices.",
    )
    parser.add_argument("--version", action="version", version=f"edgeseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _subcommands():
        mod = importlib.import_module(f"edgeseg.cli.{name}")
        doc = (mod.__doc__ or "").strip().splitlines()
        help_line = doc[0] if doc else name
        p = sub.add_parser(name, help=help_line, description=(mod.__doc__ or "").strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_main=mod.main)
    return parser


def _fail(msg: str, code: int) -> int:
    print(f"edgeseg: error: {msg}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edgeseg`` console script."""
    from edgeseg.common.deps import quiet_third_party_logs

    quiet_third_party_logs()
    # Spinning OpenMP workers cost torch 2-70x on shared cores (measured by the bench, docs/notes/issue-7.md);
    # set before torch is imported, and only when the user has not chosen a policy
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_main", None):
        parser.print_help()
        return 0
    if os.environ.get("EDGESEG_DEBUG"):
        return int(args._main(args) or 0)
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:
        # whoever read stdout stopped reading (`edgeseg evaluate --json | head`): nothing to report; point
        # stdout at /dev/null so that the interpreter's final flush does not fail again
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 1
    except ImportError as exc:
        from edgeseg.common.deps import MissingDependencyError, missing_message

        if isinstance(exc, MissingDependencyError) or not exc.name:
            return _fail(first_line(exc), 2)
        return _fail(missing_message(exc.name, f"`edgeseg {args.command}`"), 2)
    except (UserError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        return _fail(first_line(exc), 2)
    except Exception as exc:
        from edgeseg.common.io import write_error

        # a full device, wherever the write happened (atomic writes name their file; others name theirs
        # when the OS does)
        failed = write_error(exc, getattr(exc, "filename", None)) if _looks_like_write(exc) else None
        if failed is not None:
            return _fail(first_line(failed), 2)
        if isinstance(exc, OSError):
            return _fail(f"{type(exc).__name__}: {exc}", 2)
        name = type(exc).__name__  # a bug: still one line, with the way to see more
        return _fail(f"unexpected {name}: {exc} (set EDGESEG_DEBUG=1 for the traceback)", 1)


def _looks_like_write(exc: BaseException) -> bool:
    """A write failure (a WriteError, ENOSPC/EDQUOT, or a writer that says "no space"/"disk is full"), as
    opposed to a read error that happens to share a C++ message."""
    from edgeseg.common.io import NO_SPACE_ERRNOS, WriteError

    if isinstance(exc, WriteError):
        return True
    if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS:
        return True
    text = str(exc)
    return "No space left on device" in text or "disk is full" in text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
