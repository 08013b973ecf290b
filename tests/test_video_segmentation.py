"""Derain-then-segment on video: sapnet.downstream.evaluate_video_segmentation and ``sapnet evaluate --task
segmentation --clips`` on tiny synthetic clips, with a fake threshold segmenter and a random torchvision one."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sapnet
from sapnet.cli.main import main
from sapnet.downstream import ClassMap, evaluate_video_segmentation, segmentation_scores
from sapnet.evaluation import CLEAN, RAINY, Method, find_clips
from sapnet.metrics import label_instability_per_frame
from sapnet.video import read_frames

pytestmark = pytest.mark.usefixtures("one_thread", "one_cv2_thread")

W, H, N = 64, 48, 3
THREE = ClassMap("three", ("dark", "bright", "spare"))


class ThresholdSegmenter:
    """Class 1 where the image is brighter than ``level``, 0 elsewhere; a fake :class:`Segmenter`."""

    name = "threshold"
    classes = ("dark", "bright", "spare")

    def __init__(self, level: float = 0.5) -> None:
        self.level = level

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return (image.mean(0) > self.level).long()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory, write_pan_clip: Callable[..., None]) -> Path:
    """Three clips of 3 frames, 64x48, a camera panning over one photo: ``a`` with ``clean/`` (pseudo ground
    truth), ``b`` with ``clean/`` and ``masks/`` (the threshold segmenter's labels of the clean frames, one pixel
    set to the unknown value 9), ``c`` with ``rain/`` only."""
    root = tmp_path_factory.mktemp("clips")
    for name, seed in (("a", 0), ("b", 1), ("c", 2)):
        write_pan_clip(root / name, seed, size=(W, H), frames=N, clean=name != "c")
    (root / "b" / "masks").mkdir()
    for i, frame in enumerate(read_frames(root / "b" / "clean")):
        mask = ThresholdSegmenter()(frame).numpy().astype(np.uint8)
        if i == 0:
            mask[0, 0] = 9
        Image.fromarray(mask, mode="L").save(root / "b" / "masks" / f"frame_{i + 1:06d}.png")
    return root


def _frames(folder: Path) -> list[torch.Tensor]:
    return list(read_frames(folder))


def _rows(result) -> dict[tuple[str, str], dict[str, float]]:
    return {(r.method, r.mode): r.values for r in result.rows}


def test_find_clips_sees_masks(clips: Path) -> None:
    found = {c.name: c for c in find_clips(clips)}
    assert found["b"].masks == clips / "b" / "masks" and found["a"].masks is None and found["c"].clean is None


def test_scores_against_pseudo_ground_truth_and_masks(clips: Path, tmp_path: Path) -> None:
    seg = ThresholdSegmenter()
    result = evaluate_video_segmentation(clips, seg, [], ["frame"], tmp_path, class_map=THREE, progress=False)
    rows = _rows(result)
    assert list(rows) == [(RAINY, ""), (CLEAN, "")]
    # Clean against its own labels (clip a) and against masks made from them (clip b): 1 by construction
    assert rows[(CLEAN, "")]["miou"] == 1.0 and rows[(CLEAN, "")]["mpa"] == 1.0
    assert result.problems == [
        "c: no masks/ and no clean/: no mIoU / mPA, label instability only",
        "mask values outside the class map, ignored: 9 (2 px)",  # frame 0 of clip b, read by 2 versions
    ]
    with (tmp_path / "per_frame.csv").open() as f:
        per_frame = list(csv.DictReader(f))
    with (tmp_path / "per_clip.csv").open() as f:
        per_clip = list(csv.DictReader(f))
    assert len(per_frame) == 3 * N + 2 * N and len(per_clip) == 5  # Rainy on 3 clips, Clean on 2
    # the Rainy row, clip a, frame by frame: the segmenter on the rainy frames against it on the clean frames
    rain_a, clean_a = _frames(clips / "a" / "rain"), _frames(clips / "a" / "clean")
    mine = [r for r in per_frame if r["method"] == RAINY and r["clip"] == "a"]
    for row, x, y in zip(mine, rain_a, clean_a, strict=True):
        assert float(row["miou"]) == pytest.approx(segmentation_scores(seg(x), seg(y), 3)["miou"], abs=1e-12)
    expected = label_instability_per_frame([seg(x) for x in rain_a], clean_a)  # flow on the clean frames
    assert [float(r["instability"]) for r in mine[1:]] == pytest.approx(expected) and mine[0]["instability"] == ""
    # clip c has no clean frames: flow on its rainy frames, no mIoU
    rain_c = _frames(clips / "c" / "rain")
    row_c = next(r for r in per_clip if r["method"] == RAINY and r["clip"] == "c")
    assert row_c["miou"] == "" and float(row_c["instability"]) == pytest.approx(
        float(np.mean(label_instability_per_frame([seg(x) for x in rain_c], rain_c)))
    )
    # the table: means over clips of the per-clip means
    clip_means = [float(r["instability"]) for r in per_clip if r["method"] == RAINY]
    assert rows[(RAINY, "")]["instability"] == pytest.approx(sum(clip_means) / 3)
    miou_means = [float(r["miou"]) for r in per_clip if r["method"] == RAINY and r["miou"]]
    assert len(miou_means) == 2 and rows[(RAINY, "")]["miou"] == pytest.approx(sum(miou_means) / 2)
    md = (tmp_path / "table.md").read_text()
    assert "label instability ↓" in md and "1 with masks/ (three classes)" in md and "PSEUDO ground truth" in md
    assert json.loads((tmp_path / "table.json").read_text())[0]["method"] == RAINY
    with Image.open(tmp_path / "strip.png") as strip:
        assert strip.size == (2 * 320 + 3 * 4, 18 + 3 * 240 + 4 * 4)


@pytest.mark.parametrize("pseudo_gt", [False, True])
def test_derainers_in_each_mode(clips: Path, model: sapnet.DerainNet, pseudo_gt: bool) -> None:
    modes = ["frame", "recurrent", "fuse"]
    result = evaluate_video_segmentation(
        clips / "b", ThresholdSegmenter(), [Method("model", model)], modes, None, class_map=THREE,
        pseudo_gt=pseudo_gt, window=3, progress=False, log=lambda _: None,
    )  # fmt: skip
    rows = _rows(result)
    assert list(rows) == [(RAINY, ""), ("model", "frame"), ("model", "recurrent"), ("model", "fuse"), (CLEAN, "")]
    assert all(r.clips == 1 and r.frames == N for r in result.rows)
    for key, values in rows.items():
        assert set(values) >= {"miou", "mpa", "instability"}, key
        assert 0 <= values["miou"] <= 1 and 0 <= values["instability"] <= 1
        assert ("seconds_per_frame" in values) == (key[0] == "model")
    # pseudo ground truth ignores the masks (and so their unknown value)
    assert result.problems == ([] if pseudo_gt else ["mask values outside the class map, ignored: 9 (5 px)"])


def test_a_clip_whose_masks_do_not_match_is_skipped(clips: Path, tmp_path: Path) -> None:
    import shutil

    clip = tmp_path / "short"
    shutil.copytree(clips / "b", clip)
    (clip / "masks" / "frame_000003.png").unlink()
    logged: list[str] = []
    result = evaluate_video_segmentation(
        clip, ThresholdSegmenter(), [], ["frame"], None, class_map=THREE, progress=False, log=logged.append
    )
    assert result.skipped and all(r.clips == 0 for r in result.rows)
    assert any("has 3 frames" in m and "2 masks" in m for m in logged)


def test_setup_errors(clips: Path) -> None:
    with pytest.raises(ValueError, match="has masks/: give the class map"):
        evaluate_video_segmentation(clips, ThresholdSegmenter(), progress=False)
    with pytest.raises(ValueError, match="predicts 3 classes but the class map voc has 21"):
        evaluate_video_segmentation(clips, ThresholdSegmenter(), class_map=sapnet.downstream.CLASS_MAPS["voc"])
    with pytest.raises(ValueError, match="unknown modes"):
        evaluate_video_segmentation(clips, ThresholdSegmenter(), modes=["slow"], pseudo_gt=True)
    with pytest.raises(ValueError, match="frames must be"):
        evaluate_video_segmentation(clips, ThresholdSegmenter(), frames=0, pseudo_gt=True)


# ------------------------------------------------------------------------------------------------------- CLI


def test_cli_segmentation_on_clips(clips: Path, ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = ["evaluate", "--task", "segmentation", "--clips", str(clips), "--segmenter", "lraspp_mobilenet_v3_large",
            "--weights", "random", "--pseudo-gt", "--model", f"net={ckpt}", "--modes", "frame", "recurrent",
            "--frames", "2", "--out", str(out)]  # fmt: skip
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 1, captured.err  # clip c has no ground truth: said as a problem
    assert "RANDOM weights" in captured.err and "demo set" not in captured.err
    assert "Video segmentation on 3 clips" in captured.out and "| label instability ↓ |" in captured.out
    rows = {(r["method"], r["mode"]): r for r in json.loads((out / "table.json").read_text())}
    assert list(rows) == [(RAINY, ""), ("net", "frame"), ("net", "recurrent"), (CLEAN, "")]
    assert rows[(CLEAN, "")]["miou"] == 1.0 and rows[("net", "recurrent")]["frames"] == 3 * 2
    assert all((out / name).is_file() for name in ("table.md", "per_frame.csv", "per_clip.csv", "strip.png"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--clips", "{clips}", "--dataset", "x"], "--task segmentation --clips does not use --dataset"),
        (["--clips", "{clips}", "--rain", "light"], "does not use --rain"),
        (["--clips", "{clips}", "--limit", "2"], "does not use --limit"),
        (["--modes", "fuse"], "--modes apply to clips: --task segmentation --clips DIR"),
        (["--frames", "2", "--window", "3"], "--window, --frames apply to clips"),
        (["--clips", "{clips}", "--modes", "lowrank", "--model", "none", "--window", "4", "--pseudo-gt",
          "--segmenter", "lraspp_mobilenet_v3_large", "--weights", "random"], "window must be an odd number"),
    ],
)  # fmt: skip
def test_cli_clip_option_errors(
    extra: list[str], message: str, clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["evaluate", "--task", "segmentation", "--out", str(tmp_path), *(a.format(clips=clips) for a in extra)]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_detection_refuses_clips(clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--task", "detection", "--clips", str(clips), "--out", str(tmp_path)]) == 2
    assert "--clips is for --task video / segmentation" in capsys.readouterr().err
