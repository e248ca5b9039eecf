"""A full device (issue 15, case 10): every write names its file in one line, and the partial file is never renamed
into place. The device is not filled: the writes are made to fail as they do on a full device (ENOSPC from the
OS; torch's and the C++ writers' own messages, with no errno, when no space is left)."""

from __future__ import annotations

import errno
import json

import pytest

from edgeseg.common import io as eio
from edgeseg.common.io import WriteError, atomic_write_json, write_error

TORCH_FULL = "[enforce fail at inline_container.cc:626] . unexpected pos 4800 vs 4736"


def _no_temporaries(folder) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


def _torch_save_fills_the_device(monkeypatch) -> None:
    """``torch.save`` as on a full device: half an archive on disk, then torch's own message (no errno), and no
    free space left."""
    from edgeseg.train import checkpoint

    def half_then_fail(obj, path):
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 half an archive")
        raise RuntimeError(TORCH_FULL)

    monkeypatch.setattr(checkpoint.torch, "save", half_then_fail)
    monkeypatch.setattr(eio, "free_bytes", lambda path: 0)


def test_enospc_in_an_atomic_write_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    dest = tmp_path / "bench.json"
    dest.write_text('{"ok": true}\n')

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(eio.os, "fsync", full)
    with pytest.raises(WriteError) as exc:
        atomic_write_json(dest, {"rows": list(range(100))})
    assert str(exc.value) == (f"no space left on device writing {dest}; free some space (or write elsewhere) "
                              "and run again")
    assert json.loads(dest.read_text()) == {"ok": True} and _no_temporaries(tmp_path)


def test_a_checkpoint_that_torch_cannot_finish_is_reported_as_a_full_device(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from edgeseg.train import checkpoint

    best = tmp_path / "best.pt"
    torch.save({"state_dict": {}}, best)
    good = best.read_bytes()

    _torch_save_fills_the_device(monkeypatch)
    with pytest.raises(WriteError, match=rf"^no space left on device writing {best}; free some space"):
        checkpoint.save_checkpoint({"state_dict": {}}, best)
    assert best.read_bytes() == good and _no_temporaries(tmp_path)
    # the same message with room on the device is another failure, and says what the writer said
    monkeypatch.setattr(eio, "free_bytes", lambda path: 50 << 30)
    with pytest.raises(WriteError, match=rf"^cannot write {best} \(RuntimeError: \[enforce fail"):
        checkpoint.save_checkpoint({"state_dict": {}}, best)
    assert best.read_bytes() == good and _no_temporaries(tmp_path)


def test_only_write_failures_are_mapped():
    assert write_error(ValueError("bad input"), "x") is None
    assert write_error(RuntimeError("shape mismatch"), "x") is None
    assert write_error(OSError(errno.EDQUOT, "Disk quota exceeded"), "x").errno == errno.EDQUOT
    assert str(write_error(OSError(errno.EIO, "Input/output error"), "x")).startswith("I/O error writing x")


def test_predict_on_a_full_device_exits_in_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    from PIL import Image

    from edgeseg.cli import main
    from edgeseg.common.phantoms import synthetic_sample

    img = tmp_path / "a.png"
    Image.fromarray(synthetic_sample(0, 64)[0]).save(img)
    out = tmp_path / "preds"

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(eio.os, "fsync", full)
    code = main(["predict", "--artifact", str(_shipped()), "--input", str(img), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0] == (f"edgeseg: error: no space left on device writing {out / 'a_mask.png'}; free some space "
                      "(or write elsewhere) and run again")
    assert list(out.iterdir()) == []  # no mask, no overlay, no predictions.json, no temporaries


def test_convert_on_a_full_device_keeps_no_artifact_and_no_manifest(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    from edgeseg.cli import main

    def full(*args, **kwargs):
        raise RuntimeError("basic_ios::clear: iostream error")  # what C++ writers say, with no errno

    monkeypatch.setattr(onnx, "save", full)
    monkeypatch.setattr(eio, "free_bytes", lambda path: 0)
    out = tmp_path / "exports"
    code = main(["convert", "--model", "ultralightunet-t", "--target", "onnx", "--img-size", "64", "--no-verify",
                 "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(f"edgeseg: error: no space left on device writing "
                                            f"{out / 'ultralightunet-t_fp32.onnx'}; free some space"), err
    assert "Traceback" not in "\n".join(err)
    assert list(out.iterdir()) == []  # no artifact, no manifest, no staging folder


def test_train_on_a_full_device_names_the_checkpoint(tmp_path, monkeypatch, capsys):
    """It used to say "unexpected RuntimeError: [enforce fail at inline_container.cc...]" (exit 1)."""
    pytest.importorskip("torch")
    from edgeseg.cli import main

    _torch_save_fills_the_device(monkeypatch)
    run = tmp_path / "run"
    code = main(["train", "--model", "ultralightunet-t", "--data", "synthetic:8", "--img-size", "32", "--epochs",
                 "1", "--max-steps", "1", "--batch-size", "2", "--threads", "1", "--no-progress", "--out", str(run)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1] == (f"edgeseg: error: no space left on device writing {run / 'best.pt'}; free "
                                     "some space (or write elsewhere) and run again"), err
    assert not list(run.glob("*.pt")) and not list(run.glob(".*"))


def _shipped():
    from edgeseg import runtimes

    return runtimes.shipped_artifact("ultralightunet-s")
