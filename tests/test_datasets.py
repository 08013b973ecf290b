"""Test-set readers (sapnet.data.datasets) and the benchmark registry (sapnet.data.registry)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from sapnet.data import (
    BENCHMARKS,
    DATASETS,
    LAYOUTS,
    BenchmarkInfo,
    DatasetError,
    DatasetNotFoundError,
    DatasetWarning,
    ImageConversionWarning,
    ImagePair,
    ImageReadError,
    LayoutNotFoundError,
    PairedImageDataset,
    UnpairedImageDataset,
    check_benchmark,
    detect_layout,
    find_images,
    find_pairs,
    get_benchmark,
    natural_sort_key,
    read_image,
)
from sapnet.data.image import format_size
from sapnet.data.registry import get_download, normalise_name

W, H = 8, 6


def _img(path: Path, value: int, size: tuple[int, int] = (W, H), mode: str = "RGB") -> Path:
    """Write a flat image of gray level ``value`` (any format PIL infers from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode in ("L", "I;16") else (value,) * len(mode)
    Image.new(mode, size, color).save(path)
    return path


def _rainy_value(k: int) -> int:
    return 3 * k


def _clean_value(k: int) -> int:
    return 3 * k + 100


def _level(x: torch.Tensor) -> int:
    return round(x[0, 0, 0].item() * 255)


# case id -> (layout, builder(root, k) -> (rainy path, clean path, expected pair name))
Builder = Callable[[Path, int], tuple[Path, Path, str]]
LAYOUT_CASES: dict[str, tuple[str, Builder]] = {
    "prenet": ("prenet", lambda r, k: (r / "rainy" / f"rain-{k:03d}.png", r / f"norain-{k:03d}.png", f"{k:03d}")),
    "prenet-norain-folder": (
        "prenet",
        lambda r, k: (r / "rainy" / f"rain-{k:03d}.png", r / "norain" / f"norain-{k:03d}.png", f"{k:03d}"),
    ),
    "prenet-unpadded": ("prenet", lambda r, k: (r / "rainy" / f"rain-{k}.png", r / f"norain-{k}.png", f"{k}")),
    "prenet-mixed-padding": ("prenet", lambda r, k: (r / "rainy" / f"rain-{k}.png", r / f"norain-{k:03d}.png", f"{k}")),
    "input_target": ("input_target", lambda r, k: (r / "input" / f"{k}.png", r / "target" / f"{k}.png", f"{k}")),
    "rain_clean": ("rain_clean", lambda r, k: (r / "rain" / f"{k:03d}.png", r / "clean" / f"{k:03d}.png", f"{k:03d}")),
    "rain_clean-jpg-vs-png": (
        "rain_clean",
        lambda r, k: (r / "rain" / f"img{k}.jpg", r / "clean" / f"img{k}.png", f"img{k}"),
    ),
    "rain_norain": ("rain_norain", lambda r, k: (r / "rain" / f"{k}.png", r / "norain" / f"{k}.png", f"{k}")),
    "rainy_gt": ("rainy_gt", lambda r, k: (r / "rainy" / f"{k}.png", r / "gt" / f"{k}.png", f"{k}")),
    "data_gt": ("data_gt", lambda r, k: (r / "data" / f"{k}.png", r / "gt" / f"{k}.png", f"{k}")),
    "rainy_clean": ("rainy_clean", lambda r, k: (r / "rainy" / f"{k}.png", r / "clean" / f"{k}.png", f"{k}")),
    "input_gt": ("input_gt", lambda r, k: (r / "input" / f"{k}.bmp", r / "gt" / f"{k}.png", f"{k}")),
    "upper-case-folders": ("rainy_gt", lambda r, k: (r / "Rainy" / f"{k}.png", r / "GT" / f"{k}.png", f"{k}")),
    "rain12": ("rain12", lambda r, k: (r / f"{k:03d}_in.png", r / f"{k:03d}_GT.png", f"{k:03d}")),
    "rain12-lower-case": ("rain12", lambda r, k: (r / f"{k}_IN.png", r / f"{k}_gt.png", f"{k}")),
}


def _build(root: Path, builder: Builder, keys: tuple[int, ...] = (10, 2, 1)) -> list[str]:
    """Write the pairs for ``keys`` (out of order on purpose); returns the expected names, in order."""
    expected = {}
    for k in keys:
        rainy, clean, name = builder(root, k)
        _img(rainy, _rainy_value(k))
        _img(clean, _clean_value(k))
        expected[k] = name
    return [expected[k] for k in sorted(keys)]


# --- paired layouts ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(LAYOUT_CASES))
def test_layout_detected_and_paired_by_name(tmp_path: Path, case: str) -> None:
    layout, builder = LAYOUT_CASES[case]
    expected_names = _build(tmp_path, builder)

    assert detect_layout(tmp_path) == layout
    pairs = find_pairs(tmp_path)
    assert [p.name for p in pairs] == expected_names  # natural order: 1, 2, 10
    assert all(isinstance(p, ImagePair) and p.rainy.is_file() and p.clean.is_file() for p in pairs)

    ds = PairedImageDataset(tmp_path)
    assert ds.layout == layout and len(ds) == 3 and ds.names == expected_names
    for k, i in zip((1, 2, 10), range(3), strict=True):
        sample = ds[i]
        assert set(sample) == {"rainy", "clean", "name"}
        assert sample["name"] == expected_names[i]
        assert sample["rainy"].shape == sample["clean"].shape == (3, H, W)
        assert sample["rainy"].dtype == torch.float32
        # each rainy image is paired with the clean image of the same key (JPEG may move a flat level by 1-2)
        assert abs(_level(sample["rainy"]) - _rainy_value(k)) <= 2
        assert abs(_level(sample["clean"]) - _clean_value(k)) <= 2


def test_layouts_table_lists_every_layout() -> None:
    assert {layout for layout, _ in LAYOUT_CASES.values()} == set(LAYOUTS)
    assert all(isinstance(desc, str) and desc for desc in LAYOUTS.values())


def test_natural_sort(tmp_path: Path) -> None:
    stems = ["img10", "img2", "img1", "img11", "Img3", "img20"]
    for i, stem in enumerate(stems):
        _img(tmp_path / "rain" / f"{stem}.png", i)
        _img(tmp_path / "clean" / f"{stem}.png", i)
    assert [p.name for p in find_pairs(tmp_path)] == ["img1", "img2", "Img3", "img10", "img11", "img20"]
    assert sorted(["a10b2", "a2b10", "a2b9"], key=natural_sort_key) == ["a2b9", "a2b10", "a10b2"]


def test_pairs_by_name_not_position(tmp_path: Path) -> None:
    # Same count on both sides and sorted orders that would line up by position: still refused.
    for k in (1, 2, 3):
        _img(tmp_path / "rain" / f"{k}.png", k)
    for k in (1, 2, 4):
        _img(tmp_path / "clean" / f"{k}.png", k)
    with pytest.raises(DatasetError, match=r"never by position") as err:
        find_pairs(tmp_path)
    assert not isinstance(err.value, LayoutNotFoundError)  # a fallback to an unpaired reading must not hide it
    message = str(err.value)
    assert "rain/3.png" in message and "clean/4.png" in message
    assert "rain/1.png" not in message


def test_unmatched_names_are_truncated_with_a_count(tmp_path: Path) -> None:
    _img(tmp_path / "input" / "0.png", 0)
    _img(tmp_path / "target" / "0.png", 0)
    for k in range(1, 16):
        _img(tmp_path / "input" / f"{k}.png", k)
    with pytest.raises(DatasetError) as err:
        find_pairs(tmp_path)
    message = str(err.value)
    assert "15 rainy images without a clean one" in message
    assert "input/1.png" in message and "input/10.png" in message and "input/11.png" not in message
    assert "and 5 more; 15 in all" in message


def test_prenet_unparseable_rainy_name_is_reported(tmp_path: Path) -> None:
    _img(tmp_path / "rainy" / "rain-001.png", 1)
    _img(tmp_path / "rainy" / "photo.png", 1)
    _img(tmp_path / "norain-001.png", 1)
    with pytest.raises(DatasetError, match=r"rainy/photo\.png"):
        find_pairs(tmp_path)


def test_duplicate_stems_refused(tmp_path: Path) -> None:
    _img(tmp_path / "rain" / "1.png", 1)
    _img(tmp_path / "rain" / "1.jpg", 1)
    _img(tmp_path / "clean" / "1.png", 1)
    with pytest.raises(DatasetError, match=r"rain/1\.(jpg|png) and rain/1\.(jpg|png)"):
        find_pairs(tmp_path)


def test_rain12_stray_image_reported(tmp_path: Path) -> None:
    _img(tmp_path / "001_in.png", 1)
    _img(tmp_path / "001_GT.png", 1)
    _img(tmp_path / "preview.png", 1)
    with pytest.raises(DatasetError, match=r"neither rainy nor clean: preview\.png"):
        find_pairs(tmp_path)


# --- forcing a layout, errors --------------------------------------------------------------------------------


def test_ambiguous_layout_refused_then_forced(tmp_path: Path) -> None:
    for k in (1, 2):
        _img(tmp_path / "rain" / f"{k}.png", _rainy_value(k))
        _img(tmp_path / "clean" / f"{k}.png", _clean_value(k))
        _img(tmp_path / "norain" / f"{k}.png", 0)
    with pytest.raises(DatasetError, match="ambiguous") as err:
        find_pairs(tmp_path)
    assert not isinstance(err.value, LayoutNotFoundError)
    assert "rain_clean" in str(err.value) and "rain_norain" in str(err.value)

    ds = PairedImageDataset(tmp_path, layout="rain_clean")
    assert ds.layout == "rain_clean" and len(ds) == 2
    assert _level(ds[1]["clean"]) == _clean_value(2)
    assert [p.clean.parent.name for p in find_pairs(tmp_path, layout="rain-norain")] == ["norain", "norain"]


def test_layout_aliases(tmp_path: Path) -> None:
    _build(tmp_path, LAYOUT_CASES["input_target"][1])
    assert len(find_pairs(tmp_path, layout="Restormer")) == 3
    assert len(find_pairs(tmp_path, layout="mprnet")) == 3


def test_unknown_layout_name(tmp_path: Path) -> None:
    _build(tmp_path, LAYOUT_CASES["rain_clean"][1])
    with pytest.raises(ValueError, match="unknown layout 'pix2pix'") as err:
        find_pairs(tmp_path, layout="pix2pix")
    assert all(name in str(err.value) for name in LAYOUTS)


def test_forced_layout_absent(tmp_path: Path) -> None:
    _build(tmp_path, LAYOUT_CASES["rain_clean"][1])
    with pytest.raises(DatasetError, match=r"does not follow layout input_target .*Found folders clean/, rain/"):
        find_pairs(tmp_path, layout="input_target")


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="not found"):
        find_pairs(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):
        PairedImageDataset(tmp_path / "nope")
    with pytest.raises(DatasetError):
        UnpairedImageDataset(tmp_path / "nope")


def test_root_is_a_file(tmp_path: Path) -> None:
    f = _img(tmp_path / "x.png", 0)
    with pytest.raises(DatasetError, match="not a folder"):
        find_pairs(f)


def test_empty_folders(tmp_path: Path) -> None:
    (tmp_path / "rain").mkdir()
    (tmp_path / "clean").mkdir()
    (tmp_path / "rain" / "README.txt").write_text("no images here")
    with pytest.raises(DatasetError, match=r"no rainy images in rain/"):
        find_pairs(tmp_path)
    _img(tmp_path / "rain" / "1.png", 1)
    with pytest.raises(DatasetError, match=r"no clean images in clean/"):
        find_pairs(tmp_path)


def test_images_in_subfolders_are_not_searched(tmp_path: Path) -> None:
    _img(tmp_path / "rain" / "heavy" / "1.png", 1)
    _img(tmp_path / "clean" / "1.png", 1)
    with pytest.raises(DatasetError, match="not searched recursively"):
        find_pairs(tmp_path)


def test_no_layout_found(tmp_path: Path) -> None:
    _img(tmp_path / "photos" / "1.png", 1)
    _img(tmp_path / "stuff" / "1.png", 1)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(LayoutNotFoundError, match="no known paired layout") as err:
        find_pairs(tmp_path)
    message = str(err.value)
    assert all(name in message for name in LAYOUTS)  # what it looked for
    assert "photos/" in message and "stuff/" in message and "notes.txt" in message  # what it found


def test_no_layout_points_at_a_nested_data_set(tmp_path: Path) -> None:
    _build(tmp_path / "Rain100L", LAYOUT_CASES["rain_clean"][1])
    with pytest.raises(DatasetError, match=r"sub-folders Rain100L/ follow a layout"):
        find_pairs(tmp_path)


def test_empty_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="folder is empty"):
        find_pairs(tmp_path)


def test_non_image_and_hidden_files_ignored(tmp_path: Path) -> None:
    _build(tmp_path, LAYOUT_CASES["rain_clean"][1])
    for folder in ("rain", "clean"):
        (tmp_path / folder / "README.txt").write_text("readme")
        (tmp_path / folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
        (tmp_path / folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
        (tmp_path / folder / "._001.png").write_bytes(b"\0\5\26\7 AppleDouble resource fork")  # macOS junk
        (tmp_path / folder / "list.csv").write_text("a,b")
    (tmp_path / "PROVENANCE.md").write_text("x")
    ds = PairedImageDataset(tmp_path)
    assert ds.names == ["001", "002", "010"]
    assert all(ds[i]["rainy"].shape == (3, H, W) for i in range(len(ds)))


# --- reading -------------------------------------------------------------------------------------------------


def test_size_mismatch_raises_when_read(tmp_path: Path) -> None:
    _img(tmp_path / "rain" / "1.png", 1)
    _img(tmp_path / "clean" / "1.png", 1)
    _img(tmp_path / "rain" / "2.png", 2, size=(W, H))
    _img(tmp_path / "clean" / "2.png", 2, size=(W + 1, H))
    ds = PairedImageDataset(tmp_path)  # discovery does not open files
    assert ds[0]["name"] == "1"
    with pytest.raises(DatasetError, match="same size") as err:
        ds[1]
    message = str(err.value)
    assert str(tmp_path / "rain" / "2.png") in message and str(tmp_path / "clean" / "2.png") in message
    assert "8x6" in message and "9x6" in message


def test_corrupt_image_raises_when_read(tmp_path: Path) -> None:
    _build(tmp_path, LAYOUT_CASES["rain_clean"][1])
    bad = tmp_path / "clean" / "002.png"
    bad.write_bytes(bad.read_bytes()[:30])  # truncated PNG
    ds = PairedImageDataset(tmp_path)  # not an error at discovery
    assert len(ds) == 3
    ds[0]
    with pytest.raises(ImageReadError, match=r"002\.png"):
        ds[1]


@pytest.mark.parametrize(
    ("mode", "found", "action"),
    [
        ("L", "is grayscale (1 channel)", "replicated to 3 RGB channels"),
        ("RGBA", "has an alpha channel", "alpha dropped, RGB kept"),
        ("CMYK", "has mode CMYK", "converted to RGB"),
    ],
)
def test_conversion_warning_parts(tmp_path: Path, mode: str, found: str, action: str) -> None:
    path = _img(tmp_path / "a.tif", 50, mode=mode)
    with pytest.warns(ImageConversionWarning) as caught:
        read_image(path)
    (w,) = [c.message for c in caught]
    assert isinstance(w, ImageConversionWarning)
    assert (w.what, w.found, w.action) == (str(path), found, action)
    assert str(w) == f"{path} {found}: {action}"


@pytest.mark.parametrize(("shape", "text"), [((3, 6, 8), "8x6"), ((2, 3, 321, 481), "481x321"), ((5, 7), "7x5")])
def test_format_size_is_width_by_height(shape: tuple[int, ...], text: str) -> None:
    assert format_size(torch.zeros(shape)) == text


def test_grayscale_clean_converted_with_warning(tmp_path: Path) -> None:
    _img(tmp_path / "rain" / "1.png", 40)
    _img(tmp_path / "clean" / "1.png", 77, mode="L")
    ds = PairedImageDataset(tmp_path)
    with pytest.warns(ImageConversionWarning, match="grayscale"):
        sample = ds[0]
    assert sample["clean"].shape == (3, H, W)
    assert torch.equal(sample["clean"][0], sample["clean"][2])
    assert _level(sample["clean"]) == 77


def test_transform_applied(tmp_path: Path) -> None:
    _build(tmp_path, LAYOUT_CASES["rain_clean"][1])

    def crop(sample: dict) -> dict:
        return {**sample, "rainy": sample["rainy"][:, :4, :4], "clean": sample["clean"][:, :4, :4]}

    sample = PairedImageDataset(tmp_path, transform=crop)[0]
    assert sample["rainy"].shape == sample["clean"].shape == (3, 4, 4)


def test_dataloader_batch_size_1(tmp_path: Path) -> None:
    _build(tmp_path, LAYOUT_CASES["rain_clean"][1])
    ds = PairedImageDataset(tmp_path)
    batches = list(DataLoader(ds, batch_size=1, shuffle=False))
    assert len(batches) == 3
    assert batches[0]["rainy"].shape == batches[0]["clean"].shape == (1, 3, H, W)
    assert [b["name"] for b in batches] == [["001"], ["002"], ["010"]]
    assert "pairs=3" in repr(ds) and "rain_clean" in repr(ds)


# --- unpaired ------------------------------------------------------------------------------------------------


def test_unpaired_images_in_root(tmp_path: Path) -> None:
    for k in (10, 2, 1):
        _img(tmp_path / f"photo{k}.jpg", 10 * k)
    (tmp_path / "README.txt").write_text("x")
    (tmp_path / ".DS_Store").write_bytes(b"x")
    ds = UnpairedImageDataset(tmp_path)
    assert ds.names == ["photo1", "photo2", "photo10"]
    sample = ds[2]
    assert set(sample) == {"rainy", "name"} and sample["name"] == "photo10"
    assert sample["rainy"].shape == (3, H, W)
    assert abs(_level(sample["rainy"]) - 100) <= 2
    batch = next(iter(DataLoader(ds, batch_size=1)))
    assert batch["rainy"].shape == (1, 3, H, W) and batch["name"] == ["photo1"]


@pytest.mark.parametrize("folder", ["rain", "rainy", "input", "Rain"])
def test_unpaired_images_in_subfolder(tmp_path: Path, folder: str) -> None:
    for k in (1, 2):
        _img(tmp_path / folder / f"{k}.png", k)
    (tmp_path / "PROVENANCE.md").write_text("x")
    assert [p.parent.name for p in find_images(tmp_path)] == [folder, folder]
    assert UnpairedImageDataset(tmp_path).names == ["1", "2"]


def test_unpaired_reads_the_rainy_half_of_a_paired_set(tmp_path: Path) -> None:
    _build(tmp_path, LAYOUT_CASES["rain_clean"][1])
    assert [p.parent.name for p in find_images(tmp_path)] == ["rain"] * 3


def test_unpaired_errors(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="no images"):
        UnpairedImageDataset(tmp_path)
    _img(tmp_path / "rain" / "1.png", 1)
    _img(tmp_path / "input" / "1.png", 1)
    with pytest.raises(DatasetError, match="several folders"):
        UnpairedImageDataset(tmp_path)
    _img(tmp_path / "a.png", 1)
    _img(tmp_path / "a.jpg", 1)
    with pytest.raises(DatasetError, match="same name"):
        UnpairedImageDataset(tmp_path)


def test_unpaired_corrupt_image_raises_when_read(tmp_path: Path) -> None:
    _img(tmp_path / "1.png", 1)
    (tmp_path / "2.jpg").write_text("not a jpeg")
    ds = UnpairedImageDataset(tmp_path)
    assert len(ds) == 2
    with pytest.raises(ImageReadError, match=r"2\.jpg"):
        ds[1]


# --- registry ------------------------------------------------------------------------------------------------


def test_registry_contents() -> None:
    assert set(BENCHMARKS) == {"Rain12", "Rain100L", "Rain100H", "Rain1400", "Rain800", "SIRR_real", "SPA-Data"}
    counts = {name: info.count for name, info in BENCHMARKS.items()}
    assert counts == {
        "Rain12": 12,
        "Rain100L": 100,
        "Rain100H": 100,
        "Rain1400": 1400,
        "Rain800": 100,
        "SIRR_real": 147,
        "SPA-Data": 1000,
    }
    assert [name for name, info in BENCHMARKS.items() if not info.paired] == ["SIRR_real"]
    for name, info in BENCHMARKS.items():
        assert isinstance(info, BenchmarkInfo) and info.name == name
        assert info.description and info.source
        assert (info.rainy_psnr is None) == (info.rainy_ssim is None)
    assert (BENCHMARKS["Rain100L"].rainy_psnr, BENCHMARKS["Rain100L"].rainy_ssim) == (26.90, 0.8384)
    assert BENCHMARKS["SIRR_real"].rainy_psnr is None


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("Rain100L", "Rain100L"),
        ("rain100l", "Rain100L"),
        ("RAIN100L", "Rain100L"),
        ("rain100-h", "Rain100H"),
        ("SIRR", "SIRR_real"),
        ("real147", "SIRR_real"),
        ("sirr_real", "SIRR_real"),
        ("SPA", "SPA-Data"),
        ("spa_data", "SPA-Data"),
        ("DDN", "Rain1400"),
        ("Test100", "Rain800"),
        ("rain12", "Rain12"),
    ],
)
def test_get_benchmark_aliases(alias: str, name: str) -> None:
    assert get_benchmark(alias) is BENCHMARKS[name]


# Every name and alias either lookup accepted before the two tables became one (sapnet.data.download's
# DATASETS + _ALIASES, sapnet.data.registry's BENCHMARKS), with the set it named.
_OLD_DOWNLOAD_NAMES = {
    **{n: n for n in ("Rain12", "Rain100L", "Rain100H", "RainTrainH", "RainTrainL", "Rain1400", "Rain800")},
    **{"SPA-Data": "SPA-Data", "SIRR_real": "SIRR_real"},
    **{"ddn": "Rain1400", "spa": "SPA-Data", "sirr": "SIRR_real", "real147": "SIRR_real", "test100": "Rain800"},
}
_OLD_BENCHMARK_NAMES = {
    **{n: n for n in ("Rain12", "Rain100L", "Rain100H", "Rain1400", "Rain800", "SIRR_real", "SPA-Data")},
    **{"DDN": "Rain1400", "DDN-Data": "Rain1400", "Rain1400-test": "Rain1400"},
    **{"Test100": "Rain800", "Rain800-test": "Rain800", "ID-CGAN": "Rain800"},
    **{"SIRR": "SIRR_real", "real147": "SIRR_real", "SIRR-real147": "SIRR_real", "real_input": "SIRR_real"},
    **{"SIRR real": "SIRR_real", "SPA": "SPA-Data", "SPA-test": "SPA-Data", "SPANet": "SPA-Data"},
}


def _spellings(name: str) -> list[str]:
    """``name`` as given and as people type it: other case, ``-`` / ``_`` / space swapped or dropped."""
    return [name, name.upper(), name.lower(), name.replace("-", "_"), name.replace("_", " "), name.replace("-", "")]


@pytest.mark.parametrize(("alias", "name"), sorted({**_OLD_DOWNLOAD_NAMES, **_OLD_BENCHMARK_NAMES}.items()))
def test_one_name_lookup_for_downloads_and_benchmarks(alias: str, name: str) -> None:
    for spelling in _spellings(alias):
        assert get_download(spelling) is DATASETS[name]
        if name in BENCHMARKS:
            assert get_benchmark(spelling) is BENCHMARKS[name]
        else:  # a training set: downloadable, not a benchmark
            with pytest.raises(KeyError, match="unknown benchmark"):
                get_benchmark(spelling)


@pytest.mark.parametrize(
    ("name", "key"),
    [("SPA-Data", "spadata"), ("spa_data", "spadata"), ("SPA data", "spadata"), ("Rain100L", "rain100l"),
     ("RAIN-100_L", "rain100l"), ("SIRR real", "sirrreal"), ("", "")],
)  # fmt: skip
def test_normalise_name(name: str, key: str) -> None:
    assert normalise_name(name) == key


def test_each_benchmark_is_described_once() -> None:
    for name, info in BENCHMARKS.items():
        assert info.download is DATASETS[name]  # name, aliases and paper come from the download record
        assert (info.name, info.aliases, info.source) == (name, DATASETS[name].aliases, DATASETS[name].paper)
    owners: dict[str, set[str]] = {}
    for d in DATASETS.values():
        for n in (d.name, *d.aliases):
            owners.setdefault(normalise_name(n), set()).add(d.name)
    assert all(len(names) == 1 for names in owners.values()), owners  # no name or alias names two sets


def test_get_benchmark_unknown() -> None:
    with pytest.raises(KeyError, match="unknown benchmark 'Rain200H'") as err:
        get_benchmark("Rain200H")
    assert all(name in str(err.value) for name in BENCHMARKS)


def test_check_benchmark_faithful_copy_is_silent() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_benchmark("Rain100L", 100) == []
        assert check_benchmark("rain100l", 100, rainy_psnr=26.70) == []
        assert check_benchmark("SIRR", 147, rainy_psnr=12.0) == []  # no published figure: nothing to compare
        assert check_benchmark("Rain1400", 1400, rainy_psnr=30.0) == []


def test_check_benchmark_count() -> None:
    with pytest.warns(DatasetWarning, match=r"found 98 pairs, the benchmark has 100.*truncated"):
        problems = check_benchmark("Rain100H", 98)
    assert len(problems) == 1
    with pytest.warns(DatasetWarning, match=r"found 200 images, the benchmark has 147"):
        check_benchmark("real147", 200)
    with pytest.raises(ValueError):
        check_benchmark("Rain100L", -1)


def test_check_benchmark_rainy_psnr() -> None:
    with pytest.warns(DatasetWarning, match=r"25\.52 dB .*published 26\.90 dB"):
        problems = check_benchmark("Rain100L", 100, rainy_psnr=25.52)  # RGB PSNR instead of Y: caught
    assert len(problems) == 1
    with pytest.warns(DatasetWarning) as record:
        problems = check_benchmark("Rain100L", 50, rainy_psnr=28.0)
    assert len(problems) == 2 and len(record) == 2


def test_check_benchmark_quiet() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(check_benchmark("Rain100L", 50, rainy_psnr=28.0, warn=False)) == 2


# --- real data (shared/) -------------------------------------------------------------------------------------


def test_real_rain100l(rain100l_dir: Path) -> None:
    ds = PairedImageDataset(rain100l_dir)
    assert ds.layout == "rain_clean"
    assert len(ds) == 100
    assert ds.names == [f"{k:03d}" for k in range(1, 101)]
    assert all(p.rainy.name == p.clean.name == f"{p.name}.png" for p in ds.pairs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_benchmark("Rain100L", len(ds)) == []
    sample = ds[0]
    assert sample["name"] == "001"
    assert sample["rainy"].shape == sample["clean"].shape
    assert tuple(sample["rainy"].shape[1:]) in {(321, 481), (481, 321)}
    assert not torch.equal(sample["rainy"], sample["clean"])


def test_real_sirr(shared_dir: Path) -> None:
    root = shared_dir / "data" / "SIRR_real"
    if not root.is_dir():
        pytest.skip(f"SIRR real set ({root}) not found")
    ds = UnpairedImageDataset(root)
    assert len(ds) == 147
    assert ds.names == [f"{k:03d}" for k in range(1, 148)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_benchmark("SIRR", len(ds)) == []
    with pytest.raises(LayoutNotFoundError, match="no known paired layout"):
        find_pairs(root)
