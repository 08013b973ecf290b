"""A run's output folder: refusing to mix two runs in one folder, and replacing a run on request."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from sapnet.models import CheckpointError, load_checkpoint
from sapnet.training.config import ConfigError

__all__ = ["OUTPUT_NAMES", "check_out_dir", "remove_outputs"]

OUTPUT_NAMES = (
    "last.pt",
    "best.pt",
    "log.csv",
    "val.csv",
    "curves.png",
    "tensorboard",
    "pseudo_labels/labels",
    "pseudo_labels/bank.json",
)
"""What a training run writes in its output folder (``pseudo_labels/inputs``, the downscaled real photos of an
adaptation, are rewritten alike by every run and stay)."""


def check_out_dir(out: Path, *, overwrite: bool) -> None:
    """Raise :class:`ConfigError` if ``out`` holds anything and ``overwrite`` is off (a new run would replace its
    checkpoints and append to its logs)."""
    if overwrite or not out.is_dir():
        return
    names = sorted(p.name for p in out.iterdir())
    if names:
        shown = ", ".join(names[:6]) + (f", ... ({len(names) - 6} more)" if len(names) > 6 else "")
        raise ConfigError(
            f"{out} is not empty ({shown}): a new run would replace its checkpoints and mix its logs with theirs; "
            "continue that run with --resume, write to another --out, or pass --overwrite to replace it"
        )


def remove_outputs(out: Path, log: Callable[[str], None]) -> None:
    """Delete the files of :data:`OUTPUT_NAMES` in ``out`` (other files stay), saying what is deleted and the
    validation PSNR of the ``best.pt`` that goes."""
    gone = [out / name for name in OUTPUT_NAMES if (out / name).exists()]
    if not gone:
        return
    best = ""
    if (out / "best.pt").is_file():
        try:
            metadata = load_checkpoint(out / "best.pt").metadata
            if metadata.get("best_psnr") is not None:
                best = f"; its best.pt had val PSNR {metadata['best_psnr']:.3f} dB at step {metadata.get('step')}"
        except CheckpointError:
            best = "; its best.pt was unreadable"
    names = ", ".join(p.relative_to(out).as_posix() for p in gone)
    log(f"--overwrite: deleting the previous run's {names} in {out}{best}")
    for path in gone:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
