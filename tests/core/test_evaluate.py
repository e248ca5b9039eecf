"""`edgeseg evaluate`: JSON summary, per-case CSV, agreement with training's validation, shipped weights,
and one-line errors for wrong checkpoints."""

from __future__ import annotations

import csv
import json

import pytest

torch = pytest.importorskip("torch")

from edgeseg.cli import main as cli  # noqa: E402
from edgeseg.train.loop import TrainConfig, train  # noqa: E402
from edgeseg.weights import list_shipped, model_card, shipped_weights  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(model="ultralightunet-t", data="synthetic:16", val="synthetic:6", epochs=1, img_size=64,
                      batch_size=4, lr=5e-3, out=str(out), threads=1, progress=False, max_steps_per_epoch=3)
    return train(cfg)


def test_evaluate_json_matches_training_validation(tiny_run, tmp_path, capsys):
    rc = cli(["evaluate", "--weights", str(tiny_run.best_path), "--data", "synthetic:6", "--json",
              "--out", str(tmp_path / "ev")])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    for key in ("dice", "iou", "recall", "precision", "hd95", "n"):
        assert key in summary
    assert summary["n"] == 6 and summary["model"] == "ultralightunet-t" and summary["img_size"] == [64, 64]
    # same data, same pre-processing: evaluate reproduces the Dice that training recorded
    assert summary["dice"] == pytest.approx(tiny_run.best["val_dice"], abs=1e-9)
    rows = list(csv.DictReader((tmp_path / "ev" / "per_case.csv").open()))
    assert len(rows) == 6
    assert sum(float(r["dice"]) for r in rows) / 6 == pytest.approx(summary["dice"], abs=1e-5)
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["n"] == 6


def test_evaluate_shift_is_a_robustness_check(tiny_run, capsys):
    def dice(*extra):  # the shipped -t weights find the synthetic polyps (Dice ~0.78 on these 6)
        assert cli(["evaluate", "--model", "ultralightunet-t", "--data", "synthetic:6", "--json", "--threads", "1",
                    *extra]) == 0
        return json.loads(capsys.readouterr().out)

    clean = dice()
    assert clean["dice"] > 0.5
    same = dice("--shift", "brightness=1")  # a factor of 1 changes nothing
    assert same["dice"] == clean["dice"] and same["shift"] == "brightness=1"
    dark = dice("--shift", "brightness=0.3")  # far darker than anything trained on
    assert dark["dice"] < clean["dice"] - 0.2 and dark["n"] == 6
    assert "Traceback" not in capsys.readouterr().err
    for bad, needle in [("glow=2", "KIND=FACTOR"), ("zoom=-1", "must be > 0"), ("contrast=x", "must be a number")]:
        assert _error(capsys, ["evaluate", "--weights", str(tiny_run.best_path), "--data", "synthetic:2",
                               "--shift", bad]).count(needle) == 1


def test_shift_pair_kinds():
    import numpy as np

    from edgeseg.data.transforms import parse_shift, shift_pair

    rng = np.random.default_rng(0)
    img = rng.integers(40, 200, (64, 48, 3), dtype=np.uint8)
    mask = np.zeros((64, 48), np.uint8)
    mask[16:48, 12:36] = 1
    bright, m = shift_pair(img, mask, "brightness", 0.5)
    assert m is mask and np.abs(bright.astype(float) - img * 0.5).max() <= 0.5
    flat, _ = shift_pair(img, mask, "contrast", 0.0)
    assert np.ptp(flat) <= 1  # every pixel at the mean
    gray, _ = shift_pair(img, mask, "saturation", 0.0)
    assert np.abs(gray[..., 0].astype(int) - gray[..., 2]).max() <= 1  # no colour left
    zin_img, zin = shift_pair(img, mask, "zoom", 2.0)
    assert zin.shape == mask.shape and zin_img.shape == img.shape
    assert zin.sum() == pytest.approx(4 * mask.sum(), rel=0.05) or zin.all()  # the polyp fills 4x the area
    zout_img, zout = shift_pair(img, mask, "zoom", 0.5)
    assert zout_img.shape == img.shape and zout[32, 24] == 1 and zout[:, :4].sum() > 0  # mirrored border
    assert parse_shift(" Zoom=0.75") == ("zoom", 0.75)


def _error(capsys, argv) -> str:
    rc = cli(argv)
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "Traceback" not in err
    return err.splitlines()[-1]


def test_wrong_or_broken_checkpoints_are_one_line_errors(tiny_run, tmp_path, capsys):
    msg = _error(capsys, ["evaluate", "--weights", str(tiny_run.best_path), "--model", "ultralightunet-s"])
    assert "checkpoint is for model 'ultralightunet-t', not 'ultralightunet-s'" in msg
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a checkpoint")
    assert "junk.pt: not a readable torch checkpoint" in _error(capsys, ["evaluate", "--weights", str(junk)])
    sd = tmp_path / "sd.pt"
    torch.save(torch.load(tiny_run.best_path, weights_only=False)["state_dict"], sd)
    assert "does not name its model" in _error(capsys, ["evaluate", "--weights", str(sd)])
    msg = _error(capsys, ["evaluate", "--weights", str(sd), "--model", "ultralightunet-s"])
    assert "sd.pt: weights do not fit ultralightunet-s" in msg
    assert "not found" in _error(capsys, ["evaluate", "--weights", str(tmp_path / "missing.pt")])


def test_model_without_shipped_weights_warns_loudly(capsys):
    from edgeseg.models import list_models

    name = next((n for n in list_models("ultralightunet*") if shipped_weights(n) is None), None)
    if name is None:
        pytest.skip("every ultralightunet variant has shipped weights")
    with pytest.warns(UserWarning, match="RANDOM weights"):
        rc = cli(["evaluate", "--model", name, "--data", "synthetic:2", "--img-size", "64"])
    assert rc == 0
    assert "RANDOM" in capsys.readouterr().err


@pytest.mark.parametrize("name", list_shipped())
def test_shipped_weights_load_and_have_a_card(name):
    from edgeseg.models import create_model

    card = model_card(name)
    assert card is not None, f"{name}.pt ships without a model card"
    for key in ("data", "epochs_trained", "train_time_s", "val_dice", "recipe", "val_split"):
        assert key in card
    model = create_model(name, pretrained=True)
    assert not model.training
    assert (shipped_weights(name).stat().st_size == card["size_bytes"]) and card["size_bytes"] < 2_000_000


@pytest.mark.slow
@pytest.mark.kvasir
@pytest.mark.parametrize("name", list_shipped())
def test_shipped_card_dice_is_reproduced_on_kvasir_val(name, kvasir_root, capsys):
    card = model_card(name)
    # cards are produced with --threads 1; with 2 threads a borderline pixel can flip (-t: Dice +1.1e-6)
    threads = torch.get_num_threads()
    try:
        rc = cli(["evaluate", "--model", name, "--data", str(kvasir_root), "--split", "val", "--json",
                  "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == card["val_n"] == 120
    assert summary["dice"] == pytest.approx(card["val_dice"], abs=1e-6)
