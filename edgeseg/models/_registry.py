"""Model registry in the style of timm: ``@register_model``, ``create_model``, ``list_models``, ``ModelCfg``.

A model family module defines a builder function per variant and decorates it with its frozen config::

    @register_model(ModelCfg(name="ultralightunet-s", family="ultralightunet", ...))
    def ultralightunet_s(**kwargs) -> nn.Module:
        return UltraLightUNet(channels=(8, 16, 32, 48, 80), **kwargs)

Builders receive ``num_classes``, ``in_channels`` and any extra keyword the model documents.
"""

from __future__ import annotations

import difflib
import fnmatch
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PaperFigures:
    """Figures a paper reports for a model, with where they come from.

    Attributes:
        params_m: parameters in millions.
        flops_g: FLOPs (multiply-accumulates, ptflops convention) in G at ``input_size``.
        input_size: the spatial input size the FLOPs refer to.
        source: paper and table, e.g. "UltraLightUNet, Table 9".
    """

    params_m: float | None = None
    flops_g: float | None = None
    input_size: tuple[int, ...] | None = None
    source: str = ""


@dataclass(frozen=True)
class ModelCfg:
    """Frozen description of a registered model.

    Attributes:
        name: kebab-case registry name.
        family: model family (one module per family).
        input_size: default spatial input size, (H, W) or (D, H, W).
        in_channels: default input channels.
        num_classes: default output channels (1 = binary logits).
        mean: per-channel normalisation mean of the expected input (0-1 scaled).
        std: per-channel normalisation std.
        divisible_by: every spatial input dim must be a multiple of this.
        paper: the paper's parameter/FLOP figures for this configuration.
        description: one line for listings.
        license: license / provenance of the architecture definition.
        options: documented extra keyword arguments of the builder and their defaults.
        exportable: whether the model is expected to export to ONNX/OpenVINO/TFLite.
    """

    name: str
    family: str
    input_size: tuple[int, ...] = (256, 256)
    in_channels: int = 3
    num_classes: int = 1
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    divisible_by: int = 32
    paper: PaperFigures = field(default_factory=PaperFigures)
    description: str = ""
    license: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    exportable: bool = True

    @property
    def spatial_dims(self) -> int:
        """2 for images, 3 for volumes."""
        return len(self.input_size)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view of the config."""
        d = asdict(self)
        d["spatial_dims"] = self.spatial_dims
        return d


_BUILDERS: dict[str, Callable[..., Any]] = {}
_CFGS: dict[str, ModelCfg] = {}


def register_model(cfg: ModelCfg) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a builder under ``cfg.name``.

    Raises:
        ValueError: the name is already registered or not kebab-case.
    """

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if cfg.name in _BUILDERS:
            raise ValueError(f"model {cfg.name!r} is registered twice ({fn.__module__}.{fn.__qualname__})")
        if cfg.name != cfg.name.lower() or "_" in cfg.name or " " in cfg.name:
            raise ValueError(f"model names are kebab-case, got {cfg.name!r}")
        _BUILDERS[cfg.name] = fn
        _CFGS[cfg.name] = cfg
        fn.model_cfg = cfg  # type: ignore[attr-defined]
        return fn

    return deco


def _ensure_loaded() -> None:
    # Importing the package imports every family module, which registers its models.
    import edgeseg.models  # noqa: F401


def _unknown(name: str) -> ValueError:
    close = difflib.get_close_matches(name, list(_CFGS), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(
        f"unknown model {name!r}.{hint} Run `edgeseg models` to list the {len(_CFGS)} registered models."
    )


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``, sorted.

    Examples:
        >>> list_models("ultralightunet-*")
        ['ultralightunet-l', 'ultralightunet-m', 'ultralightunet-s', 'ultralightunet-t']
    """
    _ensure_loaded()
    return sorted(n for n in _CFGS if fnmatch.fnmatchcase(n, pattern))


def get_model_cfg(name: str) -> ModelCfg:
    """The frozen :class:`ModelCfg` of a registered model.

    Raises:
        ValueError: unknown name (with the closest registered names).
    """
    _ensure_loaded()
    if name not in _CFGS:
        raise _unknown(name)
    return _CFGS[name]


def create_model(
    name: str,
    *,
    pretrained: bool = False,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    in_channels: int | None = None,
    **kwargs: Any,
):
    """Build a registered model.

    Args:
        name: registry name, e.g. ``"ultralightunet-s"``.
        pretrained: load the weights shipped with the package for this model.
        weights: a checkpoint or state_dict file to load instead (``strict=True``).
        num_classes: output channels (default: the model's config, 1 for binary segmentation).
        in_channels: input channels (default: the model's config).
        **kwargs: model-specific options (see ``edgeseg info NAME``).

    Returns:
        The ``torch.nn.Module`` in eval mode when weights were loaded, train mode otherwise.

    Raises:
        ValueError: unknown name, unknown option, or no shipped weights for ``pretrained=True``.
        FileNotFoundError: ``weights`` does not exist.

    Examples:
        >>> model = create_model("ultralightunet-s")
        >>> model = create_model("ultralightunet-t", num_classes=4, in_channels=1)
    """
    cfg = get_model_cfg(name)
    if pretrained and weights is not None:
        raise ValueError("pass either pretrained=True or weights=PATH, not both")
    unknown_opts = sorted(set(kwargs) - set(cfg.options))
    if unknown_opts:
        valid = ", ".join(sorted(cfg.options)) or "none"
        raise ValueError(f"model {name!r} has no option(s) {unknown_opts}; valid options: {valid}")
    model = _BUILDERS[name](
        num_classes=cfg.num_classes if num_classes is None else num_classes,
        in_channels=cfg.in_channels if in_channels is None else in_channels,
        **kwargs,
    )
    model.model_cfg = cfg
    if pretrained:
        from edgeseg.weights import shipped_weights

        path = shipped_weights(name)
        if path is None:
            from edgeseg.weights import list_shipped

            have = ", ".join(list_shipped()) or "none yet"
            raise ValueError(
                f"no pretrained weights are shipped for {name!r} (shipped: {have}); "
                "train some with `edgeseg train` and pass weights=PATH"
            )
        weights = path
    if weights is not None:
        from edgeseg.weights import load_weights

        load_weights(model, weights, expected_model=name)
        model.eval()
    return model


def warn_random_weights(name: str) -> None:
    """Warn loudly that a model runs with random weights (no shipped or given weights)."""
    warnings.warn(
        f"{name}: no trained weights given or shipped; using RANDOM weights (outputs are meaningless)",
        stacklevel=2,
    )
