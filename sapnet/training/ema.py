"""An exponential moving average (EMA) of a network's weights, resumable exactly."""

from __future__ import annotations

import copy
from typing import Any

import torch

from sapnet.models import DerainNet

__all__ = ["WeightEMA"]


class WeightEMA:
    """``average = decay * average + (1 - decay) * weights`` for every parameter after each :meth:`update`; buffers
    are copied. :attr:`module` is the averaged network (a copy of the trained one, eval mode, no gradients).

    Args:
        net: the network being trained (its current weights start the average).
        decay: in (0, 1), e.g. 0.999 (an average over roughly the last ``1 / (1 - decay)`` steps).
    """

    def __init__(self, net: DerainNet, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.module: DerainNet = copy.deepcopy(net).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, net: DerainNet) -> None:
        """Move the average towards ``net``'s current weights (``net`` has the architecture of :attr:`module`)."""
        self.updates += 1
        for avg, p in zip(self.module.parameters(), net.parameters(), strict=True):
            avg.lerp_(p.detach(), 1.0 - self.decay)
        for mine, theirs in zip(self.module.buffers(), net.buffers(), strict=True):
            mine.copy_(theirs)

    def state_dict(self) -> dict[str, Any]:
        """``{"decay", "updates", "state_dict"}`` with the averaged weights on the CPU (``weights_only`` safe)."""
        weights = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        return {"decay": self.decay, "updates": self.updates, "state_dict": weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (strict: the same network)."""
        self.module.load_state_dict(state["state_dict"], strict=True)
        self.decay, self.updates = float(state["decay"]), int(state["updates"])
