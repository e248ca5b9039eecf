"""Turn a training checkpoint into shipped weights: ``edgeseg/weights/<model>.pt`` plus its model card.

The shipped file keeps the weights and metadata only (no optimizer state). The card records the data and
split, the recipe, the epochs actually trained, the training time and the validation metrics as measured by
``edgeseg evaluate --json`` (passed in as a file, so the card quotes the evaluation verbatim)::

    edgeseg evaluate --weights runs/uls/best.pt --data KVASIR --split val --json > uls-eval.json
    python -m edgeseg.train.ship runs/uls/best.pt --eval-json uls-eval.json \\
        --data-name "Kvasir-SEG (256x256 copy)" --data-terms "research use; cite Jha et al. 2020"
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
from pathlib import Path
from typing import Any

from edgeseg.common.io import atomic_write_json, sha256_file
from edgeseg.train.checkpoint import shrink_for_shipping
from edgeseg.train.config import RUN_RECORD_KEYS, card_keys
from edgeseg.weights import _HERE as WEIGHTS_DIR
from edgeseg.weights import read_checkpoint


def card_recipe_keys() -> tuple[str, ...]:
    """The recipe keys a card quotes: the declared training options marked for the card
    (:func:`edgeseg.train.config.option`), then what the run really did with them (``RUN_RECORD_KEYS``:
    optimizer, schedule, scales, amp_dtype, ...)."""
    return (*card_keys(), *RUN_RECORD_KEYS)


def _stages(ckpt: dict[str, Any]) -> list[dict[str, Any]]:
    """Training stages, first to last, following each run's ``init`` checkpoint (fine-tuning chains)."""
    stages: list[dict[str, Any]] = []
    seen = 0
    while ckpt is not None and seen < 20:
        r, m = ckpt.get("recipe", {}), ckpt.get("metrics", {})
        stages.insert(0, {"epochs_trained": m.get("epoch"), "epochs_planned": r.get("epochs"),
                          "train_time_s": m.get("elapsed_s"), "img_size": r.get("img_size"), "lr": r.get("lr"),
                          "ema": r.get("ema", 0.0), "val_dice_at_end": m.get("val_dice"), "init": r.get("init")})
        init = r.get("init")
        ckpt = read_checkpoint(init) if init and Path(init).is_file() else None
        seen += 1
    return stages


def ship(checkpoint: str | Path, eval_summary: dict[str, Any], data_name: str, data_terms: str = "",
         dest_dir: str | Path = WEIGHTS_DIR, notes: str = "") -> tuple[Path, Path]:
    """Write ``<dest_dir>/<model>.pt`` and ``<model>.json``; returns both paths.

    Raises:
        ValueError: the evaluation is of another model or lacks the metrics.
    """
    ckpt = read_checkpoint(checkpoint)
    name = ckpt.get("model")
    if not name:
        raise ValueError(f"{checkpoint}: not an edgeseg checkpoint (no model name)")
    if eval_summary.get("model") != name:
        raise ValueError(f"the evaluation is of {eval_summary.get('model')!r}, not {name!r}")
    missing = [k for k in ("dice", "iou", "recall", "precision", "hd95", "n") if k not in eval_summary]
    if missing:
        raise ValueError(f"the evaluation lacks {missing}; produce it with `edgeseg evaluate --json`")
    dest_dir = Path(dest_dir)
    pt = shrink_for_shipping(checkpoint, dest_dir / f"{name}.pt",
                             {"eval_val_dice": eval_summary["dice"], "eval_val_iou": eval_summary["iou"]})
    recipe = ckpt.get("recipe", {})
    stages = _stages(ckpt)
    card = {
        "model": name,
        "file": pt.name,
        "sha256": sha256_file(pt),
        "size_bytes": pt.stat().st_size,
        "data": data_name,
        "data_terms": data_terms,
        "train_split": recipe.get("train_data"),
        "val_split": recipe.get("val_data"),
        "model_kwargs": ckpt.get("model_kwargs") or {},  # the builder options resolve() rebuilds it with
        "recipe": {k: recipe.get(k) for k in card_recipe_keys() if k in recipe},
        "epochs_trained": sum(st["epochs_trained"] or 0 for st in stages),
        "train_time_s": round(sum(st["train_time_s"] or 0 for st in stages), 1),
        "stages": stages,
        "preprocessing": ckpt.get("preprocessing"),
        "val_dice": float(eval_summary["dice"]),
        "val_iou": float(eval_summary["iou"]),
        "val_recall": float(eval_summary["recall"]),
        "val_precision": float(eval_summary["precision"]),
        "val_hd95_px": float(eval_summary["hd95"]),
        "val_n": int(eval_summary["n"]),
        "evaluation": eval_summary,
        "trained_by": "edgeseg train (CPU)",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "notes": notes,
    }
    card_path = atomic_write_json(dest_dir / f"{name}.json", card)
    return pt, card_path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Ship a training checkpoint as package weights with a model card.")
    p.add_argument("checkpoint")
    p.add_argument("--eval-json", required=True, help="output of `edgeseg evaluate --json`")
    p.add_argument("--data-name", required=True)
    p.add_argument("--data-terms", default="")
    p.add_argument("--dest", default=str(WEIGHTS_DIR))
    p.add_argument("--notes", default="")
    args = p.parse_args(argv)
    summary = json.loads(Path(args.eval_json).read_text())
    pt, card = ship(args.checkpoint, summary, args.data_name, args.data_terms, args.dest, args.notes)
    print(f"wrote {pt} ({pt.stat().st_size} bytes) and {card}")


if __name__ == "__main__":
    main()
