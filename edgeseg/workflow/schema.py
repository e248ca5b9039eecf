"""How recipe values are checked: one ``ValueError`` line that names the key, the value and what is allowed.

:func:`coerce` checks a value against a type hint (the fields of ``TrainConfig``, ``BenchConfig`` and the
recipe's own sections); :func:`pass_through` checks a whole section whose keys are a dataclass's fields.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any


def fail(where: str, msg: str) -> ValueError:
    return ValueError(f"{where}: {msg}")


def in_recipe_terms(where: str, exc: ValueError, names: list[str]) -> ValueError:
    """A check's message with its command-line flags (``--iters``) named as recipe keys (``bench.iters``)."""
    import re

    section = where.rsplit(": ", 1)[-1]

    def key(m: re.Match) -> str:
        name = m.group(1).replace("-", "_")
        return f"{section}.{name}" if name in names else m.group(0)

    file = where.rsplit(": ", 1)[0]
    return ValueError(f"{file}: {re.sub(r'--([a-z][a-z0-9-]*)', key, str(exc))}")


def unknown_keys(where: str, got: dict[str, Any], valid: tuple[str, ...] | list[str]) -> None:
    unknown = [k for k in got if k not in valid]
    if not unknown:
        return
    hints = []
    for k in unknown:
        close = difflib.get_close_matches(str(k), list(valid), n=1)
        hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise fail(where, f"unknown key {', '.join(hints)}; allowed: {', '.join(valid)}")


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin in (tuple, list):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
        return "a list"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null",
            dict: "a mapping"}.get(hint, getattr(hint, "__name__", str(hint)))


def coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against the type ``hint`` of a dataclass field (lists become tuples where a tuple is
    wanted; a number written as text, like ``3e-3``, which YAML reads as a string, becomes a float).

    Raises:
        ValueError: ``where: expected <kind>, got <value>``.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    bad = fail(where, f"expected {_describe(hint)}, got {value!r}")
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise bad
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except ValueError:
                continue
        raise bad
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if hint is str:
        if isinstance(value, str):
            return value
        raise bad
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise bad
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise bad
            return tuple(coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        seq = [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(seq) if origin is tuple else seq
    if origin is dict or hint is dict:
        if isinstance(value, dict):
            return dict(value)
        raise bad
    return value


def pass_through(where: str, raw: dict[str, Any], cls: type, reserved: tuple[str, ...],
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A section whose keys are the fields of ``cls`` (less ``reserved``), values checked by their types.

    The fields are read from the class itself, so an option added to it is accepted here the day it lands.
    """
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name not in reserved]
    valid = [*names, *(extra or {})]
    for key in raw:
        if key in reserved:
            raise fail(f"{where}.{key}", f"set by the run itself, not in the {where.rsplit(': ', 1)[-1]} "
                        f"section; allowed: {', '.join(valid)}")
    unknown_keys(where, raw, valid)
    out = {}
    for key, value in raw.items():
        hint = (extra or {}).get(key) or hints[key]
        out[key] = coerce(value, hint, f"{where}.{key}")
    return out
