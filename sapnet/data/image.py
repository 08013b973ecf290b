"""Image reading, writing and conversion between PIL / NumPy / torch.

The package works on float32 RGB tensors in [0, 1], shape (3, H, W) or (N, 3, H, W). Conversions here are
explicit about what they change: grayscale is replicated to three channels and alpha is dropped, each with
a :class:`ImageConversionWarning`; 8-bit values are divided by 255 and 16-bit values by 65535.
"""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from sapnet.files import atomic_write

__all__ = [
    "FLOAT_RANGE_TOLERANCE",
    "IMAGE_EXTENSIONS",
    "ImageConversionWarning",
    "ImageMeta",
    "ImageReadError",
    "array_to_tensor",
    "check_float_range",
    "fit_max_side",
    "format_size",
    "pil_to_tensor",
    "quantize_8bit",
    "read_image",
    "read_image_with_meta",
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


def fit_max_side(x: torch.Tensor, max_side: int | None) -> torch.Tensor:
    """``x`` (C, H, W) or (N, C, H, W), float, downscaled so that its longer side is at most ``max_side`` (aspect
    kept, sides rounded, antialiased bilinear, values clamped to ``x``'s range [0, 1]); ``x`` itself when it fits
    or ``max_side`` is ``None``.

    Examples:
        >>> fit_max_side(torch.rand(3, 300, 400), 200).shape
        torch.Size([3, 150, 200])
    """
    h, w = x.shape[-2:]
    if max_side is None or max(h, w) <= max_side:
        return x
    scale = max_side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    batch = x if x.ndim == 4 else x[None]
    out = F.interpolate(batch, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return out if x.ndim == 4 else out[0]


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


@dataclass(frozen=True)
class ImageMeta:
    """What an image file holds besides its pixels, for writing a result like it.

    Attributes:
        bits: bits per channel of the file's samples: 16 for 16-bit PNGs (RGB, RGBA or grayscale) and other
            16-bit grayscale files, else 8.
        icc_profile: the embedded ICC colour profile, as stored (``None``: none).
        exif: the EXIF block (``Exif\\0\\0`` header and TIFF data) without its orientation tag, since the
            pixels read are upright (``None``: none).
    """

    bits: int = 8
    icc_profile: bytes | None = None
    exif: bytes | None = None


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_RGB_TYPES = (2, 6)  # IHDR colour types RGB and RGBA (16-bit gray is read by Pillow itself)
_ORIENTATION = 0x0112


def _is_png16_rgb(path: Path) -> bool:
    """Whether ``path`` is a PNG of 16-bit RGB or RGBA samples (bit depth and colour type from its IHDR chunk),
    which Pillow decodes to 8 bits only."""
    with path.open("rb") as f:
        head = f.read(26)
    return head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR" and head[24] == 16 and head[25] in _PNG_RGB_TYPES


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as e:
        raise ImportError("16-bit RGB PNGs are read and written with OpenCV: pip install opencv-python-headless") from e
    return cv2


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """(H, W, C) turned upright as EXIF ``orientation`` (1..8) says, as ``ImageOps.exif_transpose`` does."""
    turns = {
        2: lambda v: v[:, ::-1],
        3: lambda v: v[::-1, ::-1],
        4: lambda v: v[::-1],
        5: lambda v: v.transpose(1, 0, 2),
        6: lambda v: np.rot90(v, 3),
        7: lambda v: v.transpose(1, 0, 2)[::-1, ::-1],
        8: lambda v: np.rot90(v, 1),
    }
    return np.ascontiguousarray(turns[orientation](a)) if orientation in turns else a


def _read_png16_rgb(path: Path, orientation: int) -> np.ndarray:
    """The upright 16-bit samples (H, W, 3 or 4) uint16, RGB(A) order, of a 16-bit RGB(A) PNG (OpenCV decodes
    them at full depth; IMREAD_UNCHANGED leaves the EXIF orientation to us)."""
    cv2 = _cv2()
    bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if bgr is None or bgr.dtype != np.uint16 or bgr.ndim != 3:
        raise ImageReadError(f"{path}: cannot decode the 16-bit PNG")
    rgb = bgr[..., [2, 1, 0, 3][: bgr.shape[2]]]
    return _orient(rgb, orientation)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _encode_png16(rgb: np.ndarray, icc_profile: bytes | None, exif: bytes | None) -> bytes:
    """A 16-bit RGB PNG of (H, W, 3) uint16 (Pillow writes RGB at 8 bits only: OpenCV encodes it), with an iCCP
    and an eXIf chunk after IHDR when given."""
    ok, encoded = _cv2().imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise OSError("OpenCV could not encode the 16-bit PNG")
    data = encoded.tobytes()
    extra = b""
    if icc_profile:
        extra += _png_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc_profile))
    if exif:
        extra += _png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif)
    ihdr_end = len(_PNG_SIGNATURE) + 25  # length, type, 13 bytes of header, CRC
    return data[:ihdr_end] + extra + data[ihdr_end:]


def _exif_bytes(im: Image.Image) -> bytes | None:
    try:
        exif = im.getexif()
        exif.pop(_ORIENTATION, None)
        return exif.tobytes() if len(exif) else None
    except Exception:  # an EXIF block Pillow cannot re-encode is dropped, not a reason to fail the image
        return None


def read_image_with_meta(path: str | os.PathLike[str]) -> tuple[torch.Tensor, ImageMeta]:
    """Read an image file into a float32 tensor (3, H, W) in [0, 1], and its :class:`ImageMeta`.

    8-bit files are divided by 255 and 16-bit ones (PNG RGB / RGBA / grayscale, 16-bit grayscale of other
    formats) by 65535, at full precision. Grayscale and RGBA are converted to RGB with a warning. An EXIF
    orientation tag is applied, so the tensor is upright as image viewers show it.

    Raises:
        ImageReadError: missing file, directory, not an image, or a truncated / corrupt image.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a directory, not an image")
    try:
        png16 = _is_png16_rgb(path)
        with Image.open(path) as im:
            if png16:  # OpenCV decodes the pixels; Pillow only reads the metadata (and the 8-bit pixels are not)
                orientation = im.getexif().get(_ORIENTATION, 1)  # before _exif_bytes drops the tag
                meta = ImageMeta(16, im.info.get("icc_profile") or None, _exif_bytes(im))
                return array_to_tensor(_read_png16_rgb(path, orientation), str(path)), meta
            im.load()
            upright = ImageOps.exif_transpose(im)
            bits = 16 if im.mode in _SIXTEEN_BIT_MODES else 8
            meta = ImageMeta(bits, im.info.get("icc_profile") or None, _exif_bytes(upright))
            return pil_to_tensor(upright, what=str(path)), meta
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file (Pillow cannot identify it)") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{path}: {e}") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: cannot decode image ({e})") from e


def read_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an image file into a float32 tensor (3, H, W) in [0, 1]: :func:`read_image_with_meta` without the
    metadata (16-bit files at full precision, upright, grayscale and RGBA converted to RGB with a warning).

    Raises:
        ImageReadError: missing file, directory, not an image, or a truncated / corrupt image.
    """
    return read_image_with_meta(path)[0]


def write_image(x: torch.Tensor, path: str | os.PathLike[str], meta: ImageMeta | None = None) -> Path:
    """Write a float tensor (3, H, W) in [0, 1] as an image (lossless when ``path`` ends in .png).

    Values are clamped and rounded to nearest, to 8 bits per channel, or to 16 when ``meta.bits`` is 16 (PNG
    only). ``meta``'s ICC profile and EXIF, when given, are embedded (in formats that hold them: PNG, JPEG,
    WebP, TIFF). The write is atomic (temporary file, then rename).
    """
    path = Path(path)
    if x.dim() != 3 or x.shape[0] != 3:
        raise ValueError(f"write_image expects a (3, H, W) tensor, got {tuple(x.shape)}")
    meta = meta or ImageMeta()
    if meta.bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {meta.bits}")
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    if meta.bits == 16 and fmt != "PNG":
        raise ValueError(f"{path}: 16-bit output is written as PNG only, not {fmt}")
    extra = {k: v for k, v in (("icc_profile", meta.icc_profile), ("exif", meta.exif)) if v}
    with atomic_write(path) as tmp:
        if meta.bits == 16:
            tmp.write_bytes(_encode_png16(tensor_to_array(x, np.uint16), meta.icc_profile, meta.exif))
        else:
            tensor_to_pil(x).save(tmp, format=fmt, **extra)
    return path
