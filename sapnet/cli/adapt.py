"""``sapnet adapt``: adapt a derain network to unlabeled real rainy photos (semi-supervised, IQA-ranked
pseudo-labels; :mod:`sapnet.training.adapt`).

``sapnet train`` with the settings of the packaged ``adapt_real.yaml`` (also ``configs/adapt_real.yaml``): start
from ``prenet.rain100h``; every step trains on synthetic rain rendered on clean photos (``--clean``) and on real
patches (``--photos``) against pseudo-labels chosen among teachers and the student by BRISQUE and NIQE; ``best.pt``
is the checkpoint with the best held-out score (``--heldout``). Every option of ``sapnet train`` applies, including
``--resume`` (the pseudo-labels continue exactly). Exit status as ``sapnet train``.
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

from sapnet.cli import train

__all__ = ["ADAPT_CONFIG", "add_parser"]

ADAPT_CONFIG = Path(str(resources.files("sapnet") / "configs" / "adapt_real.yaml"))
"""The packaged settings of ``sapnet adapt``."""

_REAL_OPTIONS = {
    "photos": "real.photos",
    "images": "real.images",
    "heldout": "real.heldout",
    "teachers": "real.teachers",
    "clean": "data.clean",
}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "adapt",
        help="adapt a derain model to unlabeled real rainy photos (pseudo-labels ranked by BRISQUE / NIQE)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    real = p.add_argument_group("real photos (defaults: the packaged adapt_real.yaml)")
    real.add_argument("--photos", metavar="DIR", help="folder of real rainy photos (no ground truth)")
    real.add_argument("--images", metavar="LIST", help="names of the photos to adapt on (default: all not held out)")
    real.add_argument("--heldout", metavar="LIST", help="names of photos never trained on, that choose best.pt")
    real.add_argument("--teachers", nargs="+", metavar="NAME", help="registry checkpoints giving candidate labels")
    real.add_argument("--clean", metavar="DIR", help="clean photos to render synthetic rain on (not Rain100 tests)")
    train.add_training_arguments(p)
    p.set_defaults(run=train.run, default_config=ADAPT_CONFIG, extra_keys=_REAL_OPTIONS)
    return p
