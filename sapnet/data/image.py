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

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "FLOAT_RANGE_TOLERANCE",
    "IMAGE_EXTENSIONS",
    "ImageConversionWarning",
    "ImageReadError",
    "array_to_tensor",
    "check_float_range",
    "format_size",
    "pil_to_tensor",
    "read_image",
    "tensor_to_array",
    "tensor_to_pil",
    "to_rgb_channels",
    "write_image",
]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


FLOAT_RANGE_TOLERANCE = 0.01
"""How far above 1 a float image may reach (rounding, a slightly overshooting model) before it is taken as
being on the [0, 255] scale and refused."""


class ImageReadError(OSError):
    """A file that is missing, not an image, or an image that cannot be decoded."""


class ImageConversionWarning(UserWarning):
    """An input image was converted to RGB (grayscale replicated, alpha dropped, palette expanded).

    ``what`` names the image, ``found`` says what it is (``"is grayscale (1 channel)"``) and ``action`` what was
    done (``"replicated to 3 RGB channels"``); the message is ``"{what} {found}: {action}"``. Code that refuses
    such images instead (turning the warning into an error) should say ``f"{w.what} {w.found}"``, not the message.
    """

    def __init__(self, what: str, found: str, action: str) -> None:
        super().__init__(f"{what} {found}: {action}")
        self.what, self.found, self.action = what, found, action


def _warn(what: str, found: str, action: str) -> None:
    warnings.warn(ImageConversionWarning(what, found, action), stacklevel=3)


def format_size(x: torch.Tensor) -> str:
    """The size of an image (..., H, W) as messages give it, width first as in PIL: ``"481x321"``."""
    return f"{x.shape[-1]}x{x.shape[-2]}"


def to_rgb_channels(x: torch.Tensor, what: str = "image") -> torch.Tensor:
    """Make the channel dimension (dim -3) RGB: 1 channel is replicated, a 4th (alpha) channel is dropped,
    each with a warning. ``x``: (..., C, H, W) with C in {1, 3, 4}."""
    c = x.shape[-3]
    if c == 3:
        return x
    if c == 1:
        _warn(what, "is grayscale (1 channel)", "replicated to 3 RGB channels")
        return x.expand(*x.shape[:-3], 3, *x.shape[-2:])
    if c == 4:
        _warn(what, "has an alpha channel", "alpha dropped, RGB kept")
        return x[..., :3, :, :]
    raise ValueError(f"{what}: expected 1, 3 or 4 channels, got {c} (shape {tuple(x.shape)})")


def check_float_range(x: torch.Tensor | np.ndarray, what: str = "image") -> None:
    """Raise ``ValueError`` if the float image ``x`` reaches clearly above 1 (by more than
    :data:`FLOAT_RANGE_TOLERANCE`): it is then on the [0, 255] scale, where everything would clamp to white."""
    if (x.numel() if isinstance(x, torch.Tensor) else x.size) == 0:
        return
    peak = float(x.max())
    if peak > 1 + FLOAT_RANGE_TOLERANCE:
        raise ValueError(
            f"{what}: float images must be in [0, 1], got a maximum of {peak:g}. For values in [0, 255] pass a "
            "uint8 image (x.astype(np.uint8) / x.to(torch.uint8)) or divide by 255 (x / 255)."
        )


def array_to_tensor(array: np.ndarray, what: str = "array") -> torch.Tensor:
    """HxW, HxWx1, HxWx3 or HxWx4 array -> float32 tensor (3, H, W) in [0, 1].

    uint8 is divided by 255, uint16 by 65535; float arrays must be in [0, 1] already (``ValueError`` for a
    float array reaching clearly above 1, see :func:`check_float_range`).
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
        check_float_range(array, what)
    else:
        raise TypeError(f"{what}: unsupported dtype {array.dtype}; use uint8, uint16 or float in [0, 1]")
    t = torch.from_numpy(np.ascontiguousarray(array).astype(np.float32, copy=False)).permute(2, 0, 1)
    if scale != 1.0:
        t = t / scale
    return to_rgb_channels(t, what).contiguous()


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
    _warn(what, f"has mode {mode}", "converted to RGB")
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
