"""Layout and import direction: the device side imports without torch, the CLI answers in one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

_BLOCK_TORCH = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("torch is blocked for this test", name=name)
sys.meta_path.insert(0, _Block())
"""


def _run_py(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module", ["runtimes", "apps", "edgeseg", "edgeseg.cli"])
def test_device_side_imports_without_torch(module):
    res = _run_py(_BLOCK_TORCH + f"import {module}\nassert 'torch' not in sys.modules\nprint('ok')")
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_blocking_torch_really_blocks():
    # The test above would be meaningless if the block did not work.
    res = _run_py(_BLOCK_TORCH + "import torch")
    assert res.returncode != 0 and "blocked" in res.stderr


def test_cli_help_without_torch_and_models_error_is_one_line():
    res = _run_py(_BLOCK_TORCH + "from edgeseg.cli import main\nsys.exit(main(['models']))")
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
    assert "pip install" in res.stderr  # names what to install


def test_top_level_layout():
    for entry in ["edgeseg", "converters", "runtimes", "benchmarks", "apps", "tests", "pyproject.toml",
                  "README.md", "constraints.txt", ".ci/run"]:
        assert (REPO / entry).exists(), entry


def test_constraints_pin_torch_to_the_local_cpu_wheel():
    pins = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert pins["torch"] == "2.13.0"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeseg", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_cli_models_json_matches_paper():
    res = _cli("models", "ultralightunet*", "--format", "json")
    assert res.returncode == 0, res.stderr
    family_2d = {"ultralightunet-t", "ultralightunet-s", "ultralightunet", "ultralightunet-m", "ultralightunet-l"}
    rows = {r["name"]: r for r in json.loads(res.stdout) if r["name"] in family_2d}
    assert set(rows) == family_2d
    for r in rows.values():
        assert {"name", "params", "flops", "input_size"} <= set(r)
        assert r["input_size"] == [256, 256]
        assert abs(r["flops"] / 1e9 / r["paper_gflops"] - 1) < 0.03
        assert round(r["params"] / 1e6, 3) == pytest.approx(r["paper_params_m"], rel=0.01)


def test_cli_errors_are_one_line_without_traceback():
    res = _cli("info", "ultralightunet-x")
    assert res.returncode == 2
    assert res.stderr.startswith("edgeseg: error: unknown model") and "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0
    res = _cli("info", "ultralightunet-t", "--img-size", "100")
    assert res.returncode == 2 and "multiple of 32" in res.stderr


def test_cli_info_json_profiles_at_requested_size():
    res = _cli("info", "ultralightunet-s", "--img-size", "128", "--format", "json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["profile"]["input_size"] == [128, 128]
    assert info["profile"]["params"] == 93050
    # FLOPs scale with the pixel count: a quarter of the 256x256 figure.
    assert abs(info["profile"]["flops"] * 4 / 124.5e6 - 1) < 0.01


def test_atomic_writes_leave_no_partial_file_and_normal_permissions(tmp_path):
    import os

    from edgeseg.common.io import atomic_path, atomic_write_json

    dest = tmp_path / "a.json"
    atomic_write_json(dest, {"x": 1})
    assert json.loads(dest.read_text()) == {"x": 1}
    assert os.stat(dest).st_mode & 0o044  # readable by group/others under a normal umask
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_apps_do_not_reach_back_into_the_cli():
    # apps -> runtimes -> edgeseg: the demo's own entry point must not import edgeseg.cli (which imports apps).
    res = _run_py(_BLOCK_TORCH + "import edgeseg.apps.endoscopy, edgeseg.apps.endoscopy.cli, edgeseg.apps.endoscopy.__main__\n"
                  "assert not any(m.startswith('edgeseg.cli') for m in sys.modules), 'edgeseg.cli imported'\n"
                  "print('ok')")
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_cli_output_cut_short_by_the_reader_is_not_an_error(monkeypatch, capsys):
    # `edgeseg models --format json | head -c 10`: the pipe closes while we write
    from edgeseg.cli import main

    class ClosedPipe:
        def write(self, _):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self):
            raise ValueError("no file descriptor")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["models", "--format", "json"]) == 1
    assert capsys.readouterr().err == ""


def test_every_reporting_subcommand_takes_the_one_output_option():
    """--format text|table|json and --json mean the same on every command that prints a result."""
    import argparse

    from edgeseg.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("models", "info", "devices", "convert", "evaluate", "predict", "bench"):
        opts = {o: a for a in sub.choices[name]._actions for o in a.option_strings}
        assert opts["--format"].choices == ["text", "table", "json"], name
        assert opts["--json"].dest == "format" and opts["--json"].const == "json", name


@pytest.mark.parametrize("argv", [
    ["train", "--model", "ultralightunet-t", "--data", "synthetic", "--img-size", "0"],
    ["train", "--model", "ultralightunet-t", "--data", "synthetic", "--threads", "0"],
    ["evaluate", "--model", "ultralightunet-t", "--data", "synthetic", "--img-size", "0"],
    ["evaluate", "--model", "ultralightunet-t", "--data", "synthetic", "--threads", "0"],
    ["bench", "--model", "ultralightunet-t", "--img-size", "0"],
    ["bench", "--model", "ultralightunet-t", "--threads", "0"],
    ["predict", "--model", "ultralightunet-t", "--input", "x", "--out", "y", "--threads", "0"],
    ["demo", "--model", "ultralightunet-t", "--threads", "0"],
])
def test_zero_sizes_and_thread_counts_are_refused_not_read_as_default(argv, capsys):
    from edgeseg.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and "must be >= 1, got 0" in capsys.readouterr().err
