"""``sapnet derain-video`` and ``sapnet evaluate --task video`` (sapnet.evaluation.evaluate_video) on tiny clips."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import torch
from PIL import Image

import sapnet
from sapnet.cli.main import main
from sapnet.data import DatasetError, quantize_8bit
from sapnet.evaluation import (
    CLEAN,
    RAINY,
    SECONDS_PER_FRAME,
    VIDEO_METRICS,
    Clip,
    ClipVersion,
    Method,
    PerFrameWriter,
    VersionStrip,
    VideoRow,
    clip_frame_count,
    evaluate_video,
    find_clips,
    score_version,
    skip_clip,
    video_versions,
)
from sapnet.metrics import flicker_per_frame, psnr, warping_error_per_frame
from sapnet.video import (
    DEFAULT_FPS,
    FrameDerainer,
    FrameReadWarning,
    RecurrentDerainer,
    VideoDerainer,
    probe,
    read_frames,
)

pytestmark = pytest.mark.usefixtures("one_thread", "one_cv2_thread")

W, H, N = 64, 48, 3


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory, write_pan_clip: Callable[..., None]) -> Path:
    """Two clips of 3 frames, 64x48: ``a`` with ``clean/``, ``b`` (another seed) with ``rain/`` only."""
    root = tmp_path_factory.mktemp("clips")
    write_pan_clip(root / "a", 0, size=(W, H), frames=N)
    write_pan_clip(root / "b", 1, size=(W, H), frames=N, clean=False)
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
    if importlib.util.find_spec("av") is not None:  # a folder of frames has no rate: the default one, said
        assert main(["derain-video", rain, "-o", str(tmp_path / "x.mp4"), *base]) == 0
        assert f"has no frame rate: writing {tmp_path / 'x.mp4'} at {DEFAULT_FPS} fps" in capsys.readouterr().err
        assert probe(tmp_path / "x.mp4").fps == DEFAULT_FPS
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


# ------------------------------------------------- the pieces of evaluate_video that the video segmentation shares


def test_clip_version_sums_and_means(model: sapnet.DerainNet) -> None:
    derained = ClipVersion(VideoRow("tiny", "frame"), VideoDerainer(model, "frame"))
    derained.add({"psnr": 20.0, "warp": 0.5})
    derained.add({"psnr": 30.0})
    derained.add_seconds(1.5)
    derained.add_seconds(0.5)
    derained.row.frames = 4
    assert derained.sums == {"psnr": 50.0, "warp": 0.5} and derained.counts == {"psnr": 2, "warp": 1}
    assert derained.means() == {"psnr": 25.0, "warp": 0.5, SECONDS_PER_FRAME.key: 0.5}
    rainy = ClipVersion(VideoRow(RAINY))
    rainy.add({"psnr": 1.0})
    rainy.add_seconds(3.0)
    rainy.row.frames = 1
    assert rainy.means() == {"psnr": 1.0}  # no derainer, no seconds per frame
    assert ClipVersion(VideoRow("tiny", "frame"), VideoDerainer(model, "frame")).means() == {}  # nothing scored


@pytest.mark.parametrize(
    ("clean", "with_clean", "applies"),
    [(False, False, True), (False, True, True), (True, True, True), (True, False, False)],
)
def test_clip_version_applies_to(clean: bool, with_clean: bool, applies: bool) -> None:
    clip = Clip("a", Path("a/rain"), Path("a/clean") if with_clean else None)
    assert ClipVersion(VideoRow(CLEAN if clean else RAINY), clean=clean).applies_to(clip) is applies


@pytest.mark.parametrize("with_clean", [True, False])
def test_video_versions(model: sapnet.DerainNet, with_clean: bool) -> None:
    clips = [Clip("a", Path("a/rain")), Clip("b", Path("b/rain"), Path("b/clean") if with_clean else None)]
    logs: list[str] = []
    methods, versions, failed = video_versions(
        [Method("tiny", model), "none", "bad=/nonexistent/tiny.pt"], ["frame", "lowrank"], clips, logs.append, window=3
    )
    assert [m.name for m in methods] == ["tiny", "none"]
    labels = ["Rainy", "tiny (frame)", "tiny (lowrank)", "none (lowrank)", *(["Clean"] if with_clean else [])]
    assert [v.row.label for v in versions] == labels
    assert [v.clean for v in versions] == [False, False, False, False, *([True] if with_clean else [])]
    assert versions[0].derainer is None and all(v.derainer is not None for v in versions[1:4])
    assert [v.derainer.window for v in versions[1:4] if v.derainer is not None] == [1, 3, 3]
    assert [r.method for r in failed] == ["bad=/nonexistent/tiny.pt"] and failed[0].skipped[0][0] == "*"
    assert len(logs) == 1 and "skipping method bad" in logs[0]


@pytest.mark.parametrize("clean_frames", [None, N, N - 1])
def test_clip_frame_count(tmp_path: Path, write_pan_clip: Callable[..., None], clean_frames: int | None) -> None:
    write_pan_clip(tmp_path / "c", 0, size=(W, H), frames=N, clean=clean_frames is not None)
    if clean_frames == N - 1:
        (tmp_path / "c" / "clean" / "frame_000001.png").unlink()
    (clip,) = find_clips(tmp_path / "c")
    if clean_frames == N - 1:
        with pytest.raises(DatasetError, match=f"has {N} frames, .*clean {N - 1}"):
            clip_frame_count(clip)
    else:
        assert clip_frame_count(clip) == N


def test_skip_clip() -> None:
    versions = [ClipVersion(VideoRow(RAINY)), ClipVersion(VideoRow(CLEAN), clean=True)]
    logs: list[str] = []
    skip_clip(versions, Clip("a", Path("a/rain")), "broken", logs.append)
    assert logs == ["skipping clip a: broken"]
    assert [v.row.skipped for v in versions] == [[("a", "broken")], [("a", "broken")]]


def _warn_unreadable() -> tuple[list[dict[str, float]], torch.Tensor]:
    warnings.warn(FrameReadWarning(1, "frame_000002.png", "truncated"), stacklevel=1)
    return [{}], torch.zeros(3, 2, 2)


def _raise(error: Exception) -> tuple[list[dict[str, float]], torch.Tensor]:
    raise error


@pytest.mark.parametrize(
    ("score", "reason"),
    [
        (partial(_raise, DatasetError("too short")), "too short"),
        (partial(_raise, ValueError("bad mask")), "bad mask"),
        (partial(_raise, RuntimeError("out of memory")), "out of memory"),
        (_warn_unreadable, "frame 1 (frame_000002.png) skipped: truncated"),  # an unreadable frame is an error
    ],
)
def test_score_version_skips_on_errors(
    score: Callable[[], tuple[list[dict[str, float]], torch.Tensor]], reason: str
) -> None:
    version = ClipVersion(VideoRow("tiny", "fuse"))
    logs: list[str] = []
    assert score_version(version, Clip("a", Path("a/rain")), score, logs.append) is None
    assert logs == [f"skipping tiny (fuse) on clip a: {reason}"]
    assert version.row.skipped == [("a", reason)] and version.row.clips == 0 and version.row.frames == 0


def test_score_version_counts_and_passes_other_errors_on() -> None:
    version = ClipVersion(VideoRow(RAINY))
    first = torch.rand(3, 2, 2)
    values = [{"psnr": 1.0}, {"psnr": 2.0}]
    assert score_version(version, Clip("a", Path("a/rain")), lambda: (values, first), print) == (values, first)
    assert version.row.clips == 1 and version.row.frames == 2 and not version.row.skipped
    with pytest.raises(TypeError, match="a bug"):
        score_version(version, Clip("b", Path("b/rain")), partial(_raise, TypeError("a bug")), print)


def test_per_frame_writer(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "per_frame.csv"
    with PerFrameWriter(path, ["psnr", "warp"]) as writer:
        assert path.read_text().splitlines() == ["method,mode,clip,frame,psnr,warp"]  # the header at once
        writer.write_clip(
            ClipVersion(VideoRow("tiny", "fuse")),
            Clip("a", Path("a/rain")),
            [{"psnr": 1.5}, {"psnr": 2.0, "warp": 0.25}],
        )
        writer.write_clip(ClipVersion(VideoRow(RAINY)), Clip("b", Path("b/rain")), [{"warp": 0.5}])
    assert writer.rows == 3
    assert list(csv.reader(path.open())) == [
        ["method", "mode", "clip", "frame", "psnr", "warp"],
        ["tiny", "fuse", "a", "0", "1.5", ""],
        ["tiny", "fuse", "a", "1", "2.0", "0.25"],
        ["Rainy", "", "b", "0", "", "0.5"],
    ]


@pytest.mark.parametrize("clips", [0, 1, 3])
def test_version_strip(tmp_path: Path, clips: int) -> None:
    versions = [
        ClipVersion(VideoRow(RAINY)),
        ClipVersion(VideoRow("tiny", "frame")),
        ClipVersion(VideoRow(CLEAN), clean=True),
    ]
    strip = VersionStrip(versions, clips)
    first, second = torch.full((3, 4, 6), 0.5), torch.full((3, 4, 6), 0.25)
    strip.add(versions[2], second)
    strip.add(versions[0], first)
    assert strip.end_clip() is True
    assert strip.end_clip() is False  # a clip on which no version was scored: no row
    strip.add(versions[1], first)
    assert strip.end_clip() is True
    assert len(strip.rows) == min(clips, 2)
    if clips:
        row = strip.rows[0]
        assert row[0] is first and row[2] is second and torch.equal(row[1], torch.zeros(3, 4, 6))  # black: not scored
    if clips > 1:
        assert torch.equal(strip.rows[1][0], torch.zeros(3, 4, 6)) and strip.rows[1][1] is first
    assert strip.save(tmp_path / "strip.png") is (clips > 0)
    assert (tmp_path / "strip.png").is_file() is (clips > 0)
