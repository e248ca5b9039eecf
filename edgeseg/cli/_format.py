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


def add_format_argument(parser, choices: Sequence[str] = ("table", "json")) -> None:
    parser.add_argument("--format", choices=list(choices), default=choices[0], help="output format")
