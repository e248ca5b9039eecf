"""Training: losses, schedule, checkpoints, exact resume, the attention-regulariser hook, and the synthetic
acceptance run (ultralightunet-t reaches Dice > 0.9 on synthetic validation)."""

from __future__ import annotations

import dataclasses
import math
import time

import pytest

torch = pytest.importorskip("torch")

from edgeseg.cli import main as cli  # noqa: E402
from edgeseg.train.checkpoint import load_resume_state  # noqa: E402
from edgeseg.train.loop import TrainConfig, lr_lambda, train  # noqa: E402
from edgeseg.train.losses import bce_iou_loss, ce_dice_loss, compute_loss, soft_dice_loss  # noqa: E402
from edgeseg.weights import CHECKPOINT_FORMAT, read_checkpoint  # noqa: E402


def _tiny(tmp_path, **kw) -> TrainConfig:
    base = dict(model="ultralightunet-t", data="synthetic:16", val="synthetic:4", epochs=2, img_size=64,
                batch_size=4, lr=5e-3, out=str(tmp_path / "run"), threads=1, progress=False,
                max_steps_per_epoch=2)
    base.update(kw)
    return TrainConfig(**base)


# ---------------------------------------------------------------- losses and schedule


def test_bce_iou_loss_values():
    t = torch.zeros(2, 1, 8, 8)
    t[:, :, 2:6, 2:6] = 1
    perfect = (t * 2 - 1) * 30
    assert bce_iou_loss(perfect, t).item() < 1e-3
    zero = torch.zeros_like(t)  # p = 0.5 everywhere: BCE = ln 2, IoU = 1 - (8 + 1) / (32 + 1)
    expected = math.log(2) + 1 - (0.5 * 16 + 1) / (0.5 * 64 + 16 - 0.5 * 16 + 1)
    assert bce_iou_loss(zero, t).item() == pytest.approx(expected, rel=1e-5)


def test_boundary_weighted_bce_iou():
    from edgeseg.train.losses import weighted_bce_iou_loss

    # an empty mask has no boundary: every weight is 1 and the loss is the plain BCE + IoU
    empty, zero = torch.zeros(2, 1, 48, 48), torch.zeros(2, 1, 48, 48)
    assert weighted_bce_iou_loss(zero, empty).item() == pytest.approx(bce_iou_loss(zero, empty).item(), rel=1e-6)
    # a square polyp: the same logit error costs more on its edge than deep inside it
    t = torch.zeros(1, 1, 96, 96)
    t[..., 24:72, 24:72] = 1
    good = t * 20 - 10
    edge, inner = good.clone(), good.clone()
    edge[..., 24, 40] = -10
    inner[..., 48, 48] = -10
    w_edge, w_inner = weighted_bce_iou_loss(edge, t).item(), weighted_bce_iou_loss(inner, t).item()
    assert w_edge > 1.5 * w_inner
    assert bce_iou_loss(edge, t).item() == pytest.approx(bce_iou_loss(inner, t).item(), rel=1e-6)
    assert weighted_bce_iou_loss(t * 40 - 20, t).item() < 1e-3
    # the weights are 1 + 5 |31x31 box mean - mask| (checked against the 2D pool the separable one replaces)
    logits = torch.randn(2, 1, 64, 80)
    masks = (torch.rand(2, 1, 64, 80) > 0.6).float()
    w = 1 + 5 * (torch.nn.functional.avg_pool2d(masks, 31, stride=1, padding=15) - masks).abs()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, masks, reduction="none")
    p = torch.sigmoid(logits)
    inter, total = (w * p * masks).sum((2, 3)), (w * (p + masks)).sum((2, 3))
    manual = ((w * bce).sum((2, 3)) / w.sum((2, 3)) + 1 - (inter + 1) / (total - inter + 1)).mean()
    assert weighted_bce_iou_loss(logits, masks).item() == pytest.approx(manual.item(), rel=1e-5)
    with pytest.raises(ValueError, match="binary 2D logits"):
        weighted_bce_iou_loss(torch.zeros(1, 2, 8, 8), torch.zeros(1, 8, 8))


def test_loss_choice_is_checked_against_the_task(tmp_path):
    import argparse

    from edgeseg.cli.train import add_arguments
    from edgeseg.train.losses import LOSSES, check_loss

    p = argparse.ArgumentParser()
    add_arguments(p)
    assert tuple(next(a for a in p._actions if a.dest == "loss").choices) == LOSSES
    with pytest.raises(ValueError, match="for binary masks"):
        check_loss("wbce-wiou", num_classes=3, spatial_dims=2)
    with pytest.raises(ValueError, match="for 2D images"):
        check_loss("wbce-wiou", num_classes=1, spatial_dims=3)
    res = train(_tiny(tmp_path, epochs=1, loss="wbce-wiou"))
    assert read_checkpoint(res.last_path)["recipe"]["loss"] == "wbce-wiou"


def test_zoom_and_colour_jitter_settings_are_checked(tmp_path):
    with pytest.raises(ValueError, match="drop --no-augment"):
        train(_tiny(tmp_path, zoom=0.2, augment=False))
    with pytest.raises(ValueError, match=r"must be in \[0, 1\)"):
        train(_tiny(tmp_path, color_jitter=1.5))
    with pytest.raises(ValueError, match="2D augmentations"):
        train(_tiny(tmp_path, model="ultralightunet3d-t", img_size=32, zoom=0.1))
    res = train(_tiny(tmp_path, epochs=1, zoom=0.2, color_jitter=0.2))
    recipe = read_checkpoint(res.last_path)["recipe"]
    assert recipe["zoom"] == 0.2 and recipe["color_jitter"] == 0.2


def test_ce_dice_weights():
    logits = torch.randn(2, 3, 5, 5)
    target = torch.randint(0, 3, (2, 5, 5))
    manual = 0.3 * torch.nn.functional.cross_entropy(logits, target) + 0.7 * soft_dice_loss(logits, target)
    assert ce_dice_loss(logits, target).item() == pytest.approx(manual.item(), rel=1e-6)
    onehot = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 40
    assert soft_dice_loss(onehot, target).item() < 1e-3


def test_warmup_cosine_schedule():
    f = [lr_lambda(s, 100, 10, 0.01) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # monotone decay after warm-up
    assert lr_lambda(100, 100, 10, 0.01) == pytest.approx(0.01)


def test_attention_regulariser_is_added_when_the_model_exposes_maps():
    class WithAttention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 1, 1)

        def forward(self, x):
            return self.conv(x)

        def forward_with_attention(self, x):
            return self.conv(x), [torch.full((1,), 2.0)]

        def attention_regularizer(self, maps):
            return sum(m.sum() for m in maps)

    model, x, y = WithAttention(), torch.randn(2, 3, 8, 8), torch.zeros(2, 8, 8)
    plain, _ = compute_loss(torch.nn.Sequential(model.conv), x, y, bce_iou_loss)
    with_reg, _ = compute_loss(model, x, y, bce_iou_loss)
    assert with_reg.item() == pytest.approx(plain.item() + 2.0, rel=1e-6)


# ---------------------------------------------------------------- checkpoints and resume


def test_checkpoint_contents_match_the_manifest_preprocessing(tmp_path):
    from edgeseg.runtimes.manifest import Preprocessing

    res = train(_tiny(tmp_path, epochs=1))
    ckpt = read_checkpoint(res.best_path)
    assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["model"] == "ultralightunet-t"
    assert ckpt["model_kwargs"] == {"num_classes": 1, "in_channels": 3}
    pre = Preprocessing(**ckpt["preprocessing"])
    assert pre.size == [64, 64] and pre.resize == "stretch" and pre.color == "rgb"
    assert ckpt["recipe"]["loss"] == "bce-iou" and ckpt["recipe"]["clip"] == 0.5
    assert 0 <= ckpt["metrics"]["val_dice"] <= 1 and "train_state" not in ckpt
    assert "train_state" in read_checkpoint(res.last_path)
    # the checkpoint loads into a fresh model, strict
    from edgeseg.models import create_model

    create_model("ultralightunet-t", weights=res.best_path)


def test_resume_continues_exactly(tmp_path):
    full = train(_tiny(tmp_path / "a", epochs=3))
    train(_tiny(tmp_path / "b", epochs=1))
    resumed = train(dataclasses.replace(_tiny(tmp_path / "b", epochs=3), resume=True))
    a = read_checkpoint(full.last_path)["state_dict"]
    b = read_checkpoint(resumed.last_path)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in full.history] == [r["loss"] for r in resumed.history]


def test_compile_failure_on_the_first_step_falls_back_to_eager(tmp_path, monkeypatch, capsys):
    # a compiled model whose kernels fail to build (as torch 2.13's inductor does for ultralightunet-s with
    # 2 CPU threads): the run goes on eager, with the same training losses as an eager run, and says so
    class Broken(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *a, **k):
            raise UnboundLocalError("cannot access local variable 'buf88' where it is not associated with a value")

    monkeypatch.setattr(torch, "compile", lambda m, **k: Broken(m))
    fell_back = train(_tiny(tmp_path / "c", compile=True))
    eager = train(_tiny(tmp_path / "e"))
    assert [r["loss"] for r in fell_back.history] == [r["loss"] for r in eager.history]
    recipe = read_checkpoint(fell_back.last_path)["recipe"]
    assert recipe["compile"] is False and "buf88" in recipe["compile_error"]
    assert "torch.compile failed on the first training step (UnboundLocalError" in capsys.readouterr().err


def test_weight_ema_follows_the_formula():
    from edgeseg.train.ema import WeightEMA

    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = WeightEMA(model, decay=0.9)
    w0 = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update(model)  # update 1: decay min(0.9, 2/11)
    d = 2 / 11
    assert torch.allclose(ema.module[0].weight, d * w0 + (1 - d) * (w0 + 1.0))
    assert int(ema.module[1].num_batches_tracked) == 7  # integer buffers are copied, not averaged
    for _ in range(200):
        ema.update(model)
    assert ema.current_decay() == 0.9
    assert torch.allclose(ema.module[0].weight, w0 + 1.0, atol=1e-6)
    assert not any(p.requires_grad for p in ema.module.parameters())
    with pytest.raises(ValueError, match="--ema must be in"):
        WeightEMA(model, decay=1.0)


def test_ema_run_saves_the_average_and_resumes_exactly(tmp_path):
    full = train(_tiny(tmp_path / "a", epochs=3, ema=0.9))
    train(_tiny(tmp_path / "b", epochs=1, ema=0.9))
    resumed = train(dataclasses.replace(_tiny(tmp_path / "b", epochs=3, ema=0.9), resume=True))
    a, b = read_checkpoint(full.last_path), read_checkpoint(resumed.last_path)
    for key in ("state_dict",):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    raw_a, raw_b = a["train_state"]["model_state_dict"], b["train_state"]["model_state_dict"]
    assert all(torch.equal(raw_a[k], raw_b[k]) for k in raw_a)
    assert [r["val_dice"] for r in full.history] == [r["val_dice"] for r in resumed.history]
    # the saved (validated) weights are the average, not the trained weights
    assert a["train_state"]["ema"]["updates"] == 3 * 2
    assert not all(torch.equal(a["state_dict"][k], raw_a[k]) for k in raw_a)
    assert a["recipe"]["ema"] == 0.9
    with pytest.raises(ValueError, match="trained with --ema 0.9; resume it with the same --ema"):
        train(dataclasses.replace(_tiny(tmp_path / "b", epochs=4), resume=True))


def test_resume_refuses_another_models_checkpoint(tmp_path):
    train(_tiny(tmp_path, epochs=1))
    with pytest.raises(ValueError, match="checkpoint is for model 'ultralightunet-t', not 'ultralightunet-s'"):
        load_resume_state(tmp_path / "run" / "last.pt", "ultralightunet-s")
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        load_resume_state(tmp_path / "nothing" / "last.pt", "ultralightunet-t")


# ---------------------------------------------------------------- CLI errors: one line, non-zero, no traceback


def _one_line_error(capsys, argv, *needles):
    rc = cli(argv)
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith("edgeseg: error:"), err
    for n in needles:
        assert n in last, last
    return last


def test_train_cli_bad_inputs(tmp_path, capsys):
    from PIL import Image

    (tmp_path / "empty").mkdir()
    _one_line_error(capsys, ["train", "--model", "ultralightunet-t", "--data", str(tmp_path / "empty")],
                    "no image/mask pairs", "empty")
    _one_line_error(capsys, ["train", "--model", "ultralightunet-t", "--data", str(tmp_path / "nope")],
                    "not found", "nope")
    bad = tmp_path / "bad"
    (bad / "images").mkdir(parents=True)
    (bad / "masks").mkdir()
    for i in range(4):
        Image.new("RGB", (32, 32), (120, 60, 50)).save(bad / "images" / f"{i}.jpg")
        Image.new("L", (32, 32), 0).save(bad / "masks" / f"{i}.png")
    (bad / "images" / "2.jpg").write_bytes((bad / "images" / "2.jpg").read_bytes()[:100])
    _one_line_error(capsys, ["train", "--model", "ultralightunet-t", "--data", str(bad), "--img-size", "32",
                             "--batch-size", "2", "--out", str(tmp_path / "r")], "2.jpg", "truncated")
    train(_tiny(tmp_path, epochs=1))
    _one_line_error(capsys, ["train", "--model", "ultralightunet-s", "--data", "synthetic:8", "--resume",
                             "--out", str(tmp_path / "run")], "last.pt", "ultralightunet-t")
    _one_line_error(capsys, ["train", "--model", "ultralightunet-t", "--img-size", "100"], "multiple of 32")


# ---------------------------------------------------------------- acceptance


def test_synthetic_training_reaches_dice_above_0_9(tmp_path):
    # The acceptance run: ultralightunet-t on synthetic data. ~65 CPU-seconds with one thread (one
    # thread is robust on a shared machine, where two OpenMP threads spin-wait on each other).
    cfg = TrainConfig(model="ultralightunet-t", data="synthetic:320", val="synthetic:48", epochs=8,
                      img_size=96, batch_size=8, lr=1e-2, warmup_epochs=0.5, multiscale=False,
                      out=str(tmp_path / "syn"), threads=1, progress=False)
    t0 = time.perf_counter()
    res = train(cfg)
    took = time.perf_counter() - t0
    assert res.best["val_dice"] > 0.9, res.history
    print(f"synthetic acceptance: val Dice {res.best['val_dice']:.4f} in {took:.0f} s")


def test_pam_unet_regulariser_is_wired_in_when_registered():
    from edgeseg.models import create_model, list_models
    from edgeseg.train.losses import attention_regularizer

    if "pam-unet" not in list_models():
        pytest.skip("PAM-UNet is not registered")
    pla = pytest.importorskip("edgeseg.layers.pla")
    torch.manual_seed(0)
    model = create_model("pam-unet")
    x, y = torch.randn(2, 3, 64, 64), (torch.rand(2, 64, 64) > 0.5).long()
    loss, logits = compute_loss(model, x, y, bce_iou_loss)
    _, maps = model.forward_with_attention(x)
    expected = bce_iou_loss(logits, y) + pla.ATTENTION_REG_WEIGHT * pla.attention_regularizer(maps)
    assert attention_regularizer(model) is not None
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_multiclass_label_masks_train_and_evaluate(tmp_path, capsys):
    import json

    import numpy as np
    from PIL import Image

    root = tmp_path / "mc"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        lab = np.zeros((64, 64), np.uint8)
        y, x = rng.integers(8, 40, 2)
        lab[y:y + 16, x:x + 16] = 1 + i % 2
        img = np.stack([lab * 90 + 40, lab * 30 + 60, 80 - lab * 20], -1).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"{i}.png")
        Image.fromarray(lab).save(root / "masks" / f"{i}.png")
    res = train(_tiny(tmp_path, data=str(root), val=str(root), num_classes=3, mask_mode="labels", epochs=1))
    ckpt = read_checkpoint(res.best_path)
    assert ckpt["recipe"]["loss"] == "ce-dice" and ckpt["model_kwargs"]["num_classes"] == 3
    assert cli(["evaluate", "--weights", str(res.best_path), "--data", str(root), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == 8 and summary["dice"] == pytest.approx(res.best["val_dice"], abs=1e-9)
