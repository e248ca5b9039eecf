"""Training losses of the seed papers.

- binary: BCE + IoU weighted 1:1 (``bce-iou``, the default), or the boundary-weighted form the UltraLightUNet
  paper names for its polyp recipe, "weighted BCE + weighted IoU" (``wbce-wiou``: PraNet's structure loss,
  pixels where a 31x31 local mean of the mask differs from the mask count up to 6x);
- multi-class 2D: cross-entropy 0.3 + Dice 0.7;
- 3D: Dice + cross-entropy (MONAI's DiceCE convention, equal weights);
- plus an attention regulariser when the model exposes one (PAM-UNet), added by :func:`compute_loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgeseg.train.config import LOSSES  # the names, declared with the --loss option


def bce_iou_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of BCE + soft IoU loss for binary logits (N, 1, ...) and a {0, 1} target."""
    target = target.float().reshape(logits.shape)
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    inter = (prob * t).sum(1)
    union = prob.sum(1) + t.sum(1) - inter
    iou = 1.0 - (inter + 1.0) / (union + 1.0)  # +1 smoothing: an empty target with an empty prediction is 0
    return bce + iou.mean()


def weighted_bce_iou_loss(logits: torch.Tensor, target: torch.Tensor, window: int = 31,
                          boundary_gain: float = 5.0) -> torch.Tensor:
    """Boundary-weighted BCE + IoU for binary 2D logits (N, 1, H, W) and a {0, 1} target.

    Each pixel's weight is ``1 + boundary_gain * |mean of the mask over a window x window neighbourhood - mask|``:
    1 far from an edge, up to ``1 + boundary_gain`` on it (PraNet's structure loss, which UltraLightUNet uses for
    polyps). Both terms are weighted means per image, then averaged over the batch.
    """
    if logits.dim() != 4 or logits.shape[1] != 1:
        raise ValueError(f"wbce-wiou is for binary 2D logits (N, 1, H, W), got {tuple(logits.shape)}; use bce-iou")
    target = target.float().reshape(logits.shape)
    # the box mean done as two 1D passes (the same numbers as a window x window pool, ~10x faster on CPU)
    half = window // 2
    local = F.avg_pool2d(F.avg_pool2d(target, (window, 1), stride=1, padding=(half, 0)), (1, window), stride=1,
                         padding=(0, half))
    weight = 1.0 + boundary_gain * (local - target).abs()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    wbce = (weight * bce).sum((2, 3)) / weight.sum((2, 3))
    prob = torch.sigmoid(logits)
    inter = (weight * prob * target).sum((2, 3))
    union = (weight * (prob + target)).sum((2, 3)) - inter
    wiou = 1.0 - (inter + 1.0) / (union + 1.0)
    return (wbce + wiou).mean()


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, include_background: bool = False) -> torch.Tensor:
    """1 - mean soft Dice over classes for multi-class logits (N, K, ...) and integer labels (N, ...)."""
    k = logits.shape[1]
    prob = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target.long(), k).movedim(-1, 1).to(prob.dtype)
    start = 0 if include_background or k == 1 else 1
    dims = (0, *range(2, logits.dim()))
    inter = (prob * onehot).sum(dims)[start:]
    denom = (prob + onehot).sum(dims)[start:]
    return 1.0 - ((2 * inter + 1.0) / (denom + 1.0)).mean()


def ce_dice_loss(logits: torch.Tensor, target: torch.Tensor, w_ce: float = 0.3, w_dice: float = 0.7) -> torch.Tensor:
    """``w_ce`` cross-entropy + ``w_dice`` soft Dice (foreground classes), the multi-class 2D recipe."""
    return w_ce * F.cross_entropy(logits, target.long()) + w_dice * soft_dice_loss(logits, target)


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice (all classes) + cross-entropy with equal weights, the 3D recipe; binary logits use BCE."""
    if logits.shape[1] == 1:
        t = target.float().reshape(logits.shape)
        prob = torch.sigmoid(logits)
        inter = (prob * t).sum()
        dice = 1.0 - (2 * inter + 1.0) / (prob.sum() + t.sum() + 1.0)
        return dice + F.binary_cross_entropy_with_logits(logits, t)
    return soft_dice_loss(logits, target, include_background=True) + F.cross_entropy(logits, target.long())


def default_loss(num_classes: int, spatial_dims: int) -> str:
    """The recipe's loss for a task: "bce-iou" (binary 2D), "ce-dice" (multi-class 2D), "dice-ce" (3D)."""
    if spatial_dims == 3:
        return "dice-ce"
    return "bce-iou" if num_classes == 1 else "ce-dice"


def check_loss(name: str, num_classes: int, spatial_dims: int) -> None:
    """Raise ValueError when loss ``name`` cannot train this task, saying which loss can (unknown names are
    :func:`get_loss`'s to refuse)."""
    if name in ("bce-iou", "wbce-wiou") and num_classes > 1:
        raise ValueError(f"--loss {name} is for binary masks (--num-classes 1); use ce-dice or dice-ce")
    if name == "wbce-wiou" and spatial_dims != 2:
        raise ValueError("--loss wbce-wiou is for 2D images; use dice-ce or bce-iou for volumes")


def get_loss(name: str):
    """The loss function called ``name`` (one of :data:`LOSSES`)."""
    table = {"bce-iou": bce_iou_loss, "wbce-wiou": weighted_bce_iou_loss, "ce-dice": ce_dice_loss,
             "dice-ce": dice_ce_loss}
    if name not in table:
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")
    return table[name]


_REG_NAMES = ("attention_regularizer", "attention_regulariser", "attention_loss")


def attention_regularizer(model: torch.nn.Module):
    """The model's attention regulariser as ``fn(attention_maps) -> scalar`` (already weighted), or None.

    A model opts in by exposing ``forward_with_attention(x) -> (logits, maps)``. The regulariser is found,
    in order, as a method of the model, or as a function of that name in the module that defines the model or
    one of its layers (PAM-UNet: ``edgeseg.layers.pla.attention_regularizer``); that module's
    ``ATTENTION_REG_WEIGHT`` (default 1) weights it.
    """
    import sys

    core = getattr(model, "module", model)  # DDP
    core = getattr(core, "_orig_mod", core)  # torch.compile
    if not hasattr(core, "forward_with_attention"):
        return None
    for attr in _REG_NAMES:
        fn = getattr(core, attr, None)
        if callable(fn):
            return fn
    seen: set[str] = set()
    for m in core.modules():
        name = type(m).__module__
        if name in seen:
            continue
        seen.add(name)
        mod = sys.modules.get(name)
        for attr in _REG_NAMES:
            fn = getattr(mod, attr, None)
            if callable(fn):
                weight = float(getattr(mod, "ATTENTION_REG_WEIGHT", 1.0))
                return lambda maps, fn=fn, weight=weight: weight * fn(maps)
    return None


def compute_loss(model: torch.nn.Module, images: torch.Tensor, target: torch.Tensor, loss_fn
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, logits) of one batch, adding the model's attention regulariser when it exposes one."""
    reg = attention_regularizer(model)
    if reg is None:
        logits = model(images)
        return loss_fn(logits, target), logits
    core = getattr(model, "module", model)
    if core is model:
        logits, maps = model.forward_with_attention(images)
    else:  # DDP: run through the wrapper so gradients are synchronised
        logits, maps = _ddp_forward_with_attention(model, images)
    return loss_fn(logits, target) + reg(maps), logits


def _ddp_forward_with_attention(ddp_model, images):
    core = ddp_model.module
    original = core.forward
    core.forward = core.forward_with_attention
    try:
        return ddp_model(images)
    finally:
        core.forward = original
