"""The one training engine: a Trainer fed by injected data, batch preparation and validation (as MONAI injects
``prepare_batch`` and an inferer), the same engine under the 2D and 3D front ends, and the size rules of
issue 20 for the training package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from edgeseg.data.sources import DataSpec  # noqa: E402
from edgeseg.train.config import TrainConfig  # noqa: E402
from edgeseg.train.engine import TrainData, Trainer  # noqa: E402
from edgeseg.train.evaluate import summarise  # noqa: E402
from edgeseg.train.process import Processes  # noqa: E402
from edgeseg.weights import read_checkpoint  # noqa: E402

TRAIN_DIR = Path(__file__).resolve().parents[2] / "edgeseg" / "train"


def _dict_batches(epoch: int):
    """MONAI-style dictionaries; the engine never looks inside them, prepare_batch does."""
    g = torch.Generator().manual_seed(100 + epoch)
    for _ in range(3):
        yield {"image": torch.randn(2, 3, 32, 32, generator=g),
               "label": (torch.rand(2, 32, 32, generator=g) > 0.5).long()}


def test_a_trainer_takes_injected_data_batch_preparation_and_validation(tmp_path):
    cfg = TrainConfig("ultralightunet-t", epochs=2, img_size=32, batch_size=2, lr=1e-3, threads=1,
                      progress=False, out=str(tmp_path / "run"))
    prepared, validated = [], []

    def prepare(batch, device):
        prepared.append(batch)
        return batch["image"].to(device), batch["label"].to(device)

    def validate(model):
        validated.append(model)
        dice = [0.25, 0.5][len(validated) - 1]  # a better second epoch
        return summarise(["a"], [{"dice": dice, "iou": dice / 2, "recall": 1.0, "precision": 1.0, "hd95": 1.0}])

    data = TrainData(_dict_batches, n_items=6, train_spec=DataSpec("dicts", None, 6),
                     val_spec=DataSpec("stub", None, 1), preprocessing={"kind": "test"},
                     recipe={"source_kind": "dictionaries"}, unit="sample")
    trainer = Trainer(cfg, data, validate, model_kwargs={"num_classes": 1, "in_channels": 3},
                      proc=Processes(1, 0, 0, torch.device("cpu")), prepare_batch=prepare)
    res = trainer.fit()
    assert len(prepared) == 2 * 3 and trainer.steps_per_epoch == 3
    assert validated == [trainer.eval_model] * 2
    assert [r["epoch"] for r in res.history] == [1, 2] and res.best["epoch"] == 2
    assert [r["val_dice"] for r in res.history] == [0.25, 0.5] and res.history[0]["unit"] == "sample"
    best, last = read_checkpoint(res.best_path), read_checkpoint(res.last_path)
    assert best["preprocessing"] == {"kind": "test"} and best["metrics"]["val_n"] == 1
    assert best["recipe"]["source_kind"] == "dictionaries" and best["recipe"]["train_data"]["source"] == "dicts"
    assert last["train_state"]["epoch"] == 2 and (tmp_path / "run" / "history.csv").is_file()


def test_2d_and_3d_front_ends_supply_only_data_and_a_validator():
    """Neither front end holds an epoch loop, an optimiser or checkpoint writing: the engine does."""
    for name in ("loop.py", "volume_loop.py"):
        tree = ast.parse((TRAIN_DIR / name).read_text())
        used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} | \
            {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        assert "Trainer" in used, name
        for engine_only in ("AdamW", "optim", "save_checkpoint", "backward", "lr_scheduler", "GradScaler"):
            assert engine_only not in used, (name, engine_only)
        loops = [n.target.id for n in ast.walk(tree) if isinstance(n, ast.For) and isinstance(n.target, ast.Name)]
        assert "epoch" not in loops, name
        private = [a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                   and (node.module or "").startswith("edgeseg.train") for a in node.names if a.name.startswith("_")]
        assert not private, (name, private)


