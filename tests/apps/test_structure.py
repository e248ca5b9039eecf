"""The demo's shape (issue 20): modules under ~450 lines, and no public function with more than 8 parameters
(options travel as objects: DemoConfig, StabilizerConfig, CameraMotion, ``**load``)."""

from __future__ import annotations

import ast

from tests.conftest import REPO

MAX_LINES = 450
MAX_PARAMS = 8


def _public_functions(tree: ast.Module):
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            yield node.name, node
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                        not item.name.startswith("_") or item.name in ("__init__", "__call__")):
                    yield f"{node.name}.{item.name}", item


def test_demo_modules_are_short_and_take_options_as_objects():
    too_long, too_many = [], []
    for path in sorted((REPO / "apps").rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > MAX_LINES:
            too_long.append(f"{path.relative_to(REPO)}: {len(text.splitlines())} lines")
        for name, fn in _public_functions(ast.parse(text)):
            a = fn.args
            n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) - (1 if a.args and a.args[0].arg == "self" else 0)
            if n > MAX_PARAMS:
                too_many.append(f"{path.relative_to(REPO)}: {name} takes {n} parameters")
    assert not too_long, too_long
    assert not too_many, too_many
