"""Model presets and the ``create_model`` factory."""

from __future__ import annotations

import os
from typing import Any

from sapnet.models.checkpoint import load_checkpoint, load_weights
from sapnet.models.derain_net import DerainNet, DerainNetConfig

__all__ = ["PRESETS", "create_model", "list_models"]

PRESETS: dict[str, DerainNetConfig] = {
    # SAPNet (Zheng et al., WACV 2022): progressive dilation 1..16 and channel residual attention.
    "sapnet": DerainNetConfig(stages=6, channels=32, dilations=(1, 2, 4, 8, 16), attention=True),
    # PReNet (Ren et al., CVPR 2019): the same recurrent network without dilation and without attention.
    "prenet": DerainNetConfig(stages=6, channels=32, dilations=(1, 1, 1, 1, 1), attention=False),
}


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(PRESETS)


def create_model(name: str, weights: str | os.PathLike[str] | None = None, **overrides: Any) -> DerainNet:
    """Build a preset network, optionally with weights.

    Args:
        name: a preset, see :func:`list_models` (``"sapnet"``, ``"prenet"``).
        weights: a checkpoint file (our format or a public SAPNet / PReNet file) loaded strictly; the model is
            then returned in eval mode. ``None`` gives a freshly initialised network in train mode.
        **overrides: :class:`DerainNetConfig` fields to change, e.g. ``stages=4`` or ``recurrent="gru"``.

    Raises:
        KeyError: unknown preset name (the message lists the valid ones).
        sapnet.CheckpointError: the weights do not belong to this network.
    """
    if name not in PRESETS:
        raise KeyError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    config = DerainNetConfig.from_dict({**PRESETS[name].to_dict(), **overrides})
    model = DerainNet(config)
    if weights is not None:
        ckpt = load_checkpoint(weights, stages=config.stages)
        load_weights(model, ckpt).eval()
    return model
