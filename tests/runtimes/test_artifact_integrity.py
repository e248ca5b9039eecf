"""An artifact runs only as the files its manifest describes; the shipped artifact is one such and runs torch-free."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from edgeseg import runtimes

pytest.importorskip("onnxruntime")


def _edit_a_weight(path) -> None:
    """Change one weight of an ONNX file (a still-valid model whose numbers are no longer the verified ones)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    w = numpy_helper.to_array(init).copy()
    w.flat[0] += 1.0
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(model, str(path))


@pytest.fixture
def copied(tmp_path):
    src = runtimes.shipped_artifact("ultralightunet-s")
    assert src is not None and src.name == "ultralightunet-s_fp32.onnx"
    dst = tmp_path / src.name
    shutil.copy(src, dst)
    shutil.copy(runtimes.manifest_path(src), runtimes.manifest_path(dst))
    return dst


def test_shipped_artifact_is_verified_and_loads_by_model_name():
    m = runtimes.find_manifest(runtimes.shipped_artifact("ultralightunet-s"))
    assert m.parity["passed"] and m.parity["max_abs_diff"] < 1e-4 and m.parity["mask_agreement"] == 1.0
    assert m.weights["source"] == "shipped" and m.weights["path"] == "edgeseg/weights/ultralightunet-s.pt"
    from edgeseg.common.io import sha256_file
    from edgeseg.weights import shipped_weights

    assert m.weights["sha256"] == sha256_file(shipped_weights("ultralightunet-s"))  # made from these weights
    with runtimes.load("ultralightunet-s", threads=1) as rt:
        assert rt.name == "onnxruntime"
        y = rt.infer(np.zeros((1, 3, 256, 256), np.float32))
    assert y.shape == (1, 1, 256, 256) and np.isfinite(y).all()
    with pytest.raises(FileNotFoundError, match="none is shipped for 'ultralightunet-l'"):
        runtimes.load("ultralightunet-l")


def test_a_modified_artifact_is_refused_and_can_be_opted_in(copied):
    _edit_a_weight(copied)
    with pytest.raises(ValueError, match="differs from what its manifest records.*check_files=False"):
        runtimes.load(copied)
    with runtimes.load(copied, check_files=False, threads=1) as rt:  # edited on purpose
        assert rt.infer(np.zeros((1, 3, 256, 256), np.float32)).shape == (1, 1, 256, 256)


def test_a_swapped_or_truncated_artifact_is_refused(copied, tmp_path):
    copied.write_bytes(copied.read_bytes()[:1000])
    with pytest.raises(ValueError, match="differs from what its manifest records"):
        runtimes.load(copied)
    copied.unlink()
    shutil.copy(runtimes.manifest_path(copied), tmp_path / "lonely.json")
    with pytest.raises(FileNotFoundError):
        runtimes.load(copied)


def test_predict_refuses_a_modified_artifact_in_one_line(copied, tmp_path, capsys):
    from PIL import Image

    from edgeseg.cli import main
    from edgeseg.common.phantoms import synthetic_sample

    img = tmp_path / "a.png"
    Image.fromarray(synthetic_sample(0, 64)[0]).save(img)
    _edit_a_weight(copied)
    code = main(["predict", "--artifact", str(copied), "--input", str(img), "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert code != 0 and "differs from what its manifest records" in err and "Traceback" not in err
    assert main(["predict", "--artifact", str(copied), "--input", str(img), "--out", str(tmp_path / "p"),
                 "--no-hash-check"]) == 0


def test_demo_checks_the_hash_and_no_hash_check_opts_out(copied, tmp_path, capsys):
    """The demo always checked; it had no way to run an artifact edited on purpose."""
    from edgeseg.cli import main

    _edit_a_weight(copied)
    args = ["demo", "--artifact", str(copied), "--headless", "--max-frames", "2", "--log", str(tmp_path / "d.jsonl")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differs from what its manifest records" in err[0] and "--no-hash-check" in err[0]
    assert main([*args, "--no-hash-check"]) == 0
    assert len((tmp_path / "d.jsonl").read_text().splitlines()) == 2


def test_an_artifact_without_manifest_needs_its_preprocessing_given(copied, tmp_path, capsys):
    """It used to run on guessed pre-processing without a word; now it is refused in one line unless the
    pre-processing is given, and given the manifest's it segments exactly as with the manifest."""
    from PIL import Image

    from edgeseg.cli import main
    from edgeseg.common.phantoms import synthetic_sample

    img = tmp_path / "a.png"
    Image.fromarray(synthetic_sample(2, 200)[0]).save(img)
    assert main(["predict", "--artifact", str(copied), "--input", str(img), "--out", str(tmp_path / "m")]) == 0
    kept = tmp_path / "kept.json"
    runtimes.manifest_path(copied).rename(kept)
    bare = ["predict", "--artifact", str(copied), "--input", str(img), "--out", str(tmp_path / "b")]
    assert main(bare) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no manifest beside it" in err[0] and "edgeseg convert" in err[0], err
    assert "--preprocessing" in err[0] and not (tmp_path / "b" / "a_mask.png").exists()
    assert main([*bare, "--preprocessing", str(kept)]) == 0
    a, b = (np.asarray(Image.open(tmp_path / d / "a_mask.png")) for d in ("m", "b"))
    assert a.any() and np.array_equal(a, b)
    assert main([*bare, "--preprocessing", '{"size": [256, 256]}']) == 2  # mean/std are not guessed either
    assert "missing mean, std" in capsys.readouterr().err


def test_non_finite_input_is_refused_unless_allowed():
    x = np.zeros((1, 3, 256, 256), np.float32)
    x[0, 1, 5, 7] = np.nan
    with runtimes.load("ultralightunet-s", threads=1) as rt:
        with pytest.raises(ValueError, match="1 NaN/inf value.*allow_nonfinite=True"):
            rt.infer(x)
    with runtimes.load("ultralightunet-s", threads=1, allow_nonfinite=True) as rt:
        assert rt.infer(x).shape == (1, 1, 256, 256)


def test_parity_fails_on_non_finite_logits():
    from edgeseg.converters.verify import compare
    from edgeseg.runtimes.manifest import Postprocessing

    ref = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    cand = ref.copy()
    cand[0, 0, 0, 0] = np.nan
    par = compare(ref, cand, Postprocessing(), "fp32")
    assert not par.passed and par.figures["candidate_nonfinite"] == 1
    assert any("NaN/inf" in f for f in par.failures)
    assert compare(ref, ref.copy(), Postprocessing(), "fp32").passed


def test_bench_reuses_a_cached_artifact_only_while_its_files_are_intact(copied):
    from edgeseg.benchmarks.harness import _valid_cached

    wsha = runtimes.find_manifest(copied).weights["sha256"]
    assert _valid_cached(copied, wsha)
    assert not _valid_cached(copied, "0" * 64)  # other weights
    copied.write_bytes(copied.read_bytes()[:-1])  # truncated: converted again, not reused
    assert not _valid_cached(copied, wsha)


def test_a_truncated_jpeg_is_refused_by_predict_as_by_training(tmp_path, capsys):
    """predict used to decode the missing half as grey and exit 0; now it reads images as training does."""
    from edgeseg.runtimes.processing import read_image as device_reader
    from PIL import Image

    from edgeseg.cli import main
    from edgeseg.common.phantoms import synthetic_sample
    from edgeseg.data.folder import read_image as training_reader

    good = tmp_path / "good.jpg"
    Image.fromarray(synthetic_sample(1, 128)[0]).save(good, quality=90)
    assert np.array_equal(training_reader(good), device_reader(good))  # one reader, the same array
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for reader in (training_reader, device_reader):
        with pytest.raises(ValueError, match="truncated"):
            reader(cut)
    code = main(["predict", "--model", "ultralightunet-s", "--runtime", "torch", "--input", str(cut),
                 "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert code == 2 and "truncated" in err and "Traceback" not in err


def test_stale_temporaries_are_cleaned_and_live_ones_kept(tmp_path):
    import os
    import time

    from edgeseg.common.io import STALE_AFTER_S, clean_stale

    old = time.time() - STALE_AFTER_S - 60
    stale = [tmp_path / ".last.pt.k3j2.pt", tmp_path / ".bench.json.x9.json"]
    (tmp_path / ".m_fp32.onnx.staging-ab12").mkdir()
    stale.append(tmp_path / ".m_fp32.onnx.staging-ab12")
    for p in stale[:2]:
        p.write_bytes(b"half")
    for p in stale:
        os.utime(p, (old, old))
    live = tmp_path / ".best.pt.zz.pt"  # a run writing right now
    live.write_bytes(b"...")
    finished = tmp_path / "best.pt"
    finished.write_bytes(b"done")
    os.utime(finished, (old, old))
    removed = clean_stale(tmp_path)
    assert sorted(removed) == sorted(stale) and live.exists() and finished.exists()


def test_a_bench_worker_dies_with_its_parent():
    import os
    import signal
    import subprocess
    import sys
    import time

    code = ("import subprocess, sys, time\n"
            "p = subprocess.Popen([sys.executable, '-c', 'from edgeseg.benchmarks.worker import die_with_parent; "
            "die_with_parent(0.1); import time; time.sleep(60)'])\n"
            "print(p.pid, flush=True)\ntime.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    time.sleep(1.0)  # the child is up and watching
    os.kill(parent.pid, signal.SIGKILL)  # as a user's kill -9 of `edgeseg bench`
    parent.wait()
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the worker outlived its parent")
