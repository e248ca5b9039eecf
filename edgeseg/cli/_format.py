"""Output helpers shared by subcommands: plain tables and JSON on stdout."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any


def print_json(obj: Any) -> None:
    """One JSON document on stdout (everything else a command says goes to stderr)."""
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A left-aligned plain-text table."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


FORMATS = ("text", "table", "json")  # "text" and "table" are the same human-readable output


def add_format_argument(parser) -> None:
    """The output options every subcommand shares: ``--format text|table|json`` and ``--json`` (its
    shorthand). Human-readable text is the default; JSON is one document on stdout, the rest on stderr."""
    parser.add_argument("--format", choices=list(FORMATS), default="text",
                        help="output: text (or table, the same) or json (default text)")
    parser.add_argument("--json", dest="format", action="store_const", const="json",
                        help="the same as --format json")


def wants_json(args: Any) -> bool:
    """Whether the parsed arguments ask for JSON output."""
    return getattr(args, "format", "text") == "json"
