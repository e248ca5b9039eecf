"""The training options of issue 19: --skip-attention (config -> checkpoint -> resolve -> card -> manifest),
--clip (it bounds the step), --amp (bf16 autocast on CPU, fp16 + loss scaling on CUDA), and the one
declaration every such option comes from."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

torch = pytest.importorskip("torch")

from edgeseg.cli import build_parser  # noqa: E402
from edgeseg.cli import main as cli  # noqa: E402
from edgeseg.train.config import TrainConfig, card_keys, cpu_has_native_bf16, declared_values  # noqa: E402
from edgeseg.train.loop import amp_dtype, train  # noqa: E402
from edgeseg.weights import read_checkpoint, resolve  # noqa: E402


def _tiny(tmp_path, **kw) -> TrainConfig:
    base = dict(model="ultralightunet-t", data="synthetic:8", val="synthetic:4", epochs=1, img_size=64,
                batch_size=4, lr=5e-3, out=str(tmp_path / "run"), threads=1, progress=False,
                max_steps_per_epoch=1, multiscale=False)
    base.update(kw)
    return TrainConfig(**base)


def _train_cli(tmp_path, *extra: str) -> int:
    return cli(["train", "--model", "ultralightunet-t", "--data", "synthetic:8", "--val", "synthetic:4",
                "--epochs", "1", "--img-size", "64", "--batch-size", "4", "--max-steps", "1", "--threads", "1",
                "--no-progress", "--no-multiscale", "--out", str(tmp_path / "run"), *extra])


def test_skip_attention_flows_to_checkpoint_resolve_card_and_manifest(tmp_path, capsys):
    from edgeseg.layers.gates import AttentionGate
    from edgeseg.train.ship import ship

    assert _train_cli(tmp_path, "--skip-attention", "ag", "--clip", "1.0", "--amp", "off") == 0
    best = tmp_path / "run" / "best.pt"
    ckpt = read_checkpoint(best)
    assert ckpt["model_kwargs"]["skip_attention"] == "ag"
    assert {k: ckpt["recipe"][k] for k in ("skip_attention", "clip", "amp", "amp_dtype")} == \
        {"skip_attention": "ag", "clip": 1.0, "amp": "off", "amp_dtype": "fp32"}
    # loading needs no hint: the checkpoint rebuilds Oktay's gate (the default model has GAG skips,
    # whose weights would not even fit)
    r = resolve(None, best)
    assert isinstance(r.module.AG1, AttentionGate) and r.model_kwargs["skip_attention"] == "ag"
    assert not isinstance(resolve("ultralightunet-t").module.AG1, AttentionGate)
    # the model card quotes it, with the other declared options
    summary = {"model": "ultralightunet-t", "dice": 0.5, "iou": 0.4, "recall": 0.5, "precision": 0.5,
               "hd95": 3.0, "n": 4}
    _, card_path = ship(best, summary, "synthetic", dest_dir=tmp_path / "ship")
    card = json.loads(card_path.read_text())
    assert card["model_kwargs"]["skip_attention"] == "ag"
    assert {card["recipe"][k] for k in ("skip_attention", "clip", "amp")} == {"ag", 1.0, "off"}
    # and a converted artifact's manifest records the builder options it was made with
    pytest.importorskip("onnx")
    from edgeseg.converters import ExportOptions, VerifyOptions, convert_model

    [res] = convert_model("ultralightunet-t", "onnx", weights=best, export=ExportOptions(img_size=64),
                          verify=VerifyOptions(enabled=False), out_dir=tmp_path / "exports")
    assert res.manifest.model_cfg["model_kwargs"]["skip_attention"] == "ag"
    assert res.manifest.weights["model_kwargs"]["skip_attention"] == "ag"


def test_skip_attention_errors_name_the_fix(tmp_path, capsys):
    assert _train_cli(tmp_path, "--skip-attention", "agg") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "did you mean 'ag'" in err and "none, gag, ag" in err, err
    rc = cli(["train", "--model", "pam-unet", "--data", "synthetic:8", "--skip-attention", "ag",
              "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and "pam-unet has no skip-attention option" in err and "ultralightunet-s" in err, err
    # resuming with another skip attention would build another network: refused
    train(_tiny(tmp_path / "a", skip_attention="se"))
    with pytest.raises(ValueError, match="skip_attention='se'.*resume it with the same settings"):
        train(dataclasses.replace(_tiny(tmp_path / "a", epochs=2, skip_attention="ag"), resume=True))


def test_clip_bounds_the_update(tmp_path):
    from edgeseg.models import create_model

    torch.manual_seed(0)  # the run's own initialisation (seed 0), to measure how far one step moves it
    w0 = dict(create_model("ultralightunet-t").named_parameters())
    moved = {}
    for clip in (0.0, 1e-12):
        run = train(_tiny(tmp_path / str(clip), clip=clip, weight_decay=0.0))
        sd = read_checkpoint(run.best_path)["state_dict"]
        moved[clip] = sum(float((sd[k] - w.detach()).abs().sum()) for k, w in w0.items())
    # AdamW normalises the gradient, so only a near-zero clip shows: its step is ~1e-4 of the unclipped one
    assert moved[0.0] > 0 and moved[1e-12] < 0.01 * moved[0.0], moved
    with pytest.raises(ValueError, match="--clip must be >= 0"):
        _tiny(tmp_path, clip=-1.0).check()


def test_amp_modes_pick_the_device_dtype(tmp_path, capsys):
    cfg = _tiny(tmp_path)
    assert cfg.amp_mode == "auto" and amp_dtype(cfg, use_cuda=False) is None
    assert amp_dtype(cfg, use_cuda=True) is torch.float16
    assert amp_dtype(dataclasses.replace(cfg, amp="off"), use_cuda=True) is None
    # booleans (YAML reads `amp: on` as True) mean on and off
    assert dataclasses.replace(cfg, amp=True).amp_mode == "on"
    assert dataclasses.replace(cfg, amp=False).amp_mode == "off"
    with pytest.raises(ValueError, match="--amp must be one of auto, on, off"):
        dataclasses.replace(cfg, amp="fp8").check()
    on = dataclasses.replace(cfg, amp="on")
    if not cpu_has_native_bf16():
        with pytest.raises(ValueError, match="no native bf16.*--amp off"):
            amp_dtype(on, use_cuda=False)
        return
    assert amp_dtype(on, use_cuda=False) is torch.bfloat16
    # the bf16 run really ran under autocast: the same batches give a close but different loss
    fp32 = train(_tiny(tmp_path / "fp32", amp="off"))
    bf16 = train(_tiny(tmp_path / "bf16", amp="on"))
    assert read_checkpoint(bf16.best_path)["recipe"]["amp_dtype"] == "bf16"
    a, b = fp32.history[0]["loss"], bf16.history[0]["loss"]
    assert a != b and abs(a - b) < 0.05 * a, (a, b)


def _train_parser():
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]


def test_each_declared_option_is_a_flag_a_recipe_entry_and_a_card_entry(tmp_path):
    from edgeseg.train.config import RUN_RECORD_KEYS, config_from_args, declared_options, flag_of
    from edgeseg.train.ship import ship

    declared = [f for f, _ in declared_options()]
    # since session 7 every TrainConfig field (and every VolumeOptions field) is declared
    assert {f.name for f in declared} >= {"skip_attention", "clip", "amp"}
    assert {f.name for f in dataclasses.fields(TrainConfig)} - {"volume"} <= {f.name for f in declared}
    values = {"skip_attention": "ag", "clip": "0.25", "amp": "off"}
    argv = ["train", "--model", "ultralightunet-t"]
    for name, value in values.items():
        argv += ["--" + name.replace("_", "-"), value]
    got = declared_values(build_parser().parse_args(argv))
    assert {k: got[k] for k in values} == {"skip_attention": "ag", "clip": 0.25, "amp": "off"}
    # every declared option is a flag of `edgeseg train`, and the CLI's defaults are the API's
    flags = {s for action in _train_parser()._actions for s in action.option_strings}
    assert {flag_of(f) for f in declared} <= flags, sorted({flag_of(f) for f in declared} - flags)
    defaults = config_from_args(build_parser().parse_args(["train", "--model", "ultralightunet-t"]))
    assert defaults == TrainConfig("ultralightunet-t")
    assert declared_values(build_parser().parse_args(["train", "--model", "ultralightunet-t"]))["clip"] == 0.5
    # every option is in the checkpoint's recipe, and the card quotes the ones marked for it
    res = train(_tiny(tmp_path))
    recipe = read_checkpoint(res.best_path)["recipe"]
    assert {f.name for f in declared} - {"resume"} <= set(recipe)
    summary = {"model": "ultralightunet-t", "dice": 0.5, "iou": 0.4, "recall": 0.5, "precision": 0.5,
               "hd95": 3.0, "n": 4}
    _, card_path = ship(res.best_path, summary, "synthetic", dest_dir=tmp_path / "ship")
    card = json.loads(card_path.read_text())
    assert set(card["recipe"]) == set(card_keys()) | set(RUN_RECORD_KEYS)
    assert set(card_keys()) >= {"skip_attention", "clip", "amp", "lr", "epochs", "img_size"}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--model", "m", "--clip", "-1"])


def test_a_new_option_is_one_declaration(tmp_path, monkeypatch, capsys):
    """Adding a training option is one option(...) field: the flag, the config, the checkpoint's recipe, the
    model card and the `edgeseg run` recipes follow from it, with no other edit."""
    import edgeseg.train.config as config
    import edgeseg.train.loop as loop
    from edgeseg.train.ship import ship
    from edgeseg.workflow.recipe import load_recipe

    @dataclasses.dataclass
    class WithNewOption(config.TrainConfig):
        label_smoothing: float = config.option(0.0, "a new option, declared once", card=True)

    monkeypatch.setattr(config, "TrainConfig", WithNewOption)
    monkeypatch.setattr(loop, "TrainConfig", WithNewOption)
    flags = {s for action in _train_parser()._actions for s in action.option_strings}
    assert "--label-smoothing" in flags
    assert _train_cli(tmp_path, "--label-smoothing", "0.1") == 0
    best = tmp_path / "run" / "best.pt"
    assert read_checkpoint(best)["recipe"]["label_smoothing"] == 0.1
    summary = {"model": "ultralightunet-t", "dice": 0.5, "iou": 0.4, "recall": 0.5, "precision": 0.5,
               "hd95": 3.0, "n": 4}
    _, card_path = ship(best, summary, "synthetic", dest_dir=tmp_path / "ship")
    assert json.loads(card_path.read_text())["recipe"]["label_smoothing"] == 0.1
    assert load_recipe("synthetic", {"train.label_smoothing": 0.2}).train["label_smoothing"] == 0.2


def test_volume_options_are_their_own_sub_config(tmp_path):
    from edgeseg.train.config import VolumeOptions

    cfg = TrainConfig("ultralightunet3d-t", volume={"intensity_clip": [-100, 240], "fg_ratio": 0.25})
    assert cfg.volume == VolumeOptions(fg_ratio=0.25, intensity_clip=(-100.0, 240.0))
    assert cfg.img_size == 96 and cfg.out == "runs/ultralightunet3d-t"  # the model's input size
    rec = cfg.record()  # the checkpoint's recipe stays flat, as before the sub-config
    assert rec["intensity_clip"] == (-100.0, 240.0) and rec["patches_per_case"] == 4 and "volume" not in rec
    with pytest.raises(ValueError, match="unknown volume option 'fg_ration' \\(did you mean 'fg_ratio'\\?\\)"):
        TrainConfig("ultralightunet3d-t", volume={"fg_ration": 0.2})
    with pytest.raises(ValueError, match="--sw-overlap must be in \\[0, 1\\)"):
        TrainConfig("ultralightunet3d-t", volume=VolumeOptions(sw_overlap=1.0)).check()
    args = build_parser().parse_args(["train", "--model", "ultralightunet3d-t", "--fg-ratio", "0.75",
                                      "--intensity-clip=-100,240"])
    assert declared_values(args)["volume"] == VolumeOptions(fg_ratio=0.75, intensity_clip=(-100.0, 240.0))
    # the 2D options stay on TrainConfig; mask_mode follows the classes unless given
    assert TrainConfig("ultralightunet-t", num_classes=3).mask_mode == "labels"
    assert TrainConfig("ultralightunet-t").mask_mode == "binary"
