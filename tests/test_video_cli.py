"""``sapnet derain-video`` and ``sapnet evaluate --task video`` (sapnet.evaluation.evaluate_video) on tiny clips."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest
import torch
from PIL import Image

import sapnet
from sapnet.cli.main import main
from sapnet.data import quantize_8bit, write_image
from sapnet.evaluation import CLEAN, RAINY, VIDEO_METRICS, evaluate_video, find_clips
from sapnet.metrics import flicker_per_frame, psnr, warping_error_per_frame
from sapnet.video import FrameDerainer, RecurrentDerainer, VideoDerainer, read_frames, render_clip

pytestmark = pytest.mark.usefixtures("one_thread", "one_cv2_thread")

W, H, N = 64, 48, 3


@pytest.fixture(scope="module")
def one_cv2_thread() -> Iterator[None]:
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    yield
    cv2.setNumThreads(before)


@pytest.fixture(scope="module")
def model() -> sapnet.DerainNet:
    torch.manual_seed(0)
    return sapnet.create_model("prenet", stages=2, channels=8).eval()


@pytest.fixture(scope="module")
def ckpt(model: sapnet.DerainNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    sapnet.save_model(model, path)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two clips of 3 frames, 64x48: ``a`` with ``clean/``, ``b`` (another seed) with ``rain/`` only."""
    root = tmp_path_factory.mktemp("clips")
    photo = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 164, 164, generator=torch.Generator().manual_seed(1)), 5, 1)
    photo = ((photo[0] - 0.5) * 3 + 0.5).clamp(0, 1)
    for name, seed, with_clean in (("a", 0, True), ("b", 1, False)):
        rainy, clean = render_clip(photo, "pan", size=(W, H), frames=N, preset="light", seed=seed)
        for i in range(N):
            write_image(rainy[i], root / name / "rain" / f"frame_{i + 1:06d}.png")
            if with_clean:
                write_image(clean[i], root / name / "clean" / f"frame_{i + 1:06d}.png")
    return root


def _frames(folder: Path) -> list[torch.Tensor]:
    return list(read_frames(folder))


# ------------------------------------------------------------------------------------------- sapnet derain-video


def test_folder_to_folder_is_the_derainer_frame_for_frame(
    clips: Path, ckpt: Path, model: sapnet.DerainNet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["derain-video", str(clips / "a" / "rain"), "-o", str(out), "--mode", "fuse", "--window", "3"]
    assert main([*argv, "--model", str(ckpt), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {N} frames to {out}" in printed and "s per frame" in printed and "window 3" in printed
    assert sorted(p.name for p in out.iterdir()) == [f"frame_{i:06d}.png" for i in range(1, N + 1)]
    expected = list(VideoDerainer(model, "fuse", window=3).run(read_frames(clips / "a" / "rain")))
    for got, want in zip(_frames(out), expected, strict=True):
        assert torch.equal(got, quantize_8bit(want, "round"))  # what a PNG stores


def test_folder_to_mp4(clips: Path, ckpt: Path, model: sapnet.DerainNet, tmp_path: Path) -> None:
    pytest.importorskip("av", reason="PyAV is not installed (pip install sapnet[video])")
    rain = clips / "a" / "rain"
    lossless = tmp_path / "lossless.mp4"
    base = ["derain-video", str(rain), "--mode", "frame", "--model", str(ckpt), "--no-progress", "--fps", "10"]
    assert main([*base, "-o", str(lossless), "--lossless"]) == 0
    expected = [quantize_8bit(f, "round") for f in FrameDerainer(model).run(read_frames(rain))]
    got = _frames(lossless)
    assert len(got) == N and all(torch.equal(g, e) for g, e in zip(got, expected, strict=True))
    lossy = tmp_path / "lossy.mp4"
    assert main([*base, "-o", str(lossy), "--crf", "30"]) == 0
    assert 0 < lossy.stat().st_size < lossless.stat().st_size
    assert all(g.shape == (3, H, W) for g in _frames(lossy))
    assert main([*base, "-o", str(lossy)]) == 2  # exists
    assert main([*base, "-o", str(lossy), "--overwrite"]) == 0


def test_lowrank_without_a_network(clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rain = clips / "a" / "rain"
    out = tmp_path / "lr"
    argv = ["derain-video", str(rain), "-o", str(out), "--model", "none", "--mode", "lowrank", "--window", "3"]
    assert main([*argv, "--no-progress"]) == 0
    expected = VideoDerainer(None, "lowrank", window=3).run(read_frames(rain))
    for got, want in zip(_frames(out), expected, strict=True):
        assert torch.equal(got, quantize_8bit(want, "round"))
    assert "(mode lowrank, window 3)" in capsys.readouterr().out


def test_recurrent_mode(
    clips: Path, ckpt: Path, model: sapnet.DerainNet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rain = clips / "a" / "rain"
    out = tmp_path / "rec"
    assert (
        main(["derain-video", str(rain), "-o", str(out), "--model", str(ckpt), "--mode", "recurrent", "--no-progress"])
        == 0
    )
    assert f"wrote {N} frames to {out} (mode recurrent): " in capsys.readouterr().out
    expected = list(RecurrentDerainer(model).run(read_frames(rain)))
    framed = list(FrameDerainer(model).run(read_frames(rain)))
    for t, (got, want) in enumerate(zip(_frames(out), expected, strict=True)):
        assert torch.equal(got, quantize_8bit(want, "round"))
        assert torch.equal(want, framed[t]) == (t == 0)  # the state is carried after the first frame
    # a network without a recurrent cell: refused before any frame is derained
    torch.manual_seed(0)
    plain = tmp_path / "plain.pt"
    sapnet.save_model(sapnet.create_model("prenet", stages=2, channels=8, recurrent="none"), plain)
    argv = ["derain-video", str(rain), "-o", str(tmp_path / "none"), "--model", str(plain), "--mode", "recurrent"]
    assert main(argv) == 2
    assert "--mode recurrent: needs a network with a recurrent cell" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "none", "--mode", "fuse"], "--mode fuse needs a derain network"),
        (["--model", "none", "--mode", "frame"], "--mode frame needs a derain network"),
        (["--mode", "frame", "--window", "3"], "--mode frame has no window"),
        (["--mode", "recurrent", "--window", "3"], "--mode recurrent has no window"),
        (["--mode", "lowrank", "--window", "1"], "--mode lowrank needs --window 3 or more"),
        (["--mode", "fuse", "--window", "4"], "--window must be odd"),
        (["--crf", "20"], "--crf apply to an .mp4 OUT"),
        (["--fps", "25"], "--fps apply to an .mp4 OUT"),
    ],
)
def test_bad_mode_window_and_option_combinations(
    extra: list[str], message: str, clips: Path, ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["derain-video", str(clips / "a" / "rain"), "-o", str(tmp_path / "out"), "--model", str(ckpt), *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_input_and_output_errors(clips: Path, ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rain = str(clips / "a" / "rain")
    base = ["--model", str(ckpt), "--mode", "frame", "--no-progress"]
    assert main(["derain-video", str(tmp_path / "missing"), "-o", str(tmp_path / "o"), *base]) == 2
    assert "no such video file or folder of frames" in capsys.readouterr().err
    out = tmp_path / "used"
    out.mkdir()
    (out / "frame_000001.png").write_bytes(b"old")
    assert main(["derain-video", rain, "-o", str(out), *base]) == 2
    assert "exists and is not empty (--overwrite replaces it)" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["frame_000001.png"]
    assert main(["derain-video", rain, "-o", str(out), *base, "--overwrite"]) == 0
    assert len(_frames(out)) == N and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    (out / "notes.txt").write_text("mine")
    assert main(["derain-video", rain, "-o", str(out), *base, "--overwrite"]) == 2
    assert "holds more than image frames" in capsys.readouterr().err
    assert main(["derain-video", rain, "-o", rain, *base, "--overwrite"]) == 2
    assert "is (or holds) the input" in capsys.readouterr().err
    assert main(["derain-video", rain, "-o", str(tmp_path / "x.avi"), *base]) == 2
    assert "write to an .mp4 file or to a folder" in capsys.readouterr().err
    assert main(["derain-video", rain, "-o", str(tmp_path / "x.mp4"), *base]) == 2
    assert "give --fps" in capsys.readouterr().err
    assert main(["derain-video", rain, "-o", str(tmp_path / "o"), "--model", str(tmp_path / "nope.pt")]) == 2
    assert not (tmp_path / "o").exists()


def test_pyav_missing(
    clips: Path, ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # import av now raises ImportError
    base = ["--model", str(ckpt), "--mode", "frame"]
    argv = ["derain-video", str(clips / "a" / "rain"), "-o", str(tmp_path / "o.mp4"), "--fps", "10", *base]
    assert main(argv) == 2
    assert "needs PyAV" in capsys.readouterr().err
    video = tmp_path / "in.mp4"
    video.write_bytes(b"not read")
    assert main(["derain-video", str(video), "-o", str(tmp_path / "o"), *base]) == 2
    assert "needs PyAV" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ evaluate --task video


def _table(out: Path) -> dict[tuple[str, str], dict[str, object]]:
    return {(r["method"], r["mode"]): r for r in json.loads((out / "table.json").read_text())}


def test_video_table_with_and_without_clean(
    clips: Path, ckpt: Path, model: sapnet.DerainNet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval"
    argv = ["evaluate", "--task", "video", "--clips", str(clips), "--model", str(ckpt), "--window", "3"]
    assert main([*argv, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "NIQE left out" in captured.err  # 64x48 frames are smaller than NIQE's two 96x96 blocks
    md = (out / "table.md").read_text()
    assert md in captured.out
    header = md.split("\n| method")[1].split("\n")[0]
    for label in ("PSNR ↑", "SSIM ↑", "warp err ↓", "tOF ↓", "flicker ↓", "s/frame ↓"):
        assert label in header
    assert "NIQE" not in header
    rows = _table(out)
    assert list(rows) == [(RAINY, ""), ("tiny", "frame"), ("tiny", "fuse"), (CLEAN, "")]
    rainy, clean, fuse = rows[(RAINY, "")], rows[(CLEAN, "")], rows[("tiny", "fuse")]
    assert clean["psnr"] == "inf" and clean["ssim"] == 1.0 and clean["tof"] == 0.0 and clean["clips"] == 1
    assert isinstance(rainy["psnr"], float) and 20 < rainy["psnr"] < 60
    assert rainy["clips"] == 2 and rainy["frames"] == 2 * N and rainy["seconds_per_frame"] is None
    assert isinstance(fuse["seconds_per_frame"], float) and fuse["seconds_per_frame"] > 0
    assert isinstance(rainy["flicker"], float) and rainy["flicker"] > 0  # clip b, without clean/

    # per frame: the rows of the frame mode are the network's quantised outputs scored against clean/
    with (out / "per_frame.csv").open() as f:
        per_frame = list(csv.DictReader(f))
    assert len(per_frame) == 2 * N * 3 + N  # Rainy and two modes on both clips, Clean on clip a
    rain_a = _frames(clips / "a" / "rain")
    clean_a = _frames(clips / "a" / "clean")
    frame_rows = [r for r in per_frame if r["mode"] == "frame" and r["clip"] == "a"]
    for row, x, y in zip(frame_rows, rain_a, clean_a, strict=True):
        want = psnr(quantize_8bit(sapnet.derain(x, model), "floor")[None], y[None]).item()
        assert float(row["psnr"]) == pytest.approx(want, abs=1e-9)
    rainy_rows = [r for r in per_frame if r["method"] == RAINY]
    assert [r["warp"] for r in rainy_rows[:N]][1:] == [str(v) for v in warping_error_per_frame(rain_a, clean_a)]
    assert rainy_rows[0]["warp"] == "" and rainy_rows[N]["flicker"] == ""
    b = [float(r["flicker"]) for r in rainy_rows[N + 1 :]]
    assert b == pytest.approx(flicker_per_frame(_frames(clips / "b" / "rain"), _frames(clips / "b" / "rain")))

    with Image.open(out / "strip.png") as strip:  # 4 columns of 320 px, 2 clips of 64x48 frames at 320 x 240
        assert strip.size == (4 * 320 + 5 * 4, 18 + 2 * 240 + 3 * 4)


def test_one_clip_without_clean_is_scored_by_flicker(clips: Path, ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    argv = ["evaluate", "--video", "--clips", str(clips / "b"), "--model", f"net={ckpt}", "--modes", "fuse"]
    assert main([*argv, "--window", "3", "--frames", "2", "--out", str(out)]) == 0
    rows = _table(out)
    assert list(rows) == [(RAINY, ""), ("net", "fuse")]  # no Clean row
    for row in rows.values():
        assert set(row) == {"method", "mode", "clips", "frames", "flicker", "seconds_per_frame", "skipped"}
        assert row["frames"] == 2 and isinstance(row["flicker"], float)


def test_recurrent_mode_in_the_video_table(clips: Path, ckpt: Path, tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    plain = tmp_path / "plain.pt"
    sapnet.save_model(sapnet.create_model("prenet", stages=2, channels=8, recurrent="none"), plain)
    out = tmp_path / "eval"
    argv = ["evaluate", "--video", "--clips", str(clips / "a"), "--model", f"net={ckpt}", "--model", f"plain={plain}"]
    assert main([*argv, "--modes", "frame", "recurrent", "--metrics", "psnr", "warp", "--out", str(out)]) == 1
    assert "skipping plain in mode recurrent: needs a network with a recurrent cell" in capsys.readouterr().err
    rows = _table(out)
    assert list(rows) == [(RAINY, ""), ("net", "frame"), ("net", "recurrent"), ("plain", "frame"), (CLEAN, ""),
                          ("plain", "recurrent")]  # fmt: skip
    assert rows[("net", "recurrent")]["frames"] == N and isinstance(rows[("net", "recurrent")]["psnr"], float)
    assert rows[("plain", "recurrent")]["skipped"] == 1


def test_metric_subset_and_lowrank_without_a_network(clips: Path, tmp_path: Path) -> None:
    result = evaluate_video(
        clips / "a", ["none"], ["frame", "lowrank"], ["psnr"], tmp_path, window=3, progress=False, log=lambda _: None
    )
    assert [(r.method, r.mode) for r in result.rows] == [(RAINY, ""), ("none", "lowrank"), (CLEAN, "")]
    assert set(result.rows[1].values) == {"psnr", "seconds_per_frame"}
    assert result.rows[1].values["psnr"] > result.rows[0].values["psnr"] - 3  # not wrecked by the subtraction
    assert not result.skipped and result.files["strip"].is_file()


def test_find_clips(clips: Path, tmp_path: Path) -> None:
    found = find_clips(clips)
    assert [(c.name, c.clean is not None) for c in found] == [("a", True), ("b", False)]
    assert [c.name for c in find_clips(clips / "a")] == ["a"]
    with pytest.raises(sapnet.data.DatasetError, match="no clips"):
        find_clips(tmp_path)


def test_clip_with_mismatched_clean_is_skipped(clips: Path, tmp_path: Path, capsys) -> None:
    clip = tmp_path / "bad"
    for side in ("rain", "clean"):
        for i in range(N if side == "rain" else N - 1):
            (clip / side).mkdir(parents=True, exist_ok=True)
            (clip / side / f"frame_{i + 1:06d}.png").write_bytes(
                (clips / "a" / side / f"frame_{i + 1:06d}.png").read_bytes()
            )
    argv = ["evaluate", "--task", "video", "--clips", str(clip), "--model", "none", "--modes", "lowrank"]
    assert main([*argv, "--window", "3", "--out", str(tmp_path / "o")]) == 1
    assert "skipping clip bad" in capsys.readouterr().err
    assert "Skipped:" in (tmp_path / "o" / "table.md").read_text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--modes", "lowrank", "--window", "1"], "needs a window of at least 3"),
        (["--modes", "fuse", "--window", "4"], "odd number of frames"),
        (["--model", "none"], "runs only in mode lowrank"),
        (["--metrics", "brisque"], "unknown video metric 'brisque'"),
        (["--dataset", "x"], "not --dataset"),
        (["--limit", "2"], "--frames N"),
        (["--save-outputs"], "--save-outputs is for --task restoration"),
        (["--task", "detection"], "--video is --task video"),
    ],
)
def test_video_usage_errors(
    extra: list[str], message: str, clips: Path, ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = [] if "--model" in extra else ["--model", str(ckpt)]
    argv = ["evaluate", "--video", "--clips", str(clips), *models, "--out", str(tmp_path / "o"), *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("task", "extra", "named"),
    [
        ("restoration", ["--clips", "c"], ["--clips", "--task video"]),
        ("restoration", ["--modes", "fuse", "--window", "3"], ["--modes", "--window", "--task video"]),
        ("detection", ["--frames", "2"], ["--frames", "--task video"]),
        ("segmentation", ["--metrics", "psnr"], ["--metrics", "--task restoration / video"]),
    ],
)
def test_other_tasks_refuse_video_options(
    task: str, extra: list[str], named: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["evaluate", "--task", task, "--dataset", str(tmp_path), "--out", str(tmp_path / "o"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"--task {task} does not use" in err and all(n in err for n in named), err


def test_restoration_refuses_video_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--dataset", str(tmp_path), "--metrics", "tof", "--out", str(tmp_path / "o")]) == 2
    assert "unknown metric 'tof'" in capsys.readouterr().err
    assert set(VIDEO_METRICS) == {"psnr", "ssim", "warp", "tof", "flicker", "niqe"}
