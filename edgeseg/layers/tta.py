"""Test-time augmentation as a module: the wrapped model's logits averaged over flipped (and resized) views.

The flipped views of one size run as one batch through one call of the model, so an exported graph holds the
model once (not once per view) and the backend batches the convolutions. Export-safe: ``torch.flip``,
``torch.cat`` and ``F.interpolate`` at sizes fixed when the graph is traced export to ONNX, OpenVINO and
TFLite, so an artifact can carry its augmentation (``edgeseg convert --tta flips``) and a device runs it as
one model. The views are those of
:class:`edgeseg.common.tta.TTASpec`; :func:`edgeseg.common.tta.tta_predict` is the same computation in numpy.

Examples:
    >>> from edgeseg.common.tta import parse_tta
    >>> tta = TestTimeAugmentation(create_model("ultralightunet-s", pretrained=True), parse_tta("flips"))
    >>> logits = tta(x)  # (N, 1, H, W), the mean of 4 passes
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.common.tta import TTASpec, parse_tta


class TestTimeAugmentation(nn.Module):
    """``model`` with its logits averaged over the views of ``spec``.

    Args:
        model: the segmentation network (first output taken when it returns several, e.g. deep supervision).
        spec: the views, or a ``--tta`` mode name ("hflip", "flips", "flips+scales", ...).

    Raises:
        ValueError: resized views of a 3D model (only flips are defined for volumes).
    """

    __test__ = False  # not a pytest class, whatever its name says

    def __init__(self, model: nn.Module, spec: TTASpec | str):
        super().__init__()
        cfg = getattr(model, "model_cfg", None)
        if isinstance(spec, str):
            spec = parse_tta(spec, getattr(cfg, "divisible_by", 32))
        if cfg is not None and cfg.spatial_dims == 3 and spec.scales != (1.0,):
            raise ValueError("test-time scales are for 2D models; use flips only (--tta flips) for volumes")
        self.model = model
        self.spec = spec
        # what readers of the wrapped model look for (convert_model, the runtimes)
        for name in ("model_cfg", "num_classes", "in_channels"):
            if hasattr(model, name):
                setattr(self, name, getattr(model, name))

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out[0] if isinstance(out, (list, tuple)) else out

    def _views(self, x: torch.Tensor) -> torch.Tensor:
        """The summed logits of every flip of ``x``, run as one batch (one model call, one copy of the graph)."""
        flips = self.spec.flips
        stacked = torch.cat([torch.flip(x, axes) if axes else x for axes in flips], 0)
        y = self._logits(stacked).unflatten(0, (len(flips), -1))
        total = None
        for k, axes in enumerate(flips):
            yk = torch.flip(y[k], axes) if axes else y[k]
            total = yk if total is None else total + yk
        return total

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spec.scales == (1.0,):  # flips only: no shape is read, so dynamic sizes export too
            return self._views(x) / self.spec.passes
        spatial = tuple(int(d) for d in x.shape[2:])
        total = None
        for size in self.spec.sizes(spatial):
            xs = x if size == spatial else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            y = self._views(xs)
            if size != spatial:
                y = F.interpolate(y, size=spatial, mode="bilinear", align_corners=False)
            total = y if total is None else total + y
        return total / self.spec.passes
