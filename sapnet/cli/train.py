"""``sapnet train`` (also ``python train.py``, and ``torchrun --nproc_per_node N train.py``): train SAPNet / PReNet.

Settings come from the defaults (the SAPNet paper on Rain100H), then ``--config FILE``, then ``--set KEY=VALUE``,
then the other options. With ``--resume`` and no ``--config`` they start from the checkpoint's own settings
instead of the defaults, so ``train.py --resume runs/x/last.pt`` alone continues that run; a resumed run may
change only limits, logging and outputs (max steps, epochs, workers, device, log/save/validation intervals,
progress, TensorBoard, --out), and any other difference is refused, naming the key and both values. A new run
refuses a non-empty --out (use --resume, another --out, or --overwrite).
Exit status: 0 done; 2 setup error (bad config or data, missing pretrained loss networks, unusable checkpoint, a
non-empty --out, a resume with other settings); 3 the loss became NaN / inf (the last good ``last.pt`` is kept);
130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

import yaml

from sapnet.data import DatasetError
from sapnet.losses import BackboneUnavailableError
from sapnet.models import CheckpointError, load_training_state
from sapnet.training.config import ConfigError, TrainConfig

__all__ = ["add_parser", "config_from_args", "run"]

_PROGRESSIVE = (1, 2, 4, 8, 16, 32, 64, 128)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train SAPNet / PReNet on paired rainy/clean images (resumable, multi-GPU with torchrun)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_training_arguments(p)
    p.set_defaults(run=run, default_config=None)
    return p


def add_training_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``sapnet train`` (also those of ``sapnet adapt``)."""
    p.add_argument("--config", type=Path, metavar="FILE", help="YAML config (see configs/); 'base:' is followed")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set optim.gamma=0.5 (VALUE is read as YAML); repeatable",
    )
    p.add_argument(
        "--model",
        metavar="NAME",
        help="the network: a registry architecture (sapnet, prenet, prn, ...: `sapnet models`) or arch.tag",
    )
    p.add_argument(
        "--pretrained",
        action="store_true",
        default=None,
        help="start from the published weights of --model (fine-tuning; `sapnet models --pretrained`)",
    )
    p.add_argument("--data", metavar="DIR", help="paired training folder, any layout (default: the demo set)")
    p.add_argument("--val", metavar="DIR", help="paired validation folder")
    p.add_argument("--out", metavar="DIR", help="output folder (logs, curves, last.pt, best.pt)")
    p.add_argument("--epochs", type=int, metavar="N")
    p.add_argument("--batch-size", type=int, metavar="N", help="patches per step and per process")
    p.add_argument("--lr", type=float, help="Adam learning rate (reference code: 1e-3)")
    p.add_argument("--patch", type=int, metavar="P", help="training patch side in pixels")
    p.add_argument("--max-steps", type=int, metavar="N", help="stop after N optimiser steps in all")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], help="mixed precision (CUDA only)")
    p.add_argument(
        "--backbones",
        choices=["imagenet", "random"],
        help="loss networks: pretrained (needs their weights) or random (smoke tests only)",
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const="",
        metavar="PATH",
        help="continue from a training checkpoint (default: OUT/last.pt); without --config its settings are "
        "read from it, without --out the run writes beside it",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run even if OUT is not empty: the previous run's checkpoints and logs there are deleted",
    )
    p.add_argument(
        "--save-every", type=int, metavar="N", help="also save last.pt every N steps (it is always saved at epoch ends)"
    )
    p.add_argument(
        "--ema",
        type=float,
        metavar="DECAY",
        help="keep an exponential moving average of the weights (e.g. 0.999; 0: off); validation and best.pt use "
        "it, last.pt keeps the trained weights and the average for resuming",
    )
    p.add_argument("--workers", type=int, metavar="N", help="DataLoader worker processes (default: min(4, CPUs - 1))")
    p.add_argument("--grad-clip", type=float, metavar="NORM", help="clip the gradient norm (0: no clipping)")
    switches = p.add_argument_group("switches (each also has a positive form, e.g. --attention)")
    bool_opt = argparse.BooleanOptionalAction
    switches.add_argument("--dilation", action=bool_opt, help="progressive dilations 1,2,4,.. (off: all 1)")
    switches.add_argument("--attention", action=bool_opt, help="channel residual attention")
    switches.add_argument("--ubs", action=bool_opt, help="UBS segmentation loss term (on: weight 0.1 if it was 0)")
    switches.add_argument("--contrastive", action=bool_opt, help="contrastive loss term (on: weight 0.1 if 0)")
    switches.add_argument("--lpips", action=bool_opt, help="LPIPS loss term (on: weight 0.1 if it was 0)")
    switches.add_argument("--lr-decay", action=bool_opt, help="MultiStepLR schedule (off: constant LR)")
    switches.add_argument("--channels-last", action=bool_opt, help="channels-last memory format")
    switches.add_argument("--progress", action=bool_opt, help="tqdm progress bar")
    switches.add_argument(
        "--tensorboard", action=bool_opt, help="TensorBoard events in OUT/tensorboard (pip install tensorboard)"
    )


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """The run's :class:`TrainConfig`: ``--config`` (else ``base``, else the defaults), ``--set``, then the
    options (in that order).

    Raises:
        ConfigError: unreadable / invalid config, unknown ``--set`` key, or a resulting value that cannot work.
    """
    default = getattr(args, "default_config", None)
    if args.config is not None:
        cfg = TrainConfig.from_yaml(args.config)
    elif base is not None:
        cfg = base
    else:
        cfg = TrainConfig.from_yaml(default) if default is not None else TrainConfig()
    for item in args.overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. optim.lr=1e-4")
        try:
            value: Any = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({e})") from None
        cfg.set(key.strip(), value, source="--set")
    direct = {
        "model": "model.preset",
        "pretrained": "model.pretrained",
        "data": "data.train",
        "val": "data.val",
        "out": "run.out",
        "epochs": "optim.epochs",
        "batch_size": "data.batch_size",
        "lr": "optim.lr",
        "patch": "data.patch",
        "max_steps": "run.max_steps",
        "seed": "run.seed",
        "device": "run.device",
        "amp": "run.amp",
        "backbones": "loss.backbones",
        "workers": "data.workers",
        "lr_decay": "optim.lr_decay",
        "channels_last": "run.channels_last",
        "progress": "run.progress",
        "tensorboard": "run.tensorboard",
        "save_every": "run.save_every",
        "attention": "model.attention",
    }
    for attr, key in direct.items():
        value = getattr(args, attr)
        if value is not None:
            cfg.set(key, value, source=f"--{attr.replace('_', '-')}")
    for attr, key in getattr(args, "extra_keys", {}).items():
        value = getattr(args, attr)
        if value is not None:
            cfg.set(key, value, source=f"--{attr.replace('_', '-')}")
    if args.ema is not None:
        cfg.set("optim.ema", args.ema if args.ema > 0 else None, source="--ema")
    if args.grad_clip is not None:
        cfg.optim.grad_clip = args.grad_clip if args.grad_clip > 0 else None
    if args.dilation is not None:
        blocks = len(cfg.network_config().dilations)
        cfg.model.dilations = list(_PROGRESSIVE[:blocks]) if args.dilation else [1] * blocks
    for term in ("ubs", "contrastive", "lpips"):
        on = getattr(args, term)
        if on is False:
            setattr(cfg.loss, term, 0.0)
        elif on and getattr(cfg.loss, term) == 0:
            setattr(cfg.loss, term, 0.1)
    cfg.validate()
    return cfg


def _saved_config(path: Path) -> TrainConfig | None:
    """The ``train_config`` stored in the training checkpoint ``path`` (``None`` if it has none)."""
    checkpoint, _ = load_training_state(path)
    saved = checkpoint.metadata.get("train_config")
    return TrainConfig.from_dict(saved, source=f"{path} (train_config)") if isinstance(saved, dict) else None


def run(args: argparse.Namespace) -> int:
    from sapnet.training.trainer import DivergedError, Trainer

    def err(message: str) -> None:
        print(f"sapnet {args.command}: error: {message}", file=sys.stderr)

    try:
        resume = None
        if args.resume is not None:
            resume = Path(args.resume) if args.resume else Path(config_from_args(args).run.out) / "last.pt"
        if resume is not None and args.config is None:
            cfg = config_from_args(args, base=_saved_config(resume))
            if args.out is None:
                cfg.run.out = str(resume.parent)
        else:
            cfg = config_from_args(args)
        if resume is not None and args.overwrite:
            raise ConfigError("--overwrite starts a new run; it cannot be combined with --resume")
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            trainer = Trainer(cfg, resume=resume, overwrite=args.overwrite, log=lambda m: print(m, file=sys.stderr))
        result = trainer.fit()
    except (ConfigError, DatasetError, CheckpointError, BackboneUnavailableError) as e:
        err(str(e))
        return 2
    except ImportError as e:
        err(f"{e} (a dependency of training is missing)")
        return 2
    except DivergedError as e:
        err(str(e))
        return 3
    if trainer.is_main:
        if result.best_real_score is not None:
            best = f"held-out score {result.best_real_score:.4f}"
        else:
            best = f"val PSNR {result.best_psnr:.3f} dB" if result.best_psnr is not None else "val PSNR n/a"
        print(f"done: step {result.step}, epoch {result.epoch}, best {best}")
        print(f"last: {result.last}")
        if result.best is not None:
            print(f"best: {result.best}")
    return 0
