"""sapnet.video.synthesis and ``sapnet synth --video``: camera paths, rendered clips, degradations, clip sets."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sapnet.cli import main
from sapnet.data import DatasetError, read_image
from sapnet.data.builder import MANIFEST_NAME, BuildError
from sapnet.data.synthesis import UnknownPresetError
from sapnet.video import (
    CAMERA_KINDS,
    CameraPath,
    Degradations,
    PhotoTooSmallError,
    VideoBuildReport,
    build_video_set,
    camera_path,
    degrade,
    frame_name,
    optical_flow,
    parse_degradations,
    render_clip,
    view_transforms,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = (64, 48)  # clip (width, height)
PHOTO = (128, 96)  # generated photos (width, height)


def texture(seed: int = 0, size: tuple[int, int] = PHOTO) -> torch.Tensor:
    """A smooth random RGB image (3, H, W) in [0, 1] with enough detail for optical flow."""
    g = torch.Generator().manual_seed(seed)
    w, h = size
    small = torch.rand(1, 3, max(2, h // 8), max(2, w // 8), generator=g)
    return F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)[0]


def save_photo(path: Path, seed: int = 0, size: tuple[int, int] = PHOTO) -> Path:
    array = (texture(seed, size).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, "RGB").save(path)
    return path


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    for i, name in enumerate(["b.png", "a.png", "c.png"]):
        save_photo(folder / name, seed=i)
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def build(src: Path, out: Path, **kwargs: object) -> VideoBuildReport:
    kwargs.setdefault("frames", 4)
    kwargs.setdefault("size", SIZE)
    kwargs.setdefault("preset", "light")
    return build_video_set(src, out, progress=False, log=lambda _m: None, **kwargs)  # type: ignore[arg-type]


# --- camera paths ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", CAMERA_KINDS)
def test_camera_paths_are_a_function_of_the_seed(kind: str) -> None:
    path = camera_path(kind, 6, seed=3)
    assert isinstance(path, CameraPath) and path.kind == kind and len(path) == 6
    assert path == camera_path(kind, 6, seed=3)
    if kind != "static":
        assert path != camera_path(kind, 6, seed=4)


def test_pan_moves_at_constant_speed_in_the_given_direction() -> None:
    path = camera_path("pan", 5, speed=2.5, direction=90.0)
    assert [round(p.y, 9) for p in path.poses] == [0.0, 2.5, 5.0, 7.5, 10.0]
    assert all(abs(p.x) < 1e-9 and p.zoom == 1 and p.angle == 0 for p in path.poses)


@pytest.mark.parametrize("zoom", [1.5, 0.5])
def test_zoom_changes_the_magnification_at_a_constant_rate_and_the_widest_view_has_zoom_1(zoom: float) -> None:
    z = [p.zoom for p in camera_path("zoom", 5, zoom=zoom).poses]
    ratios = [b / a for a, b in itertools.pairwise(z)]
    assert ratios == pytest.approx([zoom**0.25] * 4)
    assert min(z) == pytest.approx(1.0) and z[-1] / z[0] == pytest.approx(zoom)


def test_shake_is_bounded_and_smooth() -> None:
    path = camera_path("shake", 48, seed=1, amplitude=4.0, roll=1.0)
    xs = torch.tensor([p.x for p in path.poses])
    angles = torch.tensor([p.angle for p in path.poses])
    assert xs.abs().max() <= 4.0 and angles.abs().max() <= 1.0
    assert xs.abs().max() > 0.5  # it does shake
    assert (xs[1:] - xs[:-1]).abs().max() < 4.0 * 2 * math.pi * 0.12 + 1e-9  # at most the fastest sinusoid's slope


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "dolly"}, "unknown camera path 'dolly'; choose one of pan, zoom, shake, static"),
        ({"kind": "static", "speed": 2.0}, "does not take speed"),
        ({"kind": "zoom", "amplitude": 1.0}, "does not take amplitude"),
        ({"kind": "pan", "frames": 0}, "frames must be an integer >= 1"),
        ({"kind": "zoom", "zoom": 10.0}, r"zoom must be in \[0.25, 4\]"),
        ({"kind": "pan", "speed": float("nan")}, "speed must be a finite number"),
    ],
)
def test_camera_path_refuses_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    kwargs = {"frames": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        camera_path(kwargs.pop("kind"), kwargs.pop("frames"), **kwargs)  # type: ignore[arg-type]


def test_view_transforms_fit_the_footprint_inside_the_photo() -> None:
    path = camera_path("pan", 6, speed=3.0, direction=0.0)
    m = view_transforms(path, SIZE, PHOTO, seed=2)
    assert m.shape == (6, 2, 3) and m.dtype == torch.float64
    scale = float(m[0, 0, 0])  # photo pixels per output pixel
    assert scale == pytest.approx(min(PHOTO[0] / (SIZE[0] + 15), PHOTO[1] / SIZE[1]))
    assert (m[1:, 0, 2] - m[:-1, 0, 2]).tolist() == pytest.approx([3.0 * scale] * 5)
    corners = torch.tensor([[-0.5, -0.5, 1.0], [SIZE[0] - 0.5, SIZE[1] - 0.5, 1.0]], dtype=torch.float64)
    mapped = corners @ m.transpose(1, 2)  # (N, 2, 2) photo coordinates of the frame corners
    assert mapped.min() >= -0.5 - 1e-9 and mapped[..., 0].max() <= PHOTO[0] - 0.5 + 1e-9
    assert mapped[..., 1].max() <= PHOTO[1] - 0.5 + 1e-9


# --- clips -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", CAMERA_KINDS)
def test_render_clip_is_deterministic_per_seed(kind: str) -> None:
    photo = texture()
    rainy, clean = render_clip(photo, kind, size=SIZE, frames=5, preset="medium", seed=7)
    assert rainy.shape == clean.shape == (5, 3, SIZE[1], SIZE[0])
    assert rainy.dtype == clean.dtype == torch.float32
    assert torch.equal(clean, torch.round(clean * 255) / 255)  # clean on the 8-bit grid (what the PNG stores)
    again = render_clip(photo, kind, size=SIZE, frames=5, preset="medium", seed=7)
    assert torch.equal(rainy, again[0]) and torch.equal(clean, again[1])
    other = render_clip(photo, kind, size=SIZE, frames=5, preset="medium", seed=8)
    assert not torch.equal(rainy, other[0])
    # a kind name means the default path of that kind drawn from the same seed
    explicit = render_clip(photo, camera_path(kind, 5, seed=7), size=SIZE, preset="medium", seed=7)
    assert torch.equal(rainy, explicit[0])


def test_static_camera_gives_identical_clean_frames() -> None:
    _, clean = render_clip(texture(), "static", size=SIZE, frames=5, preset="light", seed=0)
    assert all(torch.equal(clean[0], frame) for frame in clean[1:])


@pytest.mark.parametrize(("direction", "expected"), [(0.0, (-2.0, 0.0)), (180.0, (2.0, 0.0)), (90.0, (0.0, -2.0))])
def test_pan_moves_the_content_by_the_pan_speed(direction: float, expected: tuple[float, float]) -> None:
    path = camera_path("pan", 5, speed=2.0, direction=direction)
    _, clean = render_clip(texture(3), path, size=SIZE, preset="light", seed=1)
    for a, b in itertools.pairwise(clean):
        flow = optical_flow(a, b)[:, 8:-8, 8:-8].mean(dim=(1, 2))
        assert flow.tolist() == pytest.approx(expected, abs=0.15)


def test_zoom_in_magnifies_the_content() -> None:
    _, clean = render_clip(texture(4), camera_path("zoom", 2, zoom=1.2), size=SIZE, preset="light", seed=0)
    flow = optical_flow(clean[0], clean[1])
    h, w = SIZE[1], SIZE[0]
    right, left = flow[0, 8:-8, w - 16 : w - 8].mean(), flow[0, 8:-8, 8:16].mean()
    bottom, top = flow[1, h - 14 : h - 6, 8:-8].mean(), flow[1, 6:14, 8:-8].mean()
    assert right > 1.0 and left < -1.0 and bottom > 0.5 and top < -0.5  # content moves away from the centre


def test_zooming_out_is_antialiased() -> None:
    board = ((torch.arange(190)[:, None] + torch.arange(250)[None]) % 2).float().expand(3, -1, -1)  # 1 px checks
    _, clean = render_clip(board, "static", size=SIZE, frames=2, preset="light", seed=0)  # shrunk ~3.9 times
    assert clean.mean().item() == pytest.approx(0.5, abs=0.01)
    assert clean.std().item() < 0.02  # no moire


def test_rain_only_adds_light_without_degradations() -> None:
    rainy, clean = render_clip(texture(), "shake", size=SIZE, frames=5, preset="light", seed=2)
    assert bool((rainy >= clean).all()) and float((rainy - clean).max()) > 0.2


def test_render_clip_refuses_bad_input() -> None:
    with pytest.raises(PhotoTooSmallError, match=r"photo is 60x40 pixels, but a 64x48 static clip .* at least 64x48"):
        render_clip(texture(0, (60, 40)), "static", size=SIZE, frames=2)
    with pytest.raises(PhotoTooSmallError, match="at least 94x48"):  # 64 + 15 frames * 2 px
        render_clip(texture(0, (90, 96)), camera_path("pan", 16, speed=2.0, direction=0.0), size=SIZE)
    with pytest.raises(ValueError, match="unknown camera path 'orbit'"):
        render_clip(texture(), "orbit", size=SIZE, frames=2)
    with pytest.raises(ValueError, match="unknown degradation 'snow'"):
        render_clip(texture(), "pan", size=SIZE, frames=2, degradations=["snow"])
    with pytest.raises(UnknownPresetError):
        render_clip(texture(), "pan", size=SIZE, frames=2, preset="drizzle")
    with pytest.raises(ValueError, match="size must be two integers >= 16"):
        render_clip(texture(), "pan", size=(8, 8), frames=2)
    with pytest.raises(ValueError, match="frames=3 but the camera path has 2 poses"):
        render_clip(texture(), camera_path("pan", 2), size=SIZE, frames=3)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        render_clip(texture()[None], "pan", size=SIZE, frames=2)


# --- degradations ----------------------------------------------------------------------------------------


def test_parse_degradations() -> None:
    assert parse_degradations(None) == Degradations() and not Degradations().active
    assert parse_degradations(["noise", "fog=0.5"]) == Degradations(noise=1.0, fog=0.5)
    assert parse_degradations("glare") == Degradations(glare=1.0)
    assert parse_degradations({"light": 0.25}).to_dict() == {"light": 0.25}
    for bad, match in [
        (["rain"], "unknown degradation 'rain'; choose from noise, glare, fog, light"),
        (["fog=lots"], "strength must be a number"),
        (["fog=2"], r"fog strength must be in \[0, 1\]"),
        (["fog", "fog=0.5"], "given twice"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_degradations(bad)


@pytest.mark.parametrize("name", ["noise", "glare", "fog", "light"])
def test_degradations_change_only_the_rainy_frames(name: str) -> None:
    photo = texture(5)
    plain = render_clip(photo, "pan", size=SIZE, frames=4, preset="light", seed=3)
    degraded = render_clip(photo, "pan", size=SIZE, frames=4, preset="light", seed=3, degradations=[name])
    assert torch.equal(plain[1], degraded[1])  # the ground truth stays clean
    assert float((plain[0] - degraded[0]).abs().mean()) > 0.005
    again = render_clip(photo, "pan", size=SIZE, frames=4, preset="light", seed=3, degradations=[name])
    assert torch.equal(degraded[0], again[0])
    assert 0.0 <= float(degraded[0].min()) and float(degraded[0].max()) <= 1.0


@pytest.mark.parametrize("name", ["fog", "light", "glare"])
def test_fog_light_and_glare_change_smoothly_over_time(name: str) -> None:
    frames = torch.full((24, 3, SIZE[1], SIZE[0]), 0.3)
    out = degrade(frames, [name], seed=4)
    effect = (out - frames).abs().mean()
    step = (out[1:] - out[:-1]).abs()
    assert effect > 0.01
    assert step.mean() < 0.2 * effect and step.max() < 0.06
    assert float((out[-1] - out[0]).abs().max()) > 1e-3  # it does change over the clip


def test_glare_drifts() -> None:
    out = degrade(torch.full((48, 3, SIZE[1], SIZE[0]), 0.2), {"glare": 1.0}, seed=0)
    peaks = [divmod(int(frame[0].argmax()), SIZE[0]) for frame in out]
    assert peaks[0] != peaks[-1]


def test_sensor_noise_is_new_in_every_frame() -> None:
    frames = torch.full((4, 3, SIZE[1], SIZE[0]), 0.5)
    noise = degrade(frames, ["noise"], seed=0) - frames
    assert noise.std().item() == pytest.approx(math.sqrt(0.003 * 0.5 + 0.0004), rel=0.1)
    corr = torch.corrcoef(noise.flatten(1))
    assert corr[~torch.eye(4, dtype=torch.bool)].abs().max() < 0.1


def test_each_degradation_draws_from_its_own_stream() -> None:
    frames = torch.rand(3, 3, SIZE[1], SIZE[0], generator=torch.Generator().manual_seed(0))
    both = degrade(frames, ["fog", "noise"], seed=5)
    assert torch.equal(both, degrade(degrade(frames, ["fog"], seed=5), ["noise"], seed=5))
    assert not torch.equal(degrade(frames, ["fog"], seed=5), degrade(frames, ["fog"], seed=6))


# --- sets of clips ---------------------------------------------------------------------------------------


def test_video_set_layout_and_clip_records(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "set"
    report = build(photos, out, clips=4, kinds=["pan", "static"], seed=1, degradations=["fog=0.5"])
    assert report.ok and len(report.written) == 4 and not report.skipped
    assert report.summary().startswith("wrote 4 clips, skipped 0 existing, failed 0 clips")
    clips = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert clips == sorted(report.written)
    assert [c.split("_")[-1] for c in sorted(clips)] == ["pan", "static", "pan", "static"]
    stems = [c.split("_")[1] for c in sorted(clips)]
    assert sorted(stems[:3]) == ["a", "b", "c"] and stems[3] == stems[0]  # the photos cycle
    # a reused photo gets the other camera kind
    assert sorted(clips)[3].endswith("static") and sorted(clips)[0].endswith("pan")
    for clip in clips:
        for side in ("rain", "clean"):
            names = sorted(p.name for p in (out / clip / side).iterdir())
            assert names == [frame_name(i) for i in range(4)]
            assert read_image(out / clip / side / names[0]).shape == (3, SIZE[1], SIZE[0])
        record = json.loads((out / clip / "clip.json").read_text())
        assert record["photo"] == f"{clip.split('_')[1]}.png" and record["camera"] == clip.split("_")[-1]
        assert record["preset"] == "light" and record["set_seed"] == 1 and isinstance(record["seed"], int)
        assert record["degradations"] == {"fog": 0.5} and record["frames"] == 4 and record["size"] == list(SIZE)
        assert len(record["path"]) == 4 and len(record["path"][0]) == 4
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["video"] is True and manifest["cameras"] == ["pan", "static"]


def test_stored_clean_frames_are_the_rendered_ground_truth(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "set"
    build(photos, out, clips=1, kinds=["zoom"], seed=2)
    (clip,) = [p for p in out.iterdir() if p.is_dir()]
    record = json.loads((clip / "clip.json").read_text())
    photo = read_image(photos / record["photo"])
    path = camera_path("zoom", 4, seed=record["seed"])
    rainy, clean = render_clip(photo, path, size=SIZE, preset="light", seed=record["seed"])
    stored = torch.stack([read_image(clip / "clean" / frame_name(i)) for i in range(4)])
    assert torch.equal(stored, clean)
    stored_rain = torch.stack([read_image(clip / "rain" / frame_name(i)) for i in range(4)])
    assert torch.equal(stored_rain, torch.round(rainy * 255) / 255)


def test_video_set_is_deterministic_whatever_the_order(photos: Path, tmp_path: Path) -> None:
    full = tmp_path / "full"
    build(photos, full, clips=5, seed=3)
    part = tmp_path / "part"
    build(photos, part, clips=2, seed=3)
    report = build(photos, part, clips=5, seed=3)  # resumed with more clips
    assert len(report.skipped) == 2 and len(report.written) == 3
    assert snapshot(full) == snapshot(part)
    other = tmp_path / "other"
    build(photos, other, clips=5, seed=4)
    assert snapshot(other) != snapshot(full)


def test_video_set_resume_skips_complete_and_redoes_partial_clips(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "set"
    build(photos, out, clips=3, seed=0)
    before = snapshot(out)
    clips = sorted(p.name for p in out.iterdir() if p.is_dir())
    (out / clips[1] / "rain" / frame_name(2)).unlink()  # an incomplete clip
    (out / clips[2] / "clip.json").unlink()  # not finished
    (out / f".{clips[0]}.partial" / "rain").mkdir(parents=True)  # an interrupted render of a complete clip
    report = build(photos, out, clips=3, seed=0)
    assert report.skipped == [clips[0]] and sorted(report.written) == clips[1:]
    assert snapshot(out) == before
    assert build(photos, out, clips=3, seed=0).skipped == clips


def test_video_set_refuses_other_parameters_and_bad_input(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "set"
    build(photos, out, clips=1, seed=0)
    with pytest.raises(BuildError, match="other parameters"):
        build(photos, out, clips=1, seed=0, frames=5)
    still = tmp_path / "still"
    assert main(["synth", "--clean", str(photos), "--out", str(still), "--min-size", "16", "--threads", "1"]) == 0
    with pytest.raises(BuildError, match="other parameters"):  # a still set is not a video set
        build(photos, still, clips=1)
    with pytest.raises(DatasetError):
        build(tmp_path / "missing", tmp_path / "s1")
    with pytest.raises(BuildError, match="overlaps the input folder"):
        build(photos, photos / "clips")
    for kwargs, match in [
        ({"kinds": ["pan", "crane"]}, "unknown camera path 'crane'"),
        ({"kinds": []}, "at least one camera path"),
        ({"degradations": ["haze"]}, "unknown degradation 'haze'"),
        ({"clips": 0}, "clips must be an integer >= 1"),
        ({"size": (64, 4)}, "size must be two integers"),
    ]:
        with pytest.raises(ValueError, match=match):
            build(photos, tmp_path / "s2", **kwargs)
        assert not (tmp_path / "s2").exists()  # checked before anything is written


def test_too_small_and_unreadable_photos_fail_their_clips(photos: Path, tmp_path: Path) -> None:
    save_photo(photos / "tiny.png", size=(40, 30))
    (photos / "broken.png").write_bytes(b"not a png")
    (photos / "notes.txt").write_text("x")
    report = build(photos, tmp_path / "set", seed=0, kinds=["static"])
    failed = dict(report.failed)
    assert len(report.written) == 3 and len(failed) == 2 and report.ignored == ["notes.txt"]
    tiny = next(reason for name, reason in failed.items() if "_tiny_" in name)
    assert "photo is 40x30 pixels" in tiny and "needs at least 64x48" in tiny
    assert any("_broken_" in name for name in failed)
    assert report.summary().startswith("wrote 3 clips, skipped 0 existing, failed 2 clips")


# --- the command line ------------------------------------------------------------------------------------


def synth(*args: object) -> int:
    return main(["synth", *map(str, args), "--threads", "1"])


def test_cli_video_round_trip(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "clips"
    common = ("--video", "--clean", photos, "--out", out, "--clips", 2, "--frames", 3, "--size", "64x48")
    options = ("--camera", "shake", "zoom", "--preset", "medium", "--degrade", "noise", "glare=0.5", "--seed", 9)
    rc = synth(*common, *options)
    assert rc == 0 and "wrote 2 clips" in capsys.readouterr().out
    clips = sorted(p for p in out.iterdir() if p.is_dir())
    assert [c.name.split("_")[-1] for c in clips] == ["shake", "zoom"]
    record = json.loads((clips[0] / "clip.json").read_text())
    assert record["preset"] == "medium" and record["degradations"] == {"noise": 1.0, "glare": 0.5}
    assert record["frames"] == 3 and record["set_seed"] == 9
    assert sorted(p.name for p in (clips[1] / "rain").iterdir()) == [frame_name(i) for i in range(3)]
    again = synth(*common, *options)
    assert again == 0 and "skipped 2 existing" in capsys.readouterr().out


def test_cli_video_errors(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = ("--video", "--clean", photos, "--frames", 2, "--size", "64x48")
    assert synth(*video, "--out", tmp_path / "a", "--camera", "dolly") == 2
    assert "invalid choice: 'dolly'" in capsys.readouterr().err
    assert synth(*video, "--out", tmp_path / "b", "--degrade", "snow") == 2
    assert "unknown degradation 'snow'" in capsys.readouterr().err
    assert synth(*video, "--out", tmp_path / "c", "--size", "64") == 2
    assert "expected WIDTHxHEIGHT" in capsys.readouterr().err
    assert synth("--clean", photos, "--out", tmp_path / "d", "--clips", 2) == 2
    assert "--clips need --video" in capsys.readouterr().err
    assert synth(*video, "--out", tmp_path / "e", "--per-image", 2) == 2
    assert "--per-image apply to still pairs, not to --video" in capsys.readouterr().err
    assert synth("--video", "--clean", tmp_path / "missing", "--out", tmp_path / "f") == 2
    assert "error:" in capsys.readouterr().err
    assert synth(*video, "--out", tmp_path / "g", "--preset", "drizzle") == 2
    assert "unknown rain preset 'drizzle'" in capsys.readouterr().err
    assert not any((tmp_path / n).exists() for n in "abcdefg")
    save_photo(photos / "tiny.png", size=(40, 30))
    assert synth(*video, "--out", tmp_path / "h", "--camera", "static") == 1
    assert "photo is 40x30 pixels" in capsys.readouterr().err
