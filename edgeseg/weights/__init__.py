"""Weights shipped inside the package and the loader shared by every entry point.

Shipped weights live beside this file as ``<model-name>.pt`` (an edgeseg checkpoint) with a model card
``<model-name>.json`` (data, split, recipe, epochs, time, validation Dice). Nothing is downloaded.

Checkpoint format (``torch.save`` of a dict), written by ``edgeseg.train``:
``{"format": "edgeseg-checkpoint/1", "model": name, "model_kwargs": {...}, "state_dict": {...},
"preprocessing": {...}, "metrics": {...}, "recipe": {...}}``. A bare ``state_dict`` (e.g. the authors'
MK-UNet release) is accepted too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.common.errors import first_line

CHECKPOINT_FORMAT = "edgeseg-checkpoint/1"
_HERE = Path(__file__).resolve().parent


def shipped_weights(name: str) -> Path | None:
    """Path of the weights shipped for ``name``, or None."""
    path = _HERE / f"{name}.pt"
    return path if path.is_file() else None


def list_shipped() -> list[str]:
    """Names of the models that have shipped weights."""
    return sorted(p.stem for p in _HERE.glob("*.pt"))


def model_card(name: str) -> dict[str, Any] | None:
    """The model card of the shipped weights for ``name``, or None."""
    path = _HERE / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


# keys under which other code bases keep the state_dict in a checkpoint dict
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file into a dict with at least ``state_dict`` (and ``model`` when known).

    Loading never runs code from the file: it unpickles tensors and plain data only (``weights_only=True``),
    plus the one metadata type edgeseg itself writes (``torch.torch_version.TorchVersion``, a ``str``). Bare
    state_dicts and the usual wrappers of other code bases (``{"model": sd}``, ``{"net": sd}``,
    ``{"state_dict": sd}`` with DataParallel's ``module.`` prefix) are accepted. Weights with NaN or inf are
    refused.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable torch checkpoint, holds Python objects that loading would
            have to execute, or holds non-finite weights.
    """
    import pickle

    import torch
    from torch.torch_version import TorchVersion

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        with torch.serialization.safe_globals([TorchVersion]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        what = _unsafe_globals(path)
        if not what:  # not a refusal: the bytes are no checkpoint at all
            raise ValueError(f"{path}: not a readable torch checkpoint ({first_line(exc, 200)})") from None
        raise ValueError(
            f"{path}: refused: the checkpoint holds Python objects beyond tensors and plain data ({what}), and "
            "loading them could run code. If you trust its source, re-save its weights as a plain dict: "
            "python -c \"import torch; c = torch.load('IN.pt', weights_only=False); "
            "torch.save({'state_dict': c['state_dict']}, 'OUT.pt')\""
        ) from None
    except Exception as exc:  # torch raises several types for corrupt files
        raise ValueError(f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {exc})") from None
    ckpt = _unwrap(obj)
    if ckpt is None:
        raise ValueError(
            f"{path}: neither an edgeseg checkpoint nor a state_dict (a dict of tensors, or one under "
            f"{', '.join(repr(k) for k in _WRAPPER_KEYS)})"
        )
    bad = [k for k, v in ckpt["state_dict"].items()
           if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(
            f"{path}: {len(bad)} weight tensor(s) hold NaN or inf (first: {bad[0]}); the training that wrote "
            "them diverged: use an earlier checkpoint"
        )
    return ckpt


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(hasattr(v, "shape") for v in obj.values())


def _unwrap(obj: Any) -> dict[str, Any] | None:
    """The checkpoint dict with ``state_dict`` (``module.`` prefixes stripped), or None."""
    if _is_state_dict(obj):
        obj = {"state_dict": obj}
    elif isinstance(obj, dict) and not _is_state_dict(obj.get("state_dict")):
        inner = next((obj[k] for k in _WRAPPER_KEYS if _is_state_dict(obj.get(k))), None)
        if inner is None:
            return None
        obj = {**{k: v for k, v in obj.items() if not _is_state_dict(v)}, "state_dict": inner}
    elif not isinstance(obj, dict):
        return None
    sd = obj["state_dict"]
    if all(k.startswith("module.") for k in sd):  # saved from DataParallel / DDP
        obj = {**obj, "state_dict": {k[len("module."):]: v for k, v in sd.items()}}
    if not isinstance(obj.get("model", ""), str):
        obj = {k: v for k, v in obj.items() if k != "model"}
    return obj


def _unsafe_globals(path: Path) -> str:
    import torch

    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - only for the message
        return ""
    return ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")


@dataclass
class ResolvedWeights:
    """A model with the weights every entry point agreed on (see :func:`resolve`).

    Attributes:
        module: the ``nn.Module``, in eval mode, with the weights loaded.
        model: its registry name.
        source: "given" (a checkpoint path), "shipped" (the package's weights) or "random".
        path: the checkpoint file, or None for random weights.
        sha256: the checkpoint file's sha256, or None for random weights.
        checkpoint: the checkpoint dict ({} for random weights): recipe, metrics, model_kwargs, ...
        model_kwargs: the builder options used (the checkpoint's, updated by the caller's).
    """

    module: Any
    model: str
    source: str
    path: Path | None
    sha256: str | None
    checkpoint: dict[str, Any] = field(default_factory=dict, repr=False)
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def preprocessing(self) -> dict[str, Any]:
        """The checkpoint's pre-processing record (size trained at, mean/std, colour); {} when it has none."""
        return dict(self.checkpoint.get("preprocessing") or {})


def resolve(
    model: str | None,
    weights: str | Path | None = None,
    *,
    seed: int | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> ResolvedWeights:
    """The one rule for "which weights": a given checkpoint, else the shipped weights, else random ones.

    Every command and API that builds a model from a name and/or a checkpoint goes through here (torch
    runtime, evaluate, convert, bench, predict), so they agree on the model, its weights and its
    pre-processing.

    Args:
        model: registry name; optional with a checkpoint that names its model, and then it must match.
        weights: a checkpoint path (edgeseg's, a bare state_dict, or a common third-party wrapper).
        seed: seeds torch before a random initialisation (reproducible random weights); else unused.
        model_kwargs: builder options over the checkpoint's own.

    Raises:
        FileNotFoundError: the checkpoint does not exist.
        ValueError: unknown model, a checkpoint of another model, a bare state_dict without a model name,
            or weights that do not fit (see :func:`read_checkpoint` for refused files).

    Examples:
        >>> r = resolve("ultralightunet-s")                      # shipped weights
        >>> r.source, r.sha256[:8], r.preprocessing["size"]
        >>> resolve(None, "runs/s/best.pt").module                  # the checkpoint names its model
    """
    from edgeseg.common.io import sha256_file
    from edgeseg.models import create_model, get_model_cfg
    from edgeseg.models._registry import warn_random_weights

    if weights is not None:
        path: Path | None = Path(weights)
        ckpt = read_checkpoint(path)
        saved = ckpt.get("model")
        if model is not None and saved is not None and saved != model:
            raise ValueError(f"{path}: checkpoint is for model {saved!r}, not {model!r}; "
                             f"use --model {saved} (or drop --model) or another checkpoint")
        name = saved or model
        if name is None:
            raise ValueError(f"{path} is a bare state_dict, which does not name its model: say which model "
                             "it is (--model NAME, or model=NAME)")
        source = "given"
    else:
        if model is None:
            raise ValueError("say which model: a registered name (edgeseg models) or a checkpoint")
        name = model
        get_model_cfg(name)  # unknown names: ValueError with "did you mean"
        path = shipped_weights(name)
        ckpt = read_checkpoint(path) if path is not None else {}
        source = "shipped" if path is not None else "random"
    kwargs = {**(ckpt.get("model_kwargs") or {}), **(model_kwargs or {})}
    if path is None:
        import torch

        if seed is not None:
            torch.manual_seed(seed)
        warn_random_weights(name)
        module = create_model(name, **kwargs)
    else:
        module = create_model(name, **kwargs)
        _load_state(module, ckpt, path, name)
    return ResolvedWeights(module=module.eval(), model=name, source=source, path=path,
                           sha256=sha256_file(path) if path is not None else None, checkpoint=ckpt,
                           model_kwargs=kwargs)


def load_weights(model, path: str | Path, expected_model: str | None = None) -> dict[str, Any]:
    """Load ``path`` into ``model`` with ``strict=True``; returns the checkpoint dict.

    Raises:
        ValueError: the checkpoint is for another model, or its tensors do not fit this model.
    """
    ckpt = read_checkpoint(path)
    saved = ckpt.get("model")
    if expected_model is not None and saved is not None and saved != expected_model:
        raise ValueError(
            f"{path}: checkpoint is for model {saved!r}, not {expected_model!r}; "
            f"use --model {saved} or another checkpoint"
        )
    _load_state(model, ckpt, path, expected_model)
    return ckpt


def _load_state(model: Any, ckpt: dict[str, Any], path: str | Path, name: str | None) -> None:
    """``load_state_dict(strict=True)`` with a one-line error that names the file and the model."""
    expected_model = name
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ValueError(
            f"{path}: weights do not fit {expected_model or type(model).__name__} "
            f"({' '.join(first[:2])[:300]})"
        ) from None
