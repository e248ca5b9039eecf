"""The import graph of the parts is the one README.md draws, and the install names one package.

    apps -> runtimes;  benchmarks -> apps, converters, runtimes -> edgeseg core;  everything -> edgeseg.common;
    edgeseg.workflow (`edgeseg run`) sits above training, converters and benchmarks, and only the CLI imports it;
    only edgeseg.cli (the entrance hall) reaches every part.

Every import in the tree is read (module level and inside functions), so a lazy import that breaks the
direction fails here as surely as a top-level one.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import tomllib

from tests.conftest import REPO

# repository folder -> part; files under edgeseg/ are split further by _part_of_file
FOLDERS = {"converters": "converters", "runtimes": "runtimes", "benchmarks": "benchmarks", "apps": "apps"}
ALLOWED = {
    "common": set(),
    "core": {"common"},
    "runtimes": {"common", "core"},
    "converters": {"common", "core", "runtimes"},
    "benchmarks": {"common", "core", "runtimes", "converters", "apps"},
    "apps": {"common", "runtimes"},
    "workflow": {"common", "core", "runtimes", "converters", "benchmarks"},
    "cli": {"common", "core", "runtimes", "converters", "benchmarks", "apps", "workflow"},
}
# the one exception to "the device side stays out of the core": the FP32 torch reference backend builds
# the model, and it imports the core only when it loads
REACHES_CORE = {"runtimes/torch_runtime.py"}


def _part_of_file(rel: Path) -> str:
    top = rel.parts[0]
    if top in FOLDERS:
        return FOLDERS[top]
    if rel.parts[1] in ("cli", "__main__.py"):
        return "cli"
    if rel.parts[1] == "workflow":
        return "workflow"
    return "common" if rel.parts[1] == "common" else "core"


def _part_of_module(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "edgeseg":
        return None
    if len(parts) == 1:
        return "core"
    return {"cli": "cli", "__main__": "cli", "common": "common", "workflow": "workflow", **FOLDERS}.get(parts[1],
                                                                                                      "core")


def _sources() -> list[Path]:
    return [p for top in ("edgeseg", *FOLDERS) for p in sorted((REPO / top).rglob("*.py"))]


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mod = node.module
            if mod == "edgeseg":  # from edgeseg import runtimes
                out += [(node.lineno, f"edgeseg.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, mod))
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: relative import; the house uses absolute imports")
    return out


def test_imports_run_the_way_the_readme_draws():
    wrong = []
    for path in _sources():
        rel = path.relative_to(REPO)
        src = _part_of_file(rel)
        for line, mod in _imports(path):
            if mod.split(".")[0] in FOLDERS:
                wrong.append(f"{rel}:{line}: imports {mod!r}: the installed name is 'edgeseg.{mod}'")
                continue
            dst = _part_of_module(mod)
            if dst is None or dst == src:
                continue
            if dst == "core" and src == "runtimes" and rel.as_posix() not in REACHES_CORE:
                wrong.append(f"{rel}:{line}: the device side imports the core ({mod})")
            elif dst not in ALLOWED[src]:
                wrong.append(f"{rel}:{line}: {src} -> {dst} ({mod}) is against the drawn direction")
    assert not wrong, "\n".join(wrong)


def test_common_needs_only_the_base_install():
    """The standard library and the base dependencies (numpy, Pillow): what a device always has."""
    third = set()
    for path in sorted((REPO / "edgeseg" / "common").rglob("*.py")):
        for _, mod in _imports(path):
            top = mod.split(".")[0]
            if top not in sys.stdlib_module_names and top not in ("edgeseg", "numpy", "PIL", "__future__"):
                third.add(f"{path.name}: {mod}")
    assert not third, sorted(third)


def test_the_install_names_every_package_folder_once():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = cfg["package-dir"]
    listed = set(cfg["packages"])
    want = set()
    for name, folder in dirs.items():
        for init in (REPO / folder).rglob("__init__.py"):
            sub = init.parent.relative_to(REPO / folder).parts
            want.add(".".join([name, *sub]))
    assert listed == want, f"pyproject packages: missing {sorted(want - listed)}, extra {sorted(listed - want)}"
    assert all(n == "edgeseg" or n.startswith("edgeseg.") for n in listed)


@pytest.mark.parametrize("name", ["edgeseg.runtimes", "edgeseg.apps", "edgeseg.converters", "edgeseg.benchmarks"])
def test_parts_install_under_the_one_name(name):
    import importlib

    mod = importlib.import_module(name)
    folder = name.split(".")[1]
    assert Path(mod.__file__).resolve().parent == (REPO / folder).resolve()
