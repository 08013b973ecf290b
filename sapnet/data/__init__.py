"""Data: image I/O and conversions, test-set readers, the benchmark registry and rain synthesis."""

from sapnet.data.builder import BuildError, BuildReport, build_rain_set
from sapnet.data.datasets import (
    LAYOUTS,
    DatasetError,
    DatasetNotFoundError,
    DatasetWarning,
    ImagePair,
    LayoutNotFoundError,
    PairedImageDataset,
    UnpairedImageDataset,
    detect_layout,
    find_images,
    find_pairs,
    natural_sort_key,
)
from sapnet.data.download import DATASETS, DownloadError, DownloadInfo, download
from sapnet.data.embedded import demo_dataset
from sapnet.data.image import (
    IMAGE_EXTENSIONS,
    ImageConversionWarning,
    ImageReadError,
    array_to_tensor,
    pil_to_tensor,
    quantize_8bit,
    read_image,
    tensor_to_array,
    tensor_to_pil,
    write_image,
)
from sapnet.data.registry import BENCHMARKS, BenchmarkInfo, check_benchmark, get_benchmark
from sapnet.data.synthesis import RAIN_PRESETS, RainParams, RainSynthesizer, synthesize_rain

__all__ = [
    "BENCHMARKS",
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "LAYOUTS",
    "RAIN_PRESETS",
    "BenchmarkInfo",
    "BuildError",
    "BuildReport",
    "DatasetError",
    "DatasetNotFoundError",
    "DatasetWarning",
    "DownloadError",
    "DownloadInfo",
    "ImageConversionWarning",
    "ImagePair",
    "ImageReadError",
    "LayoutNotFoundError",
    "PairedImageDataset",
    "RainParams",
    "RainSynthesizer",
    "UnpairedImageDataset",
    "array_to_tensor",
    "build_rain_set",
    "check_benchmark",
    "demo_dataset",
    "detect_layout",
    "download",
    "find_images",
    "find_pairs",
    "get_benchmark",
    "natural_sort_key",
    "pil_to_tensor",
    "quantize_8bit",
    "read_image",
    "synthesize_rain",
    "tensor_to_array",
    "tensor_to_pil",
    "write_image",
]
