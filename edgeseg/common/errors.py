"""One-line error text, for the messages that wrap a library's exception (torch-free, stdlib only)."""

from __future__ import annotations


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of ``exc``'s message, or its type name when it has none; at most ``limit`` characters.

    Examples:
        >>> first_line(RuntimeError("bad graph\\n  at node 7"))
        'bad graph'
        >>> first_line(ValueError())
        'ValueError'
    """
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line[:limit] if limit else line
