"""sapnet.video (clip reading / writing, optical flow, warping) and sapnet.metrics.temporal, on tiny synthetic clips."""

from __future__ import annotations

import sys
import warnings
from fractions import Fraction
from pathlib import Path
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F

from sapnet.data import DatasetError, DatasetNotFoundError, ImageReadError, quantize_8bit, read_image, write_image
from sapnet.metrics import (
    TOF,
    Flicker,
    LabelInstability,
    WarpingError,
    flicker,
    flicker_per_frame,
    label_instability,
    label_instability_per_frame,
    tof,
    tof_per_frame,
    warping_error,
    warping_error_per_frame,
)
from sapnet.video import (
    FrameReadWarning,
    FrameWriter,
    VideoInfo,
    consistency_mask,
    frame_name,
    luma_8bit,
    optical_flow,
    probe,
    read_frames,
    warp,
    write_frames,
)

pytestmark = pytest.mark.usefixtures("one_thread", "one_cv2_thread")

H, W = 48, 64


@pytest.fixture
def av() -> ModuleType:
    return pytest.importorskip("av", reason="PyAV is not installed (pip install sapnet[video])")


def wave_texture(dx: float = 0.0, dy: float = 0.0, h: int = H, w: int = W) -> torch.Tensor:
    """A smooth RGB pattern of sines (3, h, w) in [0, 1], moved by (dx, dy) pixels exactly, sub-pixel included:
    ``wave_texture(dx, dy)(p) = wave_texture()(p - (dx, dy))``."""
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    x, y = x - dx, y - dy
    v = 0.5 + 0.15 * torch.sin(0.37 * x + 0.21 * y) + 0.12 * torch.sin(-0.17 * x + 0.43 * y + 1)
    v = v + 0.1 * torch.sin(0.29 * x - 0.31 * y + 2)
    return torch.stack([v, 0.8 * v + 0.1, 1 - v]).float()


def noise_texture(h: int, w: int, seed: int) -> torch.Tensor:
    """Blurred random noise (3, h, w) in [0, 1]: texture without repeats, that flow can follow."""
    g = torch.Generator().manual_seed(seed)
    n = torch.rand(1, 3, h, w, generator=g)
    k = torch.exp(-(torch.arange(-6, 7, dtype=torch.float32) ** 2) / 8)
    k = (k / k.sum()).view(1, 1, 1, -1).expand(3, 1, 1, -1)
    n = F.conv2d(F.pad(n, (6, 6, 0, 0), mode="circular"), k, groups=3)
    n = F.conv2d(F.pad(n, (0, 0, 6, 6), mode="circular"), k.transpose(-1, -2), groups=3)
    return (0.5 + 0.2 * (n[0] - n.mean()) / n.std()).clamp(0, 1)


def constant_flow(u: float, v: float, h: int = H, w: int = W) -> torch.Tensor:
    return torch.tensor([u, v]).view(2, 1, 1).expand(2, h, w).clone()


def write_folder(folder: Path, frames: list[torch.Tensor]) -> list[Path]:
    folder.mkdir()
    return [write_image(f, folder / f"f{i}.png") for i, f in enumerate(frames)]


# -- optical flow and warping ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shift", [(2.0, 0.0), (0.0, -3.0), (1.5, -0.75), (-0.25, 0.5)])
def test_optical_flow_finds_a_known_shift(shift: tuple[float, float]) -> None:
    a, b = wave_texture(), wave_texture(*shift)  # b(p) = a(p - shift): the flow from a to b is the shift
    flow = optical_flow(a, b)
    assert flow.shape == (2, H, W) and flow.dtype == torch.float32
    interior = flow[:, 8:-8, 8:-8]
    assert (interior[0] - shift[0]).abs().max() < 0.15
    assert (interior[1] - shift[1]).abs().max() < 0.15


def test_optical_flow_of_a_frame_to_itself_is_zero() -> None:
    a = noise_texture(H, W, 0)
    assert optical_flow(a, a).abs().max() < 0.05


def test_optical_flow_checks_its_frames() -> None:
    with pytest.raises(ValueError, match="one shape"):
        optical_flow(torch.rand(3, 8, 8), torch.rand(3, 8, 9))
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        optical_flow(torch.rand(2, 8, 8), torch.rand(2, 8, 8))


def test_luma_8bit() -> None:
    x = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1).expand(3, 2, 2)
    y = luma_8bit(x)
    assert y.dtype == torch.uint8 and y.shape == (2, 2)
    assert torch.all(y == round(0.299 * 255))
    assert torch.all(luma_8bit(torch.full((1, 2, 2), 0.5)) == 128)


@pytest.mark.parametrize("shift", [(2.0, 0.0), (0.0, 3.0), (1.5, -0.75), (-2.25, 1.0)])
def test_warp_with_the_exact_flow_reproduces_the_frame(shift: tuple[float, float]) -> None:
    a, b = wave_texture(), wave_texture(*shift)
    out, valid = warp(b, constant_flow(*shift))
    assert out.shape == a.shape and valid.shape == (1, H, W) and valid.dtype == torch.bool
    err = ((out - a).abs() * valid).max()
    integer = all(float(s).is_integer() for s in shift)
    assert err < (1e-5 if integer else 0.02)  # bilinear interpolation of the sines, for sub-pixel shifts
    # exactly the samples that land outside the frame are invalid: |u| columns and |v| rows at one side
    cols = W - torch.ceil(torch.tensor(abs(shift[0])))
    rows = H - torch.ceil(torch.tensor(abs(shift[1])))
    assert int(valid.sum()) == int(cols * rows)


def test_warp_is_batched_and_keeps_dtype() -> None:
    image = torch.rand(2, 4, 8, 10, dtype=torch.float64)
    out, valid = warp(image, torch.zeros(2, 2, 8, 10))
    assert out.dtype == torch.float64 and valid.shape == (2, 1, 8, 10) and bool(valid.all())
    assert torch.allclose(out, image)
    with pytest.raises(ValueError, match="does not match"):
        warp(image, torch.zeros(2, 2, 8, 9))


def test_consistency_mask_with_given_flows() -> None:
    fw = constant_flow(3, 0)
    bw = constant_flow(-3, 0)
    bw[:, 10:20, 30:40] = 0  # in b, something static covers where these pixels of a went: they are occluded
    mask = consistency_mask(fw, bw)
    assert mask.shape == (1, H, W) and mask.dtype == torch.bool
    expected = torch.ones(H, W, dtype=torch.bool)
    expected[:, W - 3 :] = False  # they leave the frame
    expected[10:20, 27:37] = False  # p + (3, 0) lands in the covered region
    assert torch.equal(mask[0], expected)
    assert bool(consistency_mask(fw[None], bw[None])[0].eq(mask).all())


def test_consistency_mask_flags_an_occluded_region() -> None:
    background, thing = noise_texture(H, W, 0), noise_texture(24, 20, 1)

    def frame(x0: int) -> torch.Tensor:
        im = background.clone()
        im[:, 12:36, x0 : x0 + 20] = thing
        return im

    a, b = frame(14), frame(20)  # the thing moves 6 px right, covering columns 34..39 of a's background
    mask = consistency_mask(optical_flow(a, b), optical_flow(b, a))[0]
    covered = ~mask[14:34, 34:40]
    far = ~mask[:, 44:60]  # static background away from the thing
    assert covered.float().mean() > 0.3
    assert far.float().mean() < 0.02


# -- temporal metrics -----------------------------------------------------------------------------------------


def moving_clip(n: int = 4, step: float = 1.0) -> list[torch.Tensor]:
    return [wave_texture(step * t, 0.5 * step * t) for t in range(n)]


def video_clip(n: int = 5) -> list[torch.Tensor]:
    """A moving clip in soft colours (RGB proportional to one pattern): H.264 keeps colour at half resolution, so
    the sharp colour edges of :func:`wave_texture` would be blurred more than the codec's quality shows."""
    tint = torch.tensor([1.0, 0.9, 0.8]).view(3, 1, 1)
    return [f[:1] * tint + 0.05 for f in moving_clip(n)]


def flickering(frames: list[torch.Tensor], amount: float = 0.1) -> list[torch.Tensor]:
    return [f + (amount if t % 2 else 0.0) for t, f in enumerate(frames)]


def test_a_static_clip_has_no_warping_error_or_flicker() -> None:
    clip = [noise_texture(H, W, 0)] * 4
    assert warping_error(clip) < 1e-8
    assert flicker(clip) < 1e-6
    assert tof(clip, clip) == 0.0


def test_flicker_is_measured_in_image_units() -> None:
    static = [wave_texture() * 0.8] * 4
    flashing = flickering(static, 0.1)
    assert flicker(flashing, static) == pytest.approx(0.1, abs=1e-6)  # flow of the static inputs: exactly 0
    assert warping_error(flashing, static) == pytest.approx(3 * 0.1**2, abs=1e-6)  # |(0.1, 0.1, 0.1)|^2
    assert flicker_per_frame(flashing, static) == pytest.approx([0.1] * 3, abs=1e-6)


def test_a_flickering_clip_scores_worse_than_a_steady_one() -> None:
    steady = [f * 0.8 for f in moving_clip()]
    flashing = flickering(steady, 0.1)
    for metric in (warping_error, flicker):
        assert metric(steady) < 0.1 * metric(flashing), metric.__name__
        assert metric(steady, steady) < 0.1 * metric(flashing, steady), metric.__name__
    assert warping_error(steady) < 1e-3 and flicker(steady) < 0.02


def test_tof_measures_wrong_motion() -> None:
    truth = moving_clip(4, step=2.0)  # moves (2, 1) px per frame
    frozen = [truth[0]] * 4
    assert tof(truth, truth) == 0.0
    assert tof(frozen, truth) == pytest.approx(1.5, abs=0.2)  # mean of |2 - 0| and |1 - 0|
    assert tof_per_frame(frozen, truth) == pytest.approx([1.5] * 3, abs=0.2)


def test_per_frame_values_and_streaming() -> None:
    clip = flickering([wave_texture() * 0.8] * 5, 0.1)
    values = warping_error_per_frame(clip)
    assert len(values) == 4
    assert warping_error(clip) == pytest.approx(sum(values) / 4)
    metric = WarpingError()
    assert metric.update(clip[0]) is None
    streamed = [metric.update(f) for f in clip[1:]]
    assert streamed == pytest.approx(values) and metric.compute() == pytest.approx(warping_error(clip))
    assert WarpingError()(iter(clip)) == pytest.approx(warping_error(clip))  # the module form, on a generator
    assert Flicker()(clip) == pytest.approx(flicker(clip))
    metric.reset()
    with pytest.raises(ValueError, match="at least 2 frames"):
        metric.compute()


def test_temporal_metrics_check_their_inputs() -> None:
    clip = moving_clip(3)
    with pytest.raises(ValueError, match="at least 2 frames"):
        warping_error(clip[:1])
    with pytest.raises(ValueError, match="reference clip ends after 2 frames"):
        warping_error(clip, clip[:2])
    with pytest.raises(ValueError, match="input clip is longer"):
        flicker(clip[:2], clip)
    with pytest.raises(ValueError, match="needs the reference frame"):
        TOF().update(clip[0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        flicker([c * 255 for c in clip])
    with pytest.raises(ValueError, match="shape"):
        warping_error([clip[0], clip[1][:, :40]])


def stripes(w: int, h: int = H, width: int = 8, classes: int = 4) -> torch.Tensor:
    """int64 (h, w) label map of vertical stripes ``width`` px wide, classes 0 .. ``classes - 1`` in turn."""
    return (torch.arange(w) // width % classes)[None].expand(h, w).clone()


def test_label_instability_of_constant_and_moving_labels_is_zero() -> None:
    frames = [noise_texture(H, W, 0)] * 4
    assert label_instability([torch.full((H, W), 3)] * 4, frames) == 0.0
    big, labels = noise_texture(H + 8, W + 12, 1), stripes(W + 12, H + 8)
    moving = [big[:, 2 * t : 2 * t + H, 3 * t : 3 * t + W] for t in range(4)]  # content moves (-3, -2) px a frame
    following = [labels[2 * t : 2 * t + H, 3 * t : 3 * t + W] for t in range(4)]
    assert label_instability_per_frame(following, moving) == [0.0] * 3


def test_label_instability_known_values() -> None:
    # a static scene: zero flow, every pixel visible; frame 1 changes a 6 x 10 block, frame 2 changes it back
    frames = [noise_texture(H, W, 0)] * 3
    labels = [stripes(W), stripes(W).clone(), stripes(W)]
    labels[1][10:16, 20:30] = 7
    assert label_instability_per_frame(labels, frames) == [60 / (H * W)] * 2
    # labels that stay put while the scene moves 3 px left: each visible pixel x (0 .. W - 4, those whose
    # predecessor is in the frame) compares label(x) with label(x + 3), which differ where x % 8 is 5, 6 or 7
    big = noise_texture(H, W + 12, 2)
    moving = [big[:, :, 3 * t : 3 * t + W] for t in range(3)]
    visible = torch.arange(W - 3)
    expected = float(((visible % 8) >= 5).float().mean())  # 21 of 61 columns
    assert label_instability_per_frame([stripes(W)] * 3, moving) == pytest.approx([expected] * 2, abs=0.01)


def test_label_instability_checks_its_inputs() -> None:
    frames = [noise_texture(H, W, 0)] * 2
    with pytest.raises(ValueError, match="needs the flow frame"):
        LabelInstability().update(stripes(W))
    with pytest.raises(ValueError, match="integer"):
        label_instability([f[0] for f in frames], frames)  # float maps
    with pytest.raises(ValueError, match="integer"):
        label_instability([stripes(W)[None]] * 2, frames)  # (1, H, W)
    with pytest.raises(ValueError, match="shape"):
        label_instability([stripes(40)] * 2, frames)
    with pytest.raises(ValueError, match="at least 2 frames"):
        label_instability([stripes(W)], frames[:1])


def test_nearest_warp_keeps_label_values() -> None:
    labels = stripes(W).float()[None]
    out, _ = warp(labels, constant_flow(1.4, -0.6))
    assert not torch.equal(out, out.round())  # bilinear mixes labels
    out, valid = warp(labels, constant_flow(1.4, -0.6), mode="nearest")
    assert torch.equal(out[:, 1:, :-2], labels[:, :-1, 1:-1])  # rounded to (1, -1) px
    assert bool(valid[:, 1:, :-2].all()) and int(valid.sum()) == (H - 1) * (W - 2)
    with pytest.raises(ValueError, match="mode must be"):
        warp(labels, constant_flow(0, 0), mode="bicubic")  # type: ignore[arg-type]


# -- reading and writing clips --------------------------------------------------------------------------------


def test_png_folder_round_trip(tmp_path: Path) -> None:
    clip = moving_clip(3)
    assert write_frames(clip, tmp_path / "out") == 3
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [frame_name(i) for i in range(3)]
    assert frame_name(0) == "frame_000001.png"
    back = list(read_frames(tmp_path / "out"))
    assert len(back) == 3
    for a, b in zip(back, clip, strict=True):
        assert a.dtype == torch.float32 and a.shape == (3, H, W)
        assert torch.equal(a, quantize_8bit(b, "round"))
    assert probe(tmp_path / "out") == VideoInfo(frames=3, fps=None, width=W, height=H)
    assert list(tmp_path.iterdir()) == [tmp_path / "out"]  # no temporary folder left


def test_folder_frames_in_natural_order(tmp_path: Path) -> None:
    folder = tmp_path / "clip"
    folder.mkdir()
    for i in (10, 2, 1):
        write_image(torch.full((3, 4, 4), i / 20), folder / f"img{i}.png")
    values = [round(float(f.mean()) * 20) for f in read_frames(folder)]
    assert values == [1, 2, 10]


def test_folder_writer_is_atomic_and_refuses_a_full_folder(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"), FrameWriter(dest) as writer:
        writer.write(torch.zeros(3, 8, 8))
        raise RuntimeError("boom")
    assert not dest.exists() and list(tmp_path.iterdir()) == []
    dest.mkdir()
    write_frames([torch.zeros(3, 8, 8)], dest)  # an empty folder is fine
    with pytest.raises(FileExistsError, match="not an empty folder"):
        FrameWriter(dest)
    with pytest.raises(ValueError, match="no frames"):
        write_frames([], tmp_path / "none")
    assert not (tmp_path / "none").exists()
    with pytest.raises(ValueError, match="frame 1 is 9x8"):
        write_frames([torch.zeros(3, 8, 8), torch.zeros(3, 8, 9)], tmp_path / "sizes")
    with pytest.raises(ValueError, match="mp4 file or to a folder"):
        FrameWriter(tmp_path / "clip.avi")


def test_unreadable_frame_is_skipped_with_its_index(tmp_path: Path) -> None:
    files = write_folder(tmp_path / "clip", moving_clip(4))
    files[1].write_bytes(b"not a png at all")
    with pytest.warns(FrameReadWarning) as record:
        frames = list(read_frames(tmp_path / "clip"))
    assert len(frames) == 3
    assert torch.equal(frames[1], read_image(files[2]))
    (warning,) = [w.message for w in record if isinstance(w.message, FrameReadWarning)]
    assert warning.index == 1 and "f1.png" in str(warning)


def test_frames_of_another_size_are_refused_by_name(tmp_path: Path) -> None:
    clip = moving_clip(3)
    clip[2] = wave_texture(h=24, w=32)
    write_folder(tmp_path / "clip", clip)
    with pytest.raises(DatasetError, match=r"frame 2 \(.*f2\.png\) is 32x24.*64x48"):
        list(read_frames(tmp_path / "clip"))


def test_bad_sources(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no image frames"):
        read_frames(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match="not a video file"):
        read_frames(tmp_path / "notes.txt")
    with pytest.raises(DatasetNotFoundError, match="no such"):
        read_frames(tmp_path / "missing.mp4")
    with pytest.raises(FileNotFoundError):
        probe(tmp_path / "missing")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"junk")
    with pytest.warns(FrameReadWarning), pytest.raises(DatasetError, match="none of its 1 image frames"):
        list(read_frames(tmp_path / "broken"))


def test_video_without_pyav_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "av", None)  # import av now raises ImportError
    with pytest.raises(ImportError, match=r"pip install sapnet\[video\]"):
        read_frames(tmp_path / "clip.mp4")
    with pytest.raises(ImportError, match=r"pip install sapnet\[video\]"):
        FrameWriter(tmp_path / "out.mp4", fps=25)


@pytest.mark.parametrize("fps", [25, Fraction(30000, 1001)])
def test_mp4_round_trip_lossy(av: ModuleType, tmp_path: Path, fps: float | Fraction) -> None:
    clip = video_clip(5)
    dest = tmp_path / "clip.mp4"
    assert write_frames(iter(clip), dest, fps=fps) == 5
    assert list(tmp_path.iterdir()) == [dest]  # the temporary file is gone
    info = probe(dest)
    assert (info.frames, info.width, info.height) == (5, W, H)
    assert info.fps == pytest.approx(float(fps), rel=1e-6)
    back = list(read_frames(dest))
    assert len(back) == 5
    for a, b in zip(back, clip, strict=True):
        assert a.shape == (3, H, W) and a.dtype == torch.float32
        assert float((a - b).abs().mean()) < 0.02


def test_mp4_round_trip_lossless(av: ModuleType, tmp_path: Path) -> None:
    clip = [noise_texture(47, 63, s) for s in range(3)]  # odd sizes and noise: only lossless keeps these
    dest = tmp_path / "clip.mp4"
    write_frames(clip, dest, fps=10, lossless=True)
    assert probe(dest) == VideoInfo(frames=3, fps=10.0, width=63, height=47)
    back = list(read_frames(dest))
    assert len(back) == 3
    for a, b in zip(back, clip, strict=True):
        assert float((a - quantize_8bit(b, "round")).abs().max()) < 1e-6


def test_mp4_quality_and_size_checks(av: ModuleType, tmp_path: Path) -> None:
    clip = video_clip(3)
    write_frames(clip, tmp_path / "low.mp4", fps=25, crf=40)
    write_frames(clip, tmp_path / "high.mp4", fps=25, crf=10)
    err = [
        sum(float((a - b).abs().mean()) for a, b in zip(read_frames(tmp_path / f"{q}.mp4"), clip, strict=True))
        for q in ("low", "high")
    ]
    assert err[1] < err[0]
    with pytest.raises(ValueError, match="even width and height"):
        write_frames([torch.zeros(3, 47, 63)], tmp_path / "odd.mp4", fps=25)
    assert not (tmp_path / "odd.mp4").exists()
    with pytest.raises(ValueError, match="frame rate"):
        FrameWriter(tmp_path / "x.mp4")
    with pytest.raises(ValueError, match="crf must be"):
        FrameWriter(tmp_path / "x.mp4", fps=25, crf=60)
    with pytest.raises(ValueError, match="positive"):
        FrameWriter(tmp_path / "x.mp4", fps=0)


def test_mp4_writer_keeps_the_old_file_on_error(av: ModuleType, tmp_path: Path) -> None:
    dest = tmp_path / "clip.mp4"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), FrameWriter(dest, fps=25) as writer:
        writer.write(torch.zeros(3, 8, 8))
        raise RuntimeError("boom")
    assert dest.read_bytes() == b"old" and list(tmp_path.iterdir()) == [dest]


def test_corrupt_video_packet_is_skipped_with_its_index(av: ModuleType, tmp_path: Path) -> None:
    clip = moving_clip(8)
    good = tmp_path / "good.mp4"
    write_frames(clip, good, fps=25)
    with av.open(str(good)) as container:
        stream = container.streams.video[0]
        packets = [(p.pos, p.size, p.pts) for p in container.demux(stream) if p.size]
        rate, base = stream.average_rate, stream.time_base
    pos, size, pts = packets[3]
    data = bytearray(good.read_bytes())
    data[pos : pos + size] = b"\xff" * size
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        frames = list(read_frames(bad))
    skipped = [w.message for w in record if isinstance(w.message, FrameReadWarning)]
    assert len(skipped) == 1
    assert skipped[0].index == round(float(pts * base * rate))
    assert len(frames) == 7


def test_broken_video_files(av: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "junk.mp4").write_bytes(b"junk" * 100)
    with pytest.raises(ImageReadError, match="cannot open the video"):
        read_frames(tmp_path / "junk.mp4")
    with pytest.raises(ImageReadError, match="cannot open the video"):
        probe(tmp_path / "junk.mp4")
