"""The ``sapnet`` command line: ``sapnet derain`` inputs, outputs, failures and exit codes."""

from __future__ import annotations

import argparse
import importlib.metadata
import struct
import subprocess
import sys
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sapnet
from sapnet.cli import main
from sapnet.cli.arguments import non_negative_int, positive_int, tile_size
from sapnet.cli.derain import expand_inputs
from sapnet.data import read_image_with_meta, tensor_to_array
from sapnet.inference import DEFAULT_TILE

SIZE = (24, 20)  # PIL (width, height)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> sapnet.DerainNet:
    torch.manual_seed(0)
    return sapnet.create_model("prenet", stages=2, channels=8).eval()


@pytest.fixture
def ckpt(tmp_path: Path, model: sapnet.DerainNet) -> Path:
    return sapnet.save_model(model, tmp_path / "m.pt")


def write_rgb(path: Path, seed: int = 0, size: tuple[int, int] = SIZE, mode: str = "RGB") -> Path:
    """A random image of ``mode`` (RGB, L or RGBA) saved losslessly (PNG) or as ``path``'s format."""
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    a = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a[:, :, 0] if mode == "L" else a, mode=mode).save(path)
    return path


def expected(model: sapnet.DerainNet, path: Path, tile: int | None = 8, overlap: int = 2) -> np.ndarray:
    """What the CLI should write for ``path``: the Python API's result as 8-bit RGB."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sapnet.ImageConversionWarning)
        image = sapnet.read_image(path)
    return tensor_to_array(sapnet.derain(image, model, tile=tile, tile_overlap=overlap))


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.mode == "RGB"
        return np.asarray(im)


def derain(*args: str | Path, ckpt: Path | None = None) -> int:
    argv = ["derain", *map(str, args), "--tile", "8", "--tile-overlap", "2"]
    if ckpt is not None:
        argv += ["--checkpoint", str(ckpt)]
    return main(argv)


# --- inputs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["folder", "glob", "files"])
def test_inputs_are_derained_losslessly(
    kind: str, tmp_path: Path, ckpt: Path, model: sapnet.DerainNet, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    images = [
        write_rgb(src / "a.png", 1),
        write_rgb(src / "b.jpg", 2, size=(17, 9)),
        write_rgb(src / "c.bmp", 3),
    ]
    (src / "notes.txt").write_text("not an image")
    (src / "sub").mkdir()
    write_rgb(src / "sub" / "nested.png", 4)
    inputs = {"folder": [src], "glob": [src / "*.*"], "files": images}[kind]
    if kind == "glob":
        (src / "notes.txt").unlink()  # a glob passes every match on, like a shell would
    out = tmp_path / "out"

    assert derain(*inputs, "-o", out, ckpt=ckpt) == 0

    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]
    for image in images:
        result = read_png(out / f"{image.stem}.png")
        assert result.shape == (*Image.open(image).size[::-1], 3)
        np.testing.assert_array_equal(result, expected(model, image))
    assert "derained 3, skipped 0 existing, failed 0" in capsys.readouterr().out


def test_repeated_input_is_processed_once(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_rgb(tmp_path / "in" / "a.png")
    assert derain(a, tmp_path / "in", tmp_path / "in" / "*.png", "-o", tmp_path / "out", ckpt=ckpt) == 0
    assert "derained 1, skipped 0 existing, failed 0" in capsys.readouterr().out


def test_folders_are_listed_naturally_without_hidden_files(
    tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    for name in ["img10.png", "img2.png", "img1.png"]:
        write_rgb(src / name)
    (src / "._img1.png").write_bytes(b"macOS resource fork")  # not an image: must not count as a failure
    files, errors = expand_inputs([str(src)])
    assert [s.path.name for s in files] == ["img1.png", "img2.png", "img10.png"] and errors == []
    assert derain(src, "-o", tmp_path / "out", ckpt=ckpt) == 0
    assert "derained 3, skipped 0 existing, failed 0" in capsys.readouterr().out


@pytest.mark.parametrize("tile", ["8", "0"])
def test_tiled_and_whole_image(tile: str, tmp_path: Path, ckpt: Path, model: sapnet.DerainNet) -> None:
    image = write_rgb(tmp_path / "a.png")
    out = tmp_path / "out"
    argv = [
        "derain",
        str(image),
        "-o",
        str(out),
        "--checkpoint",
        str(ckpt),
        "--tile",
        tile,
        "--tile-overlap",
        "2",
    ]
    assert main(argv) == 0
    tiled, whole = expected(model, image, tile=8), expected(model, image, tile=None)
    assert not np.array_equal(tiled, whole)  # so that the comparison below tells the two apart
    np.testing.assert_array_equal(read_png(out / "a.png"), tiled if tile == "8" else whole)


def test_default_is_that_of_the_api(
    tmp_path: Path, ckpt: Path, model: sapnet.DerainNet, capsys: pytest.CaptureFixture[str]
) -> None:
    image = write_rgb(tmp_path / "wide.png", size=(DEFAULT_TILE + 60, 30))  # two tiles wide at the default tile
    base = ["derain", str(image), "--checkpoint", str(ckpt)]
    whole = expected(model, image, tile=0)
    assert not np.array_equal(whole, expected(model, image, tile=DEFAULT_TILE, overlap=32))
    np.testing.assert_array_equal(whole, expected(model, image, tile=None))  # the API's default

    assert main([*base, "-o", str(tmp_path / "a")]) == 0
    np.testing.assert_array_equal(read_png(tmp_path / "a" / "wide.png"), whole)
    assert "(1 whole)" in capsys.readouterr().out

    assert main([*base, "-o", str(tmp_path / "b"), "--memory-budget", "0.0001"]) == 0  # 107 KB: too small
    captured = capsys.readouterr()
    tiled = expected(model, image, tile=DEFAULT_TILE, overlap=32)
    np.testing.assert_array_equal(read_png(tmp_path / "b" / "wide.png"), tiled)
    assert f"(1 in {DEFAULT_TILE}x{DEFAULT_TILE} tiles)" in captured.out
    assert f"{DEFAULT_TILE + 60}x30" in captured.err and "--memory-budget" in captured.err


def test_tile_progress_on_a_terminal(
    tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    image = write_rgb(tmp_path / "a.png")
    assert derain(image, "-o", tmp_path / "quiet", ckpt=ckpt) == 0
    assert "tile/s" not in capsys.readouterr().err  # no bars when stderr is not a terminal
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert derain(image, "-o", tmp_path / "out", ckpt=ckpt) == 0
    err = capsys.readouterr().err
    assert "image/s" in err or "s/image" in err  # the bar over files
    assert "24x20:" in err and "/12 [" in err and "tile/s" in err  # and, under it, the tiles of the image


@pytest.mark.parametrize(
    ("option", "value", "kwargs"),
    [("--dtype", "bfloat16", {"dtype": torch.bfloat16}), ("--batch-size", "3", {"batch_size": 3})],
)
def test_dtype_and_batch_size_are_those_of_the_api(
    option: str, value: str, kwargs: dict[str, object], tmp_path: Path, ckpt: Path, model: sapnet.DerainNet
) -> None:
    image = write_rgb(tmp_path / "a.png")
    assert derain(image, "-o", tmp_path / "out", option, value, ckpt=ckpt) == 0
    want = tensor_to_array(sapnet.derain(sapnet.read_image(image), model, tile=8, tile_overlap=2, **kwargs))
    np.testing.assert_array_equal(read_png(tmp_path / "out" / "a.png"), want)


def test_tile_overlap_must_be_smaller_than_tile(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = write_rgb(tmp_path / "a.png")
    argv = ["derain", str(image), "-o", str(tmp_path / "out"), "--checkpoint", str(ckpt), "--tile", "8"]
    assert main(argv) == 2  # default overlap 32 >= 8
    assert "--tile-overlap" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unmatched_glob_and_empty_folder_are_errors(
    tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_rgb(tmp_path / "a.png")
    (tmp_path / "empty").mkdir()
    assert derain(a, tmp_path / "*.tif", tmp_path / "empty", "-o", tmp_path / "out", ckpt=ckpt) == 1
    captured = capsys.readouterr()
    assert "*.tif: no files match" in captured.err
    assert "empty: folder has no image files" in captured.err
    assert "derained 1, skipped 0 existing, failed 2" in captured.out
    assert (tmp_path / "out" / "a.png").is_file()


# --- outputs ---------------------------------------------------------------------------------------------


def test_existing_output_is_skipped_unless_overwrite(
    tmp_path: Path, ckpt: Path, model: sapnet.DerainNet, capsys: pytest.CaptureFixture[str]
) -> None:
    image = write_rgb(tmp_path / "in" / "a.png")
    stale = write_rgb(tmp_path / "out" / "a.png", seed=9)
    before = read_png(stale)

    assert derain(image, "-o", tmp_path / "out", ckpt=ckpt) == 0
    captured = capsys.readouterr()
    assert "exists" in captured.err and "--overwrite" in captured.err
    assert "derained 0, skipped 1 existing, failed 0" in captured.out
    np.testing.assert_array_equal(read_png(stale), before)

    assert derain(image, "-o", tmp_path / "out", "--overwrite", ckpt=ckpt) == 0
    assert "derained 1, skipped 0 existing, failed 0" in capsys.readouterr().out
    np.testing.assert_array_equal(read_png(stale), expected(model, image))


@pytest.mark.parametrize("case", ["below-a-file", "not-writable"])
def test_unusable_output_folder_exits_2_before_any_work(
    case: str, tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    images = [write_rgb(tmp_path / "in" / f"{k}.png", k) for k in range(3)]
    if case == "below-a-file":
        (tmp_path / "file").write_text("")
        out, phrase = tmp_path / "file" / "out", "cannot create output folder"
    else:  # a read-only folder, as seen by a user that is not root (root may write anywhere)
        out, phrase = tmp_path / "ro", "cannot write to output folder"
        out.mkdir()

        def refuse(*args: object, **kwargs: object) -> None:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr("sapnet.cli.derain.tempfile.mkstemp", refuse)
    reads: list[Path] = []
    monkeypatch.setattr("sapnet.cli.derain.read_image_with_meta", lambda p: reads.append(p) or read_image_with_meta(p))

    assert derain(*images, "-o", out, ckpt=ckpt) == 2

    err = capsys.readouterr().err
    assert err.count("error:") == 1 and phrase in err and str(out) in err
    assert reads == []


def test_same_stem_fails_the_second_input(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = write_rgb(tmp_path / "x" / "a.png", 1), write_rgb(tmp_path / "y" / "a.jpg", 2)
    assert derain(first, second, "-o", tmp_path / "out", ckpt=ckpt) == 1
    captured = capsys.readouterr()
    message = next(line for line in captured.err.splitlines() if "same output name" in line)
    assert str(first) in message and str(second) in message
    assert "derained 1, skipped 0 existing, failed 1" in captured.out
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.png"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_inputs_are_never_overwritten(
    overwrite: bool, tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    png, jpg = write_rgb(folder / "a.png", 1), write_rgb(folder / "b.jpg", 2)
    png_bytes = png.read_bytes()
    extra = ["--overwrite"] if overwrite else []

    assert derain(folder, "-o", folder, *extra, ckpt=ckpt) == 1

    captured = capsys.readouterr()
    assert png.read_bytes() == png_bytes
    assert any(str(png) in line and "input" in line for line in captured.err.splitlines())
    assert read_png(folder / "b.png").shape == (SIZE[1], SIZE[0], 3)  # the other image still succeeds
    assert jpg.is_file()
    assert "derained 1, skipped 0 existing, failed 1" in captured.out


def test_unreadable_inputs_are_reported_and_skipped(
    tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_rgb(tmp_path / "in" / "good.png")
    text = tmp_path / "in" / "text.png"
    text.write_text("this is not a PNG")
    missing = tmp_path / "in" / "missing.png"

    assert derain(text, missing, good, "-o", tmp_path / "out", ckpt=ckpt) == 1

    captured = capsys.readouterr()
    assert f"{text}: not an image file" in captured.err
    assert f"{missing}: no such file" in captured.err
    assert "derained 1, skipped 0 existing, failed 2" in captured.out
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good.png"]


@pytest.mark.parametrize(("mode", "what"), [("L", "grayscale"), ("RGBA", "alpha")])
def test_grayscale_and_rgba_become_rgb_with_a_warning(
    mode: str,
    what: str,
    tmp_path: Path,
    ckpt: Path,
    model: sapnet.DerainNet,
    capsys: pytest.CaptureFixture[str],
) -> None:
    image = write_rgb(tmp_path / "in" / "a.png", mode=mode)
    assert derain(image, "-o", tmp_path / "out", ckpt=ckpt) == 0
    warning_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warning_lines) == 1 and what in warning_lines[0] and str(image) in warning_lines[0]
    np.testing.assert_array_equal(read_png(tmp_path / "out" / "a.png"), expected(model, image))


def test_recursive_mirrors_sub_folders(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in"
    write_rgb(src / "top.png", 1)
    write_rgb(src / "day1" / "a.png", 2)
    write_rgb(src / "day1" / "late" / "a.jpg", 3)  # same stem as day1/a.png, other folder: no clash
    write_rgb(src / ".thumbs" / "x.png", 4)  # hidden folders are not searched
    assert derain(src, "-o", tmp_path / "flat", ckpt=ckpt) == 0
    assert sorted(p.relative_to(tmp_path / "flat").as_posix() for p in (tmp_path / "flat").rglob("*")) == ["top.png"]

    out = src / "derained"  # inside the input folder: never searched, so a second run finds only the inputs
    for run, summary in ((1, "derained 3, skipped 0 existing"), (2, "derained 0, skipped 3 existing")):
        assert derain(src, "-o", out, "--recursive", ckpt=ckpt) == 0, run
        assert summary in capsys.readouterr().out
    found = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert found == ["day1/a.png", "day1/late/a.png", "top.png"]


def test_16bit_input_gives_16bit_output(tmp_path: Path, ckpt: Path, model: sapnet.DerainNet) -> None:
    values = np.random.default_rng(0).integers(0, 65536, (SIZE[1], SIZE[0], 3), dtype=np.uint16)
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in values)
    header = struct.pack(">IIBBBBB", SIZE[0], SIZE[1], 16, 2, 0, 0, 0)
    source = tmp_path / "in16.png"
    source.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")
    )
    assert derain(source, "-o", tmp_path / "out", ckpt=ckpt) == 0
    out = tmp_path / "out" / "in16.png"
    assert out.read_bytes()[24] == 16  # IHDR bit depth
    x, meta = read_image_with_meta(source)
    result, out_meta = read_image_with_meta(out)
    assert meta.bits == out_meta.bits == 16
    want = tensor_to_array(sapnet.derain(x, model, tile=8, tile_overlap=2), np.uint16)
    np.testing.assert_array_equal(tensor_to_array(result, np.uint16), want)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def test_icc_profile_and_exif_are_kept(tmp_path: Path, ckpt: Path) -> None:
    icc = b"a stand-in ICC profile " * 4
    exif = Image.Exif()
    exif[0x010F] = "RainCam"  # Make
    exif[0x0112] = 8  # Orientation: rotate 90 degrees counter-clockwise to view
    source = tmp_path / "photo.jpg"
    Image.new("RGB", SIZE, (90, 120, 150)).save(source, icc_profile=icc, exif=exif.tobytes())
    assert derain(source, "-o", tmp_path / "out", ckpt=ckpt) == 0
    with Image.open(tmp_path / "out" / "photo.png") as im:
        assert im.size == SIZE[::-1]  # upright
        assert im.info.get("icc_profile") == icc
        assert im.getexif().get(0x010F) == "RainCam" and 0x0112 not in im.getexif()


# --- model selection -------------------------------------------------------------------------------------


def test_non_checkpoint_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = write_rgb(tmp_path / "a.png")
    bogus = tmp_path / "weights.pth"
    bogus.write_text("not a checkpoint")
    assert derain(image, "-o", tmp_path / "out", ckpt=bogus) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("error:") and str(bogus) in err and "checkpoint" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra", [[], ["--model", "prn_r.rain100h"]])
def test_registry_weights_unavailable_offline_exits_2(
    extra: list[str], tmp_path: Path, offline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = write_rgb(tmp_path / "a.png")
    assert main(["derain", str(image), "-o", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err
    name = extra[1] if extra else sapnet.models.DEFAULT_MODEL
    entry = sapnet.models.get_weights(name)
    for text in (entry.url, str(offline), "SAPNET_WEIGHTS_DIR", f"sapnet weights download {name}", entry.sha256):
        assert text in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_no_model_option_uses_the_default_weights(
    tmp_path: Path, offline: Path, compat_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAPNET_WEIGHTS_DIR", str(compat_dir))
    image = write_rgb(tmp_path / "a.png")
    assert main(["derain", str(image), "-o", str(tmp_path / "o1")]) == 0
    default = sapnet.load_model(sapnet.models.DEFAULT_MODEL)
    np.testing.assert_array_equal(read_png(tmp_path / "o1" / "a.png"), expected(default, image, tile=None))
    # a registry name, with the mirror given as an option instead of the variable
    monkeypatch.delenv("SAPNET_WEIGHTS_DIR")
    argv = ["derain", str(image), "-o", str(tmp_path / "o2"), "--model", "prn_r.rain100h"]
    assert main([*argv, "--weights-dir", str(compat_dir)]) == 0
    prn_r = sapnet.load_model("prn_r.rain100h", weights_dir=compat_dir)
    np.testing.assert_array_equal(read_png(tmp_path / "o2" / "a.png"), expected(prn_r, image, tile=None))


def test_unknown_model_name_exits_2_naming_close_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = write_rgb(tmp_path / "a.png")
    assert main(["derain", str(image), "-o", str(tmp_path / "out"), "--model", "prenet.rain100x"]) == 2
    err = capsys.readouterr().err
    assert "unknown pretrained model 'prenet.rain100x'" in err and "prenet.rain100h" in err


@pytest.mark.parametrize("extra", [["--model", "prenet.rain100h", "--checkpoint", "m.pt"], ["--tile", "-1"]])
def test_usage_errors_exit_2(extra: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["derain", "a.png", "-o", str(tmp_path / "out"), *extra]) == 2
    assert "usage: sapnet derain" in capsys.readouterr().err


# --- entry points ----------------------------------------------------------------------------------------


def test_version_has_one_source() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    from sapnet._version import __version__

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    assert sapnet.__version__ == __version__ == pyproject["project"]["version"]
    try:
        installed = importlib.metadata.version("sapnet")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return
    assert installed == __version__, "the installed metadata is stale: reinstall (pip install -e .)"


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"sapnet {sapnet.__version__}"
    assert main(["derain", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--checkpoint" in out and "--tile-overlap" in out and "--overwrite" in out
    assert main([]) == 2


def test_python_dash_m_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sapnet", "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: sapnet") and "derain" in result.stdout


def test_demo_trains_evaluates_and_writes_grids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SAPNET_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert main(["demo", "--steps", "2", "--out", str(out), "--shared", str(tmp_path / "no-shared")]) == 0
    printed = capsys.readouterr().out
    assert "| Rainy |" in printed and "| SAPNet (demo-trained) |" in printed
    for name in ("train/last.pt", "train/log.csv", "train/curves.png", "eval/table.md", "eval/grid_demo.png"):
        assert (out / name).is_file(), name
    assert sapnet.load_model(out / "train" / "best.pt").config.stages == 6


@pytest.mark.parametrize(
    ("parse", "text", "expected"),
    [
        (positive_int, "3", 3),
        (non_negative_int, "0", 0),
        (tile_size, "auto", None),
        (tile_size, " AUTO ", None),
        (tile_size, "0", 0),
        (tile_size, "448", 448),
    ],
)
def test_argument_types_parse(parse: Callable[[str], object], text: str, expected: object) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (positive_int, "0", "must be >= 1, got 0"),
        (non_negative_int, "-1", "must be >= 0, got -1"),
        (tile_size, "-2", "must be >= 0 or auto, got -2"),
    ],
)
def test_argument_types_refuse(parse: Callable[[str], object], text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse(text)
