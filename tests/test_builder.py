"""``sapnet.data.builder`` / ``sapnet synth`` and the embedded demo set: determinism, resuming, bad inputs."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sapnet.cli import main
from sapnet.data import find_pairs, read_image
from sapnet.data.builder import MANIFEST_NAME, BuildError, build_rain_set, pair_names, pair_seed
from sapnet.data.embedded import demo_dataset

MIN = 16  # min_size used with the tiny test images
SIZE = (24, 20)  # PIL (width, height)


pytestmark = pytest.mark.usefixtures("one_thread")


def write_photo(path: Path, seed: int = 0, size: tuple[int, int] = SIZE, mode: str = "RGB") -> Path:
    """A smooth random image (RGB or L), saved as ``path``'s format."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(small, "RGB").resize(size, Image.Resampling.BILINEAR).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    for i, name in enumerate(["b.png", "a.png", "c.jpg"]):
        write_photo(folder / name, seed=i)
    return folder


def build(src: Path, out: Path, **kwargs: object) -> object:
    kwargs.setdefault("min_size", MIN)
    return build_rain_set(src, out, progress=False, log=lambda _m: None, **kwargs)  # type: ignore[arg-type]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


# --- layout and determinism ------------------------------------------------------------------------------


def test_pairs_are_written_in_the_rain_clean_layout(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "set"
    report = build(photos, out, per_image=2, seed=3)
    assert report.ok and not report.skipped
    assert sorted(report.written) == ["a_1", "a_2", "b_1", "b_2", "c_1", "c_2"]
    pairs = find_pairs(out)
    assert [p.name for p in pairs] == ["a_1", "a_2", "b_1", "b_2", "c_1", "c_2"]
    for pair in pairs:
        with Image.open(pair.rainy) as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == SIZE
    # The clean side is the photo itself (lossless), and the K rainy versions differ.
    src = np.asarray(Image.open(photos / "a.png"))
    assert np.array_equal(np.asarray(Image.open(out / "clean" / "a_1.png")), src)
    assert not torch.equal(read_image(out / "rain" / "a_1.png"), read_image(out / "rain" / "a_2.png"))
    assert not torch.equal(read_image(out / "rain" / "a_1.png"), read_image(out / "clean" / "a_1.png"))
    assert (out / MANIFEST_NAME).is_file()


def test_one_pair_per_photo_keeps_the_photo_name(photos: Path, tmp_path: Path) -> None:
    report = build(photos, tmp_path / "set")
    assert sorted(report.written) == ["a", "b", "c"]
    assert pair_names("x", 1) == [(1, "x")]
    with pytest.raises(ValueError, match="per_image"):
        pair_names("x", 0)


def test_builds_are_byte_identical_and_order_independent(photos: Path, tmp_path: Path) -> None:
    build(photos, tmp_path / "one", per_image=2, seed=7)
    build(photos, tmp_path / "two", per_image=2, seed=7)
    first = snapshot(tmp_path / "one")
    assert first == snapshot(tmp_path / "two")
    # A folder holding only one of the photos gives that photo's pairs the same bytes: the rain of a pair
    # depends on (seed, stem, k), not on which other files exist or the processing order.
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(photos / "c.jpg", alone / "c.jpg")
    build(alone, tmp_path / "three", per_image=2, seed=7)
    assert snapshot(tmp_path / "three") == {k: v for k, v in first.items() if "/c_" in k}
    # Another seed, other rain.
    build(photos, tmp_path / "four", per_image=2, seed=8)
    other = snapshot(tmp_path / "four")
    assert other["rain/a_1.png"] != first["rain/a_1.png"] and other["clean/a_1.png"] == first["clean/a_1.png"]


def test_pair_seed_is_stable() -> None:
    assert pair_seed(0, "a", 1) == pair_seed(0, "a", 1)
    assert len({pair_seed(0, "a", 1), pair_seed(1, "a", 1), pair_seed(0, "b", 1), pair_seed(0, "a", 2)}) == 4
    assert 0 <= pair_seed(123, "photo", 9) < 2**63


# --- resuming ---------------------------------------------------------------------------------------------


def test_resume_rewrites_only_missing_outputs(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "set"
    build(photos, out, per_image=2)
    before = snapshot(out)
    old = time.time() - 1000
    for p in out.rglob("*.png"):
        os.utime(p, (old, old))
    (out / "rain" / "b_2.png").unlink()
    report = build(photos, out, per_image=2)
    assert report.written == ["b_2"] and len(report.skipped) == 5
    assert snapshot(out) == before  # the rewritten file is identical
    touched = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png") if p.stat().st_mtime > old + 1)
    assert touched == ["clean/b_2.png", "rain/b_2.png"]
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary files left


def test_resume_with_other_parameters_is_refused(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "set"
    build(photos, out, seed=1)
    with pytest.raises(BuildError, match="other parameters"):
        build(photos, out, seed=2)


# --- refusals and bad inputs --------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["same", "inside", "containing"])
def test_never_writes_into_its_input(where: str, photos: Path) -> None:
    out = {"same": photos, "inside": photos / "out", "containing": photos.parent}[where]
    before = sorted(photos.parent.rglob("*"))
    with pytest.raises(BuildError, match="overlaps the input"):
        build(photos, out)
    assert sorted(photos.parent.rglob("*")) == before


def test_bad_inputs_are_reported_and_the_rest_is_built(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    write_photo(src / "good.png")
    write_photo(src / "gray.png", seed=1, mode="L")
    write_photo(src / "tiny.png", seed=2, size=(8, 30))
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "set"
    report = build(src, out)
    assert sorted(report.written) == ["good", "gray"]
    assert dict(report.failed).keys() == {"broken.png", "tiny.png"}
    assert "8x30" in dict(report.failed)["tiny.png"]
    assert [name for name, _ in report.notes] == ["gray.png"] and "grayscale" in report.notes[0][1]
    assert report.ignored == ["notes.txt"]
    assert not report.ok
    gray = np.asarray(Image.open(out / "clean" / "gray.png"))
    assert gray.shape == (SIZE[1], SIZE[0], 3) and np.array_equal(gray[..., 0], gray[..., 2])


def test_default_minimum_size_is_the_training_patch(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    write_photo(src / "small.png", size=(120, 99))
    report = build_rain_set(src, tmp_path / "set", progress=False, log=lambda _m: None)
    assert dict(report.failed)["small.png"].startswith("120x99 pixels, smaller than the minimum 100x100")


def test_unknown_preset_and_empty_input(photos: Path, tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="heavy"):
        build(photos, tmp_path / "set", preset="drizzle")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no images"):
        build(empty, tmp_path / "set2")


# --- the built set is usable --------------------------------------------------------------------------------


def test_built_set_is_evaluated(photos: Path, tmp_path: Path) -> None:
    from sapnet.evaluation import evaluate

    out = tmp_path / "set"
    build(photos, out)
    result = evaluate([], [str(out)], ["psnr", "ssim"], None, progress=False, log=lambda _m: None)
    assert len(result.per_image) == 3
    rainy = [r for r in result.records if r.method == "Rainy"]
    assert rainy and all(np.isfinite(v) for r in rainy for v in r.values.values())


# --- CLI ----------------------------------------------------------------------------------------------------


def synth(*args: object) -> int:
    return main(["synth", *map(str, args), "--min-size", str(MIN), "--threads", "1"])


def test_cli_exit_codes(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "set"
    assert synth("--clean", photos, "--out", out, "--per-image", "2", "--seed", "0") == 0
    assert "wrote 6 pairs, skipped 0 existing, failed 0 images" in capsys.readouterr().out
    assert synth("--clean", photos, "--out", out, "--per-image", "2", "--seed", "0") == 0
    assert "wrote 0 pairs, skipped 6 existing" in capsys.readouterr().out
    # usage errors: 2
    assert synth("--clean", photos, "--out", photos / "x") == 2
    assert "overlaps the input" in capsys.readouterr().err
    assert synth("--clean", photos, "--out", tmp_path / "s2", "--preset", "drizzle") == 2
    assert synth("--clean", tmp_path / "missing", "--out", tmp_path / "s3") == 2
    assert synth("--clean", photos, "--out", tmp_path / "s4", "--per-image", "0") == 2
    assert main(["synth", "--out", str(tmp_path / "s5")]) == 2
    (tmp_path / "file").write_text("x")
    assert synth("--clean", photos, "--out", tmp_path / "file") == 2
    capsys.readouterr()
    # some photos failed: 1, and the others are still written
    (photos / "broken.png").write_bytes(b"garbage")
    assert synth("--clean", photos, "--out", tmp_path / "s6") == 1
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "wrote 3 pairs" in captured.out


# --- embedded demo set ----------------------------------------------------------------------------------------


def test_demo_dataset_builds_once_and_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAPNET_CACHE", str(tmp_path / "cache"))
    root = demo_dataset(n=4, size=32, seed=1)
    assert root.parent == tmp_path / "cache" and root.name.startswith("demo-")
    assert [len(find_pairs(root / split)) for split in ("train", "test")] == [3, 1]
    files = snapshot(root)
    start = time.perf_counter()
    assert demo_dataset(n=4, size=32, seed=1) == root
    assert time.perf_counter() - start < 0.5
    assert snapshot(root) == files
    # Deterministic: the same parameters elsewhere give the same bytes; other parameters, another folder.
    assert snapshot(demo_dataset(tmp_path / "elsewhere", n=4, size=32, seed=1)) == files
    assert demo_dataset(n=4, size=32, seed=2) != root
    clean = read_image(root / "train" / "clean" / "demo_0000.png")
    assert clean.shape == (3, 32, 32) and clean.std() > 0.02  # not a flat image


def test_demo_dataset_resumes_and_checks_parameters(tmp_path: Path) -> None:
    root = demo_dataset(tmp_path / "demo", n=3, size=24)
    files = snapshot(root)
    (root / ".complete.json").unlink()
    (root / "train" / "rain" / "demo_0001.png").unlink()
    assert snapshot(demo_dataset(root, n=3, size=24)) == files
    with pytest.raises(ValueError, match="other parameters"):
        demo_dataset(root, n=3, size=24, seed=5)
    with pytest.raises(ValueError, match="n must be"):
        demo_dataset(tmp_path / "x", n=1)
