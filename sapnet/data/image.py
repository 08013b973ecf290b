"""Image reading, writing and conversion between PIL / NumPy / torch.

The package works on float32 RGB tensors in [0, 1], shape (3, H, W) or (N, 3, H, W). Conversions here are
explicit about what they change: grayscale is replicated to three channels and alpha is dropped, each with
a :class:`ImageConversionWarning`; 8-bit values are divided by 255 and 16-bit values by 65535.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageConversionWarning",
    "ImageReadError",
    "array_to_tensor",
    "pil_to_tensor",
    "quantize_8bit",
    "read_image",
    "tensor_to_array",
    "tensor_to_pil",
    "to_rgb_channels",
    "write_image",
]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


class ImageReadError(OSError):
    """A file that is missing, not an image, or an image that cannot be decoded."""


class ImageConversionWarning(UserWarning):
    """An input image was converted to RGB (grayscale replicated, alpha dropped, palette expanded)."""


def _warn(message: str) -> None:
    warnings.warn(message, ImageConversionWarning, stacklevel=3)


def to_rgb_channels(x: torch.Tensor, what: str = "image") -> torch.Tensor:
    """Make the channel dimension (dim -3) RGB: 1 channel is replicated, a 4th (alpha) channel is dropped,
    each with a warning. ``x``: (..., C, H, W) with C in {1, 3, 4}."""
    c = x.shape[-3]
    if c == 3:
        return x
    if c == 1:
        _warn(f"{what} is grayscale: replicated to 3 RGB channels")
        return x.expand(*x.shape[:-3], 3, *x.shape[-2:])
    if c == 4:
        _warn(f"{what} has an alpha channel: dropped, RGB kept")
        return x[..., :3, :, :]
    raise ValueError(f"{what}: expected 1, 3 or 4 channels, got {c} (shape {tuple(x.shape)})")


def array_to_tensor(array: np.ndarray, what: str = "array") -> torch.Tensor:
    """HxW, HxWx1, HxWx3 or HxWx4 array -> float32 tensor (3, H, W) in [0, 1].

    uint8 is divided by 255, uint16 by 65535; float arrays are taken as [0, 1] already.
    """
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"{what}: expected an HxW or HxWxC image array, got shape {array.shape}")
    if array.dtype == np.uint8:
        scale = 255.0
    elif array.dtype == np.uint16:
        scale = 65535.0
    elif np.issubdtype(array.dtype, np.floating):
        scale = 1.0
    else:
        raise TypeError(f"{what}: unsupported dtype {array.dtype}; use uint8, uint16 or float in [0, 1]")
    t = torch.from_numpy(np.ascontiguousarray(array).astype(np.float32, copy=False)).permute(2, 0, 1)
    if scale != 1.0:
        t = t / scale
    return to_rgb_channels(t, what).contiguous()


def quantize_8bit(x: torch.Tensor, mode: Literal["floor", "round"]) -> torch.Tensor:
    """``x`` on the 8-bit grid: ``k / 255`` with ``k = floor(255 * clamp(x, 0, 1))`` (``"floor"``, truncation, as
    ``np.uint8(255 * x)`` casts) or ``k = round(255 * clamp(x, 0, 1))`` (``"round"``, to nearest with ties to even,
    what :func:`write_image` stores).

    ``x``: floating tensor of any shape, values in [0, 1] (others are clamped; NaN stays NaN). The result has
    ``x``'s shape, dtype and device, and ``255 * x`` is evaluated in ``x``'s dtype. Not differentiable (zero
    gradient almost everywhere). Every caller states at the call why it truncates or rounds.
    """
    scaled = x.clamp(0, 1) * 255
    if mode == "floor":
        return torch.floor(scaled) / 255
    if mode == "round":
        return torch.round(scaled) / 255
    raise ValueError(f"mode must be 'floor' or 'round', got {mode!r}")


def tensor_to_array(x: torch.Tensor, dtype: np.dtype | type = np.uint8) -> np.ndarray:
    """Float tensor (3, H, W) in [0, 1] -> HxWx3 array of ``dtype`` (uint8, uint16 rounded to nearest, or
    float). Values are clamped to [0, 1] first."""
    x = x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu()
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return (x * 255).round().to(torch.uint8).numpy()
    if dtype == np.uint16:
        return (x * 65535).round().numpy().astype(np.uint16)
    if np.issubdtype(dtype, np.floating):
        return x.numpy().astype(dtype)
    raise TypeError(f"unsupported output dtype {dtype}")


_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


def pil_to_tensor(image: Image.Image, what: str = "PIL image") -> torch.Tensor:
    """PIL image of any mode -> float32 tensor (3, H, W) in [0, 1].

    RGB is exact; 16-bit grayscale (``I;16``) is divided by 65535; other modes (L, LA, P, RGBA, CMYK, ...)
    are converted to RGB, with a warning for those that lose or invent information.
    """
    mode = image.mode
    if mode == "RGB":
        return array_to_tensor(np.asarray(image), what)
    if mode in _SIXTEEN_BIT_MODES:
        a = np.asarray(image).astype(np.float32)
        if mode == "I" and a.max(initial=0) > 65535:
            raise ValueError(f"{what}: 32-bit integer image with values above 65535 is not supported")
        return array_to_tensor(a / 65535.0, what)
    if mode == "F":
        return array_to_tensor(np.asarray(image, dtype=np.float32), what)
    if mode in ("L", "1"):
        return array_to_tensor(np.asarray(image.convert("L")), what)
    if mode in ("LA", "La", "RGBA", "RGBa", "PA"):
        return array_to_tensor(np.asarray(image.convert("RGBA")), what)
    if mode == "P":
        converted = image.convert("RGBA" if "transparency" in image.info else "RGB")
        return array_to_tensor(np.asarray(converted), what)
    _warn(f"{what} has mode {mode}: converted to RGB")
    return array_to_tensor(np.asarray(image.convert("RGB")), what)


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """Float tensor (3, H, W) in [0, 1] -> 8-bit RGB PIL image (rounded to nearest)."""
    return Image.fromarray(tensor_to_array(x, np.uint8), mode="RGB")


def read_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an image file into a float32 tensor (3, H, W) in [0, 1].

    8-bit and 16-bit grayscale files are scaled by their bit depth (16-bit RGB PNGs are decoded by Pillow
    to 8 bits per channel). Grayscale and RGBA are converted to RGB with a warning. An EXIF orientation tag
    is applied, so the tensor is upright as image viewers show it.

    Raises:
        ImageReadError: missing file, directory, not an image, or a truncated / corrupt image.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a directory, not an image")
    try:
        with Image.open(path) as im:
            im.load()
            return pil_to_tensor(ImageOps.exif_transpose(im), what=str(path))
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file (Pillow cannot identify it)") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{path}: {e}") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: cannot decode image ({e})") from e


def write_image(x: torch.Tensor, path: str | os.PathLike[str]) -> Path:
    """Write a float tensor (3, H, W) in [0, 1] as an 8-bit image (lossless when ``path`` ends in .png).

    Values are clamped and rounded to nearest. The write is atomic (temporary file, then rename).
    """
    path = Path(path)
    if x.dim() != 3 or x.shape[0] != 3:
        raise ValueError(f"write_image expects a (3, H, W) tensor, got {tuple(x.shape)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            tensor_to_pil(x).save(f, format=fmt)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
