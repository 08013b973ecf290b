"""Data: image I/O and conversions."""

from sapnet.data.image import (
    IMAGE_EXTENSIONS,
    ImageConversionWarning,
    ImageReadError,
    array_to_tensor,
    pil_to_tensor,
    read_image,
    tensor_to_array,
    tensor_to_pil,
    write_image,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageConversionWarning",
    "ImageReadError",
    "array_to_tensor",
    "pil_to_tensor",
    "read_image",
    "tensor_to_array",
    "tensor_to_pil",
    "write_image",
]
