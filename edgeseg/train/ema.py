"""An exponential moving average of the weights during training (``edgeseg train --ema DECAY``).

After every optimiser step the averaged copy moves towards the trained weights:
``ema = d * ema + (1 - d) * w`` with ``d = min(decay, (1 + n) / (10 + n))`` at update ``n`` (the ramp keeps the
random or ``--init`` weights from dominating the first steps). Floating-point buffers (BatchNorm running
statistics) are averaged the same way; integer buffers are copied. With ``--ema`` on, the averaged weights are
the ones validated each epoch and written to ``best.pt`` / ``last.pt``; the trained weights travel in
``last.pt``'s training state so that ``--resume`` continues exactly.
"""

from __future__ import annotations

import copy
from typing import Any

import torch


class WeightEMA:
    """The moving average of ``model``'s parameters and buffers; ``module`` is a model to evaluate."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"--ema must be in (0, 1) (e.g. 0.998), or 0 to turn it off; got {decay}")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the average one step towards ``model`` (the plain module, not a DDP/compile wrapper)."""
        self.updates += 1
        d = self.current_decay()
        avg = self.module.state_dict()
        for name, value in model.state_dict().items():
            target = avg[name]
            if target.dtype.is_floating_point:
                target.lerp_(value.detach(), 1.0 - d)
            else:
                target.copy_(value)

    def state(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates}

    def load(self, state_dict: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        self.module.load_state_dict(state_dict)
        self.updates = int(state["updates"])
