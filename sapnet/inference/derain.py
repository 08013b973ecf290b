"""``sapnet.derain``: derain images of any common kind with a derain network."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from sapnet.data.image import (
    array_to_tensor,
    check_float_range,
    pil_to_tensor,
    tensor_to_array,
    tensor_to_pil,
    to_rgb_channels,
)
from sapnet.deploy.backend import BACKENDS, Backend, is_onnx_file, onnx_derainer
from sapnet.inference.tiling import (
    DEFAULT_MEMORY_BUDGET,
    DEFAULT_TILE,
    DEFAULT_TILE_OVERLAP,
    activation_bytes,
    check_tiling,
    choose_tile,
    tiled_apply,
)
from sapnet.models import DEFAULT_MODEL, load_model

__all__ = ["derain", "network_width", "resolve_model"]

ImageLike = TypeVar("ImageLike", Image.Image, np.ndarray, torch.Tensor)


@dataclass
class _Item:
    """One image as a float32 (3, H, W) tensor in [0, 1] on the CPU, and how to give it back."""

    tensor: torch.Tensor
    restore: Callable[[torch.Tensor], Any]


def _from_input(image: Any, index: int | None) -> list[_Item]:
    where = "image" if index is None else f"image {index}"
    if isinstance(image, Image.Image):
        return [_Item(pil_to_tensor(image, where), tensor_to_pil)]
    if isinstance(image, np.ndarray):
        dtype = image.dtype
        return [_Item(array_to_tensor(image, where), lambda t: tensor_to_array(t, dtype))]
    if isinstance(image, torch.Tensor):
        if image.dim() not in (3, 4):
            raise ValueError(f"{where}: expected a tensor of shape (3, H, W) or (N, 3, H, W), got {tuple(image.shape)}")
        dtype, device = image.dtype, image.device
        if dtype == torch.uint8:
            x = image.float() / 255
        elif dtype.is_floating_point:
            x = image.float()
            check_float_range(x, where)
        else:
            raise TypeError(f"{where}: unsupported tensor dtype {dtype}; use float in [0, 1] or uint8")
        x = to_rgb_channels(x.detach().cpu(), where)

        def back(t: torch.Tensor) -> torch.Tensor:
            t = t.clamp(0, 1)
            if dtype == torch.uint8:
                return (t * 255).round().to(torch.uint8).to(device)
            return t.to(device=device, dtype=dtype)

        if x.dim() == 3:
            return [_Item(x.contiguous(), back)]
        return [_Item(xi.contiguous(), back) for xi in x]
    raise TypeError(
        f"{where}: unsupported type {type(image).__name__}; pass a PIL image, a HxWx3 uint8/uint16/float array, "
        "a float tensor (3, H, W) / (N, 3, H, W) in [0, 1], or a list of these"
    )


def resolve_model(model: torch.nn.Module | str | os.PathLike[str] | None) -> torch.nn.Module:
    """Turn ``derain``'s ``model`` argument into a module: a module is used as is, a registry name or a path is
    loaded with :func:`sapnet.load_model`, ``None`` means the default weights (:data:`sapnet.models.DEFAULT_MODEL`)."""
    if isinstance(model, torch.nn.Module):
        return model
    if model is None:
        return load_model(DEFAULT_MODEL)
    if isinstance(model, (str, os.PathLike)):
        return load_model(model)
    raise TypeError(
        f"model must be a torch.nn.Module, a registry name, a checkpoint path or None, got {type(model).__name__}"
    )


def network_width(model: torch.nn.Module) -> int:
    """Feature channels of ``model``, for :func:`~sapnet.inference.tiling.activation_bytes`: ``config.channels``
    of a :class:`~sapnet.models.DerainNet`, else the widest ``Conv2d`` output (32 when it has none)."""
    channels = getattr(getattr(model, "config", None), "channels", None)
    if isinstance(channels, int):
        return channels
    widths = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    return max(widths, default=32)


@torch.inference_mode()
def _run_all(
    images: list[torch.Tensor],
    forward: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    tiles: list[int],
    tile_overlap: int,
    batch_size: int,
    fits: Callable[[torch.Tensor, int], bool],
    progress: bool | None,
) -> list[torch.Tensor]:
    """Derain CPU float tensors (3, H, W): tiled where ``tiles[i]`` > 0, else whole, in batches of up to
    ``batch_size`` same-size neighbours for which ``fits(image, count)``."""
    outputs: list[torch.Tensor] = []
    quiet = True if len(images) < 2 else None if progress is None else not progress
    bar = tqdm(total=len(images), unit="image", leave=False, disable=quiet)
    i = 0
    while i < len(images):
        if tiles[i]:
            out = tiled_apply(forward, images[i][None], tiles[i], tile_overlap, device, batch_size, progress=progress)
            outputs.append(out[0])
            i += 1
            bar.update(1)
            continue
        j = i + 1
        while (
            j < len(images)
            and j - i < batch_size
            and not tiles[j]
            and images[j].shape == images[i].shape
            and fits(images[i], j - i + 1)
        ):
            j += 1
        outputs.extend(forward(torch.stack(images[i:j])).cpu().unbind(0))
        bar.update(j - i)
        i = j
    bar.close()
    return [out.clamp_(0, 1) for out in outputs]


def _model_device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def derain(
    images: Any,
    model: torch.nn.Module | str | os.PathLike[str] | None = None,
    *,
    device: torch.device | str | None = None,
    tile: int | None = None,
    tile_overlap: int = DEFAULT_TILE_OVERLAP,
    batch_size: int = 1,
    dtype: torch.dtype | None = None,
    memory_budget: int | None = None,
    progress: bool | None = False,
    backend: Backend = "torch",
) -> Any:
    """Derain one image or a list of images.

    Args:
        images: a PIL image; a HxWx3 ``uint8`` / ``uint16`` / float ``[0, 1]`` array; a float tensor (3, H, W)
            or (N, 3, H, W) in [0, 1] (``uint8`` tensors are scaled by 255); or a list of these, of any sizes.
            Grayscale (1 channel) and RGBA inputs are converted to RGB with a warning. A float input reaching
            clearly above 1 (e.g. ``np.asarray(img).astype(np.float32)``, on the [0, 255] scale) raises
            ``ValueError``: divide it by 255 or pass it as ``uint8``.
        model: a derain network (e.g. from :func:`sapnet.load_model`), a registry name (``"prenet.rain100h"``,
            see ``sapnet.list_models(pretrained=True)``), a checkpoint path, or ``None`` for the default weights
            (:data:`sapnet.models.DEFAULT_MODEL`, fetched like any registry weights). A module passed in is
            moved, in place, to ``device`` and to channels_last (faster on CPU and GPU; the values are unchanged)
            and set to eval mode.
        device: where the network runs (default: the model's device). Images stay on the CPU; only the
            batches or tiles being processed are moved.
        tile: ``None`` (default): each image whole when its estimated activation memory
            (:func:`~sapnet.inference.tiling.activation_bytes`, from H x W and the network's width) fits in
            ``memory_budget``, else in :data:`~sapnet.inference.tiling.DEFAULT_TILE` tiles (the same rule as
            ``sapnet derain`` and ``sapnet evaluate``); ``0``: always whole images; ``N``: N x N tiles. Tiles
            overlap by ``tile_overlap`` and are blended with linear ramps, so memory stays bounded for any
            image size.
        tile_overlap: pixels shared by neighbouring tiles.
        batch_size: images (same-size neighbours in the list) or tiles per forward pass; with ``tile=None``,
            whole images are batched only while the batch fits in ``memory_budget``.
        dtype: ``torch.bfloat16`` / ``torch.float16`` to run under autocast; ``None`` or ``torch.float32``
            for full precision.
        memory_budget: bytes of activation memory for ``tile=None``
            (default :data:`~sapnet.inference.tiling.DEFAULT_MEMORY_BUDGET`, 4 GiB: whole images up to about
            2.7 megapixels with a 32-channel network).
        progress: show progress bars (tqdm, on stderr, removed when done): the tiles of each tiled image,
            with an ETA, and the images of a list; ``None``: only when stderr is a terminal.
        backend: ``"torch"`` (default) or ``"onnxruntime"``: the network exported to ONNX (dynamic batch, height
            and width; once per weights, the session cached, see :func:`sapnet.deploy.onnx_derainer`) and run by
            ONNX Runtime with ``torch.get_num_threads()`` threads, on the CPU (``device="cuda"`` needs the
            onnxruntime-gpu build); ``model`` may then also be an ``.onnx`` file (from ``sapnet export``, float32
            or int8). Tiling, batching and every input kind work the same; ``dtype`` must stay float32. Needs
            ``pip install 'sapnet[deploy]'``.

    Returns:
        The same kind as ``images``, clamped to [0, 1]: PIL RGB images, HxWx3 arrays of the input dtype
        (integers rounded to nearest), or tensors of the input shape (3 channels), dtype and device; a list
        for a list.

    Examples:
        >>> import sapnet
        >>> model = sapnet.create_model("prenet", stages=2)  # random weights; e.g. "prenet.rain100h", pretrained=True
        >>> image = torch.rand(3, 24, 32)
        >>> out = sapnet.derain(image, model)
        >>> out.shape, out.dtype, bool(out.min() >= 0 and out.max() <= 1)
        (torch.Size([3, 24, 32]), torch.float32, True)
    """
    if tile is not None and tile < 0:
        raise ValueError(f"tile must be None (automatic), 0 (whole images) or a number of pixels, got {tile}")
    if tile:
        check_tiling(tile, tile_overlap)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    if is_onnx_file(model) and backend != "onnxruntime":
        raise ValueError(f"{model} is an ONNX model: run it with backend='onnxruntime'")
    is_list = isinstance(images, (list, tuple))
    inputs: Sequence[Any] = images if is_list else [images]
    items_per_input = [_from_input(im, i if is_list else None) for i, im in enumerate(inputs)]
    items = [item for group in items_per_input for item in group]

    forward: Callable[[torch.Tensor], torch.Tensor]
    if backend == "onnxruntime":
        if dtype not in (None, torch.float32):
            raise ValueError(f"backend='onnxruntime' runs float32 (or an int8 .onnx file), not dtype={dtype}")
        derainer = onnx_derainer(model if is_onnx_file(model) else resolve_model(model), device=device)
        run_device, forward, width = torch.device("cpu"), derainer, derainer.channels
    else:
        net = resolve_model(model)
        run_device = torch.device(device) if device is not None else _model_device(net)
        # Outside inference mode: the caller's parameters must stay normal tensors (usable for training later).
        net = net.to(run_device).to(memory_format=torch.channels_last).eval()
        autocast: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if dtype is not None and dtype != torch.float32:
            if dtype not in (torch.bfloat16, torch.float16):
                raise ValueError(f"dtype must be None, torch.float32, torch.bfloat16 or torch.float16, got {dtype}")
            autocast = torch.autocast(run_device.type, dtype=dtype)

        def forward(batch: torch.Tensor) -> torch.Tensor:
            with autocast:
                return net(batch.to(run_device).contiguous(memory_format=torch.channels_last)).float()

        width = network_width(net)

    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else memory_budget
    tensors = [item.tensor for item in items]
    if tile is None:
        tiles = [choose_tile(t.shape[-2], t.shape[-1], width, budget) for t in tensors]
        if any(tiles):
            check_tiling(DEFAULT_TILE, tile_overlap)
    else:
        tiles = [tile] * len(tensors)

    def fits(image: torch.Tensor, count: int) -> bool:
        return tile is not None or activation_bytes(image.shape[-2], image.shape[-1], width, count) <= budget

    outputs = _run_all(tensors, forward, run_device, tiles, tile_overlap, batch_size, fits, progress)
    # Back to the caller's kinds outside inference mode, so returned tensors are ordinary tensors.
    results: list[Any] = []
    pos = 0
    for original, group in zip(inputs, items_per_input, strict=True):
        outs = outputs[pos : pos + len(group)]
        pos += len(group)
        if isinstance(original, torch.Tensor) and original.dim() == 4:
            results.append(group[0].restore(torch.stack(outs)))
        else:
            results.append(group[0].restore(outs[0]))
    return results if is_list else results[0]
