"""Recipes of `edgeseg run`: the shipped ones load; a bad key or value is one line naming it and what is allowed."""

from __future__ import annotations

import dataclasses

import pytest

from edgeseg.workflow.recipe import (
    BENCH_RESERVED,
    TRAIN_RESERVED,
    coerce,
    find_recipe,
    list_recipes,
    load_recipe,
)


def test_the_shipped_recipes_are_package_data_and_load():
    assert {"synthetic", "kvasir-seg"} <= set(list_recipes())
    r = load_recipe("synthetic")
    assert r.model == "ultralightunet-t" and r.data.startswith("synthetic")
    assert r.train["img_size"] <= 64 and r.train["epochs"] <= 2  # minutes on 2 cores, as the CI needs
    assert r.quantize_targets == r.convert.targets and "onnx" in r.convert.targets
    # the Kvasir recipe names its data beside the repository; --data replaces it
    k = load_recipe("kvasir-seg", data="synthetic:8")
    assert k.data == "synthetic:8" and k.quantize.max_dice_drop == 0.02
    assert set(k.convert.precisions) == {"fp32", "fp16"}


def test_every_training_option_passes_through_by_its_type():
    """The train section is TrainConfig's fields, read from the class: an option added there is accepted."""
    from edgeseg.train.loop import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)} - set(TRAIN_RESERVED)
    assert {"clip", "amp", "ema", "zoom", "loss"} <= names
    r = load_recipe("synthetic", {"train.clip": 1.0, "train.lr": "3e-3", "train.ema": 0.99})
    assert r.train["clip"] == 1.0 and r.train["lr"] == pytest.approx(0.003)  # YAML reads 3e-3 as text


@pytest.mark.parametrize("override, message", [
    ({"train.epoch": 2}, "train: unknown key 'epoch' (did you mean 'epochs'?); allowed: "),
    ({"train.epochs": "two"}, "train.epochs: expected an integer, got 'two'"),
    ({"train.epochs": 0}, "train.epochs must be >= 1, got 0"),
    ({"train.out": "x"}, "train.out: set by the run itself"),
    ({"train.img_size": 48}, "train.img_size: must be a multiple of 32"),
    ({"trian": {}}, "unknown key 'trian' (did you mean 'train'?); allowed: name, description, model"),
    ({"model": "ultralightunt-t"}, "model: unknown model 'ultralightunt-t'"),
    ({"model": "ultralightunet3d-t"}, "takes 2D models"),
    ({"convert.targets": ["onx"]}, "convert.targets: unknown target 'onx' (did you mean 'onnx'?)"),
    ({"convert.precisions": ["int8"]}, "int8 is made by the quantize stage"),
    ({"convert.opset": 11}, "convert: opset must be >= 17"),
    ({"quantize.max_dice_drop": 2}, "quantize: max_dice_drop must be in (0, 1)"),
    ({"quantize.over_budget": "drop"}, "quantize.over_budget: got 'drop'; allowed: report, fail"),
    ({"quantize.calib": "x"}, "quantize: unknown key 'calib'"),
    ({"verify.images": 0}, "verify: the verification needs at least 1 image"),
    ({"bench.iters": 0}, "bench.iters must be >= 1"),
    ({"bench.targets": ["onnx"]}, "bench.targets: set by the run itself"),
    ({"bench.enabled": "maybe"}, "bench.enabled: expected true or false, got 'maybe'"),
    ({"report.title": "x"}, "report: unknown key 'title'; allowed: data_name, data_terms, notes"),
    ({"train": [1, 2]}, "train: a section is a mapping of keys"),
])
def test_bad_recipes_are_refused_in_one_line_naming_the_key(override, message):
    with pytest.raises(ValueError) as exc:
        load_recipe("synthetic", override)
    text = str(exc.value)
    assert text.startswith("synthetic.yaml: ") and message in text and "\n" not in text, text


def test_bad_files_and_names(tmp_path):
    with pytest.raises(FileNotFoundError, match="Did you mean 'synthetic'"):
        find_recipe("synthtic")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ValueError, match="bad.yaml: not valid YAML"):
        load_recipe(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ValueError, match="a recipe is a YAML mapping"):
        load_recipe(bad)
    bad.write_text("data: synthetic\n")
    with pytest.raises(ValueError, match="model: required"):
        load_recipe(bad)
    with pytest.raises(FileNotFoundError, match="pass --data PATH"):
        load_recipe("kvasir-seg", data=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="train.init: checkpoint 'nope.pt' not found"):
        load_recipe("synthetic", {"train.init": "nope.pt"})


def test_relative_data_is_read_beside_the_recipe(tmp_path):
    (tmp_path / "data" / "images").mkdir(parents=True)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: ultralightunet-t\ndata: data\ntrain: {img_size: 64}\n")
    assert load_recipe(recipe).data == str((tmp_path / "data").resolve())


def test_coerce_checks_types_and_keeps_none_where_allowed():
    assert coerce([1, 2], tuple[float, float] | None, "k") == (1.0, 2.0)
    assert coerce(None, int | None, "k") is None
    with pytest.raises(ValueError, match="k: expected an integer, got True"):
        coerce(True, int, "k")
    with pytest.raises(ValueError, match="k: expected a list of 2 numbers or null"):
        coerce([1], tuple[float, float] | None, "k")


def test_reserved_bench_keys_are_fields_the_harness_has():
    from edgeseg.benchmarks.harness import BenchConfig

    assert set(BENCH_RESERVED) <= {f.name for f in dataclasses.fields(BenchConfig)}
