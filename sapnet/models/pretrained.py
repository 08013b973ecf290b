"""Trained weights shipped with sapnet (the repository's ``checkpoints/`` folder).

Weights we train ourselves are committed to ``checkpoints/`` with a model card. They are found in the folder
named by the ``SAPNET_CHECKPOINTS`` environment variable, else in ``checkpoints/`` beside the package (a
source checkout or an editable install).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PRETRAINED", "checkpoint_dir", "default_checkpoint", "pretrained_checkpoint"]

PRETRAINED: dict[str, str] = {
    # name -> file in the checkpoints folder, best first.
    "sapnet-rain100h": "sapnet_rain100h.pt",
}

_PUBLIC_HINT = (
    "pass a checkpoint instead: `sapnet derain ... --checkpoint PATH`, or in Python "
    "`sapnet.derain(image, model='PATH')` / `model=sapnet.load_model('PATH')`. The public SAPNet checkpoint "
    "(ShenZheng2000/SAPNet-for-image-deraining, logs/SAPNet/Model11/net_latest.pth) and the public PReNet "
    "checkpoints (csdwren/PReNet, logs/*/PReNet6/net_latest.pth) load as they are"
)


def checkpoint_dir() -> Path:
    """The folder searched for shipped weights."""
    env = os.environ.get("SAPNET_CHECKPOINTS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "checkpoints"


def pretrained_checkpoint(name: str) -> Path:
    """Path of the shipped checkpoint ``name`` (see :data:`PRETRAINED`).

    Raises:
        KeyError: unknown name (the message lists the valid ones).
        FileNotFoundError: the weights are not shipped (yet); the message says how to pass a checkpoint.
    """
    if name not in PRETRAINED:
        raise KeyError(f"unknown pretrained model {name!r}; valid names: {', '.join(sorted(PRETRAINED))}")
    path = checkpoint_dir() / PRETRAINED[name]
    if not path.is_file():
        raise FileNotFoundError(f"sapnet does not ship trained weights for {name!r} yet (no {path}); {_PUBLIC_HINT}")
    return path


def default_checkpoint() -> Path:
    """The best shipped checkpoint, or ``FileNotFoundError`` saying that none is shipped and what to do."""
    for name in PRETRAINED:
        path = checkpoint_dir() / PRETRAINED[name]
        if path.is_file():
            return path
    raise FileNotFoundError(f"sapnet ships no trained checkpoint yet (looked in {checkpoint_dir()}); {_PUBLIC_HINT}")
