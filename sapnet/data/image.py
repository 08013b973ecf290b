"""Image reading, writing and conversion between PIL / NumPy / torch.

The package works on float32 RGB tensors in [0, 1], shape (3, H, W) or (N, 3, H, W). Conversions here are
explicit about what they change: grayscale is replicated to three channels and alpha is dropped, each with
a :class:`ImageConversionWarning`; 8-bit values are divided by 255 and 16-bit values by 65535.
"""

from __future__ import annotations

import os
import struct
import tempfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "FLOAT_RANGE_TOLERANCE",
    "IMAGE_EXTENSIONS",
    "ImageConversionWarning",
    "ImageMeta",
    "ImageReadError",
    "array_to_tensor",
    "check_float_range",
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


_PNG_16_BIT_RGB = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L"}  # Pillow raw mode -> the one of the low bytes
_ORIENTATION = 0x0112


def _raw_mode(im: Image.Image) -> str | None:
    tile = getattr(im, "tile", None)
    if not tile:
        return None
    args = tile[0].args
    return args if isinstance(args, str) else args[0] if isinstance(args, tuple) and args else None


def _png16_rgb(path: Path, raw_mode: str, high: Image.Image) -> np.ndarray:
    """The 16-bit samples (H, W, C) uint16 of a 16-bit RGB(A) PNG, upright. Pillow decodes such files to their
    high bytes (``high``, already upright); decoding them once more with the little-endian raw mode, which
    reads the other byte of each sample, gives the low bytes."""
    with Image.open(path) as im:
        tile = im.tile[0]
        low_mode = _PNG_16_BIT_RGB[raw_mode]
        args = tile.args
        im.tile = [tile._replace(args=(low_mode, *args[1:]) if isinstance(args, tuple) else low_mode)]
        im.load()
        low = np.asarray(ImageOps.exif_transpose(im))
    return (np.asarray(high).astype(np.uint16) << 8) | low


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
        with Image.open(path) as im:
            raw_mode = _raw_mode(im) if im.format == "PNG" else None
            im.load()
            upright = ImageOps.exif_transpose(im)
            bits = 16 if raw_mode in _PNG_16_BIT_RGB or im.mode in _SIXTEEN_BIT_MODES else 8
            meta = ImageMeta(bits, im.info.get("icc_profile") or None, _exif_bytes(upright))
            if raw_mode in _PNG_16_BIT_RGB:
                return array_to_tensor(_png16_rgb(path, raw_mode, upright), str(path)), meta
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


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _paeth_rows(x: np.ndarray, previous: np.ndarray, bpp: int) -> np.ndarray:
    """PNG Paeth filter of the scanlines ``x`` (rows, bytes) int16 whose preceding scanline is ``previous``."""
    up = np.concatenate((previous[None], x[:-1]))
    left = np.zeros_like(x)
    left[:, bpp:] = x[:, :-bpp]
    up_left = np.zeros_like(x)
    up_left[:, bpp:] = up[:, :-bpp]
    p = left + up - up_left
    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - up_left)
    predictor = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
    rows = np.empty((x.shape[0], 1 + x.shape[1]), dtype=np.uint8)
    rows[:, 0] = 4  # filter type: Paeth
    rows[:, 1:] = (x - predictor) % 256
    return rows


def _write_png16(f: IO[bytes], rgb: np.ndarray, icc_profile: bytes | None, exif: bytes | None) -> None:
    """Write an (H, W, 3) uint16 array as a 16-bit RGB PNG (Pillow writes RGB at 8 bits only): Paeth-filtered
    scanlines, compressed a block of rows at a time, with an iCCP and an eXIf chunk when given."""
    h, w, _ = rgb.shape
    data = np.ascontiguousarray(rgb, dtype=">u2").view(np.uint8).reshape(h, w * 6)
    chunks = [_png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))]
    if icc_profile:
        chunks.append(_png_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc_profile)))
    if exif:
        chunks.append(_png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif))
    z = zlib.compressobj(6)
    compressed = []
    previous = np.zeros(w * 6, dtype=np.int16)
    for start in range(0, h, 256):
        block = data[start : start + 256].astype(np.int16)
        compressed.append(z.compress(_paeth_rows(block, previous, 6).tobytes()))
        previous = block[-1]
    compressed.append(z.flush())
    chunks += [_png_chunk(b"IDAT", b"".join(compressed)), _png_chunk(b"IEND", b"")]
    f.write(b"\x89PNG\r\n\x1a\n" + b"".join(chunks))


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            if meta.bits == 16:
                _write_png16(f, tensor_to_array(x, np.uint16), meta.icc_profile, meta.exif)
            else:
                tensor_to_pil(x).save(f, format=fmt, **extra)
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)  # mkstemp made it 0600; give it the mode open() would have
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
