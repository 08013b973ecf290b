"""What a run is set up on before its loop starts: the device and the training / validation data."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from sapnet.data import PairedImageDataset, demo_dataset
from sapnet.training.config import ConfigError, TrainConfig
from sapnet.training.data import PatchDataset, ResumableSampler, SyntheticRainPatches

__all__ = ["TrainData", "build_train_data", "pick_device"]


def pick_device(name: str | None, local_rank: int = 0) -> torch.device:
    """The device ``run.device`` names (``None``: CUDA if available, else the CPU); a bare ``"cuda"`` is the
    process's ``local_rank`` GPU, which becomes the current CUDA device.

    Raises:
        ConfigError: an invalid name, or CUDA asked for where there is none.
    """
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"run.device: {e}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"run.device={name!r} but CUDA is not available; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def _worker_init(worker_id: int) -> None:
    """Seed NumPy and ``random`` in a DataLoader worker from its torch seed (the crops themselves use
    per-item generators and need none of this)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002 (libraries may use the legacy global generator)
    random.seed(seed)


@dataclass
class TrainData:
    """A process's training patches (its shard, ``steps_per_epoch`` batches of ``data.batch_size`` per epoch)
    and the whole validation images (``val`` ``None`` without a validation folder)."""

    train: PatchDataset | SyntheticRainPatches
    val: PairedImageDataset | None
    sampler: ResumableSampler
    loader: DataLoader[tuple[torch.Tensor, torch.Tensor]]
    steps_per_epoch: int


def build_train_data(
    config: TrainConfig,
    world: int,
    rank: int,
    device: torch.device,
    info: Callable[[str], None],
    barrier: Callable[[], None],
) -> TrainData:
    """The data of ``config`` for process ``rank`` of ``world`` (rain rendered on ``data.clean``'s photos when that
    is set, else ``data.train``'s pairs; the demo set when both are ``None``;
    rank 0 builds it while the others wait at ``barrier``). ``info`` receives what is used.

    Raises:
        ConfigError: fewer training pairs than one batch per process.
        sapnet.data.DatasetError: unusable folders or too-small images.
    """
    d, r = config.data, config.run
    train, val = d.train, d.val
    train_set: PatchDataset | SyntheticRainPatches
    if d.clean is not None:
        train_set = SyntheticRainPatches(
            d.clean, d.patch, d.rain_presets, samples_per_epoch=d.samples_per_epoch, hflip=d.hflip, vflip=d.vflip,
            seed=r.seed,
        )  # fmt: skip
        train = f"{d.clean} (rain rendered on the fly: {', '.join(d.rain_presets)})"
    elif train is None:
        if rank == 0:
            root = demo_dataset()
        barrier()
        root = demo_dataset()
        train = str(root / "train")
        val = val if val is not None else str(root / "test")
        info(
            f"note: no training data given (--data): using the small embedded demo set in {root} "
            "(synthetic rain on procedural images, 24 train / 8 val pairs). It is NOT Rain100H; results are "
            "not comparable with published ones."
        )
    if d.clean is None:
        train_set = PatchDataset(train, d.patch, hflip=d.hflip, vflip=d.vflip, seed=r.seed, layout=d.layout)
    val_set = PairedImageDataset(val, layout=d.layout) if val is not None else None
    sampler = ResumableSampler(train_set, num_replicas=world, rank=rank, seed=r.seed)
    steps_per_epoch = sampler.num_samples // d.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(
            f"{train}: {len(train_set)} training pairs give less than one batch of {d.batch_size} "
            f"per process ({world} process(es)); lower --batch-size or add data"
        )
    workers = d.loader_workers()
    loader = DataLoader(
        train_set,
        batch_size=d.batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        worker_init_fn=_worker_init if workers else None,
        generator=torch.Generator().manual_seed(r.seed),
        persistent_workers=False,
    )
    info(
        f"training on {len(train_set)} pairs from {train} ({steps_per_epoch} steps/epoch, "
        f"batch {d.batch_size} x {world} process(es)); validation: {val or 'none'}"
    )
    return TrainData(train_set, val_set, sampler, loader, steps_per_epoch)
