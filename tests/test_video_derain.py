"""sapnet.video temporal modes (VideoDerainer: frame, fuse, lowrank, recurrent), robust PCA and derain_video, on
tiny clips."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sapnet
from sapnet.data import quantize_8bit, read_image, synthesize_rain
from sapnet.metrics import flicker, psnr
from sapnet.video import (
    DEFAULT_WINDOW,
    MODES,
    FrameDerainer,
    FuseDerainer,
    LowRankDerainer,
    RecurrentDerainer,
    VideoDerainer,
    derain_video,
    masked_median,
    read_frames,
    robust_pca,
    singular_value_threshold,
    suppress_streaks,
    write_frames,
)

pytestmark = pytest.mark.usefixtures("one_thread", "one_cv2_thread")

H, W = 48, 64


def noise_texture(h: int, w: int, seed: int) -> torch.Tensor:
    """Smoothed random noise (3, h, w) in [0, 1]: texture without repeats, that optical flow can follow."""
    n = torch.rand(1, 3, h + 4, w + 4, generator=torch.Generator().manual_seed(seed))
    n = F.avg_pool2d(n, 5, stride=1)[0]
    return (0.5 + 0.2 * (n - n.mean()) / n.std()).clamp(0, 1)


class NoisyIdentity(nn.Module):
    """A stand-in derain network: its input plus fresh Gaussian noise at each call (seeded: reproducible),
    like the residual streaks and flicker a network leaves, independent from frame to frame."""

    def __init__(self, seed: int = 0, sigma: float = 0.05) -> None:
        super().__init__()
        self.generator = torch.Generator().manual_seed(seed)
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sigma * torch.randn(x.shape, generator=self.generator).to(x.device)


class Cached(nn.Module):
    """A network whose output for an input seen before is given back from memory (the comparisons below run the
    same frames through several modes)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.cache: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = hashlib.sha1(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
        if key not in self.cache:
            self.cache[key] = self.net(x)
        return self.cache[key]


def moving_clip(n: int, dx: int = 3, dy: int = 2, seed: int = 3) -> list[torch.Tensor]:
    """``n`` frames (3, H, W) cut from one textured image, moving by (dx, dy) integer pixels a frame."""
    big = noise_texture(H + dy * n, W + dx * n, seed)
    return [big[:, dy * t : dy * t + H, dx * t : dx * t + W].contiguous() for t in range(n)]


def sparse_rain(background: torch.Tensor, n: int, density: float = 0.04, seed: int = 1) -> list[torch.Tensor]:
    """``n`` frames of ``background`` with a different random sparse bright layer each (achromatic, +0.3..0.6)."""
    g = torch.Generator().manual_seed(seed)
    frames = []
    for _ in range(n):
        mask = torch.rand(1, H, W, generator=g) < density
        frames.append((background + mask * (0.3 + 0.3 * torch.rand(1, H, W, generator=g))).clamp(0, 1))
    return frames


def mean_psnr(outputs: list[torch.Tensor], clean: list[torch.Tensor]) -> float:
    return sum(float(psnr(o, c, channel="rgb")) for o, c in zip(outputs, clean, strict=True)) / len(clean)


def make(mode: str, window: int, seed: int = 0) -> VideoDerainer:
    return VideoDerainer(None if mode == "lowrank" else NoisyIdentity(seed), mode, window=window)


MODE_WINDOWS = [("frame", 1), ("fuse", 3), ("fuse", 5), ("lowrank", 3), ("lowrank", 5)]


@pytest.mark.parametrize(("mode", "window"), MODE_WINDOWS)
@pytest.mark.parametrize("n", [1, 2, 6])
def test_step_and_flush_equal_run_one_frame_out_per_frame_in(mode: str, window: int, n: int) -> None:
    clip = moving_clip(n)
    stepper = make(mode, window)
    got: list[torch.Tensor] = []
    counts = []
    for frame in clip:
        ready = stepper.step(frame)
        counts.append(len(ready))
        got.extend(ready)
    got.extend(stepper.flush())
    half = window // 2
    assert counts == [0 if t < half else 1 for t in range(n)]  # output lags by window // 2 frames
    assert stepper.delay == half
    ran = list(make(mode, window).run(clip))
    assert len(got) == len(ran) == n
    for a, b in zip(got, ran, strict=True):
        assert a.shape == (3, H, W) and a.dtype == torch.float32 and a.device.type == "cpu"
        assert float(a.min()) >= 0 and float(a.max()) <= 1
        assert torch.equal(a, b)


@pytest.mark.parametrize(("mode", "window"), MODE_WINDOWS)
def test_outputs_keep_the_order_of_the_inputs(mode: str, window: int) -> None:
    clip = moving_clip(7)
    model = None if mode == "lowrank" else NoisyIdentity(0, sigma=0.0)
    out = list(VideoDerainer(model, mode, window=window).run(clip))
    for t, frame in enumerate(out):
        errors = [float((frame - other).abs().mean()) for other in clip]
        assert int(np.argmin(errors)) == t
        assert errors[t] < 0.01


@pytest.mark.parametrize(("mode", "window"), MODE_WINDOWS)
def test_run_consumes_frames_lazily_with_a_bounded_window(mode: str, window: int) -> None:
    clip = moving_clip(8)
    given: list[int] = []

    def source() -> Iterator[torch.Tensor]:
        for t, frame in enumerate(clip):
            given.append(t)
            yield frame

    for t, _ in enumerate(make(mode, window).run(source())):
        assert len(given) <= min(t + window // 2 + 1, len(clip))  # never more read ahead than the window needs
    derainer = make(mode, window).derainer
    for frame in clip:
        derainer.step(frame)
    if isinstance(derainer, FuseDerainer | LowRankDerainer):
        assert len(derainer._entries) == window
        assert len(derainer._flows) <= window * (window - 1)


def test_a_derainer_starts_a_new_clip_after_flush() -> None:
    derainer = VideoDerainer(None, "lowrank", window=3)
    first = list(derainer.run(moving_clip(4)))
    second = list(derainer.run(moving_clip(4)))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    derainer.step(moving_clip(1)[0])
    derainer.reset()
    assert derainer.flush() == []


def test_fuse_with_a_window_of_one_is_the_frame_mode() -> None:
    clip = moving_clip(5)
    fused = list(VideoDerainer(NoisyIdentity(7), "fuse", window=1).run(clip))
    framed = list(VideoDerainer(NoisyIdentity(7), "frame").run(clip))
    assert all(torch.equal(a, b) for a, b in zip(fused, framed, strict=True))


def test_fuse_reduces_flicker_on_a_moving_clip() -> None:
    clip = moving_clip(7)
    framed = list(VideoDerainer(NoisyIdentity(0), "frame").run(clip))
    fused = list(VideoDerainer(NoisyIdentity(0), "fuse", window=5).run(clip))
    # measured: flicker 0.055 -> 0.019, PSNR 26.1 -> 29.6 dB
    assert flicker(fused, clip) < 0.5 * flicker(framed, clip)
    assert mean_psnr(fused, clip) > mean_psnr(framed, clip) + 2


def test_lowrank_alone_recovers_a_static_background_under_sparse_rain() -> None:
    background = noise_texture(H, W, 0)
    rainy = sparse_rain(background, 7)
    out = list(VideoDerainer(None, "lowrank", window=5).run(rainy))
    clean = [background] * len(rainy)
    before, after = mean_psnr(rainy, clean), mean_psnr(out, clean)
    assert after > before + 8  # measured: 22.1 -> 33.4 dB
    assert all(bool((o <= r + 1e-6).all()) for o, r in zip(out, rainy, strict=True))  # rain is only taken away


def test_lowrank_with_a_network_is_never_brighter_than_the_network() -> None:
    background = noise_texture(H, W, 0)
    rainy = sparse_rain(background, 5)
    net = Cached(NoisyIdentity(0, sigma=0.02))
    alone = list(FrameDerainer(net).run(rainy))
    both = list(LowRankDerainer(net, window=3).run(rainy))
    assert all(bool((b <= a + 1e-6).all()) for a, b in zip(alone, both, strict=True))  # the per-pixel minimum
    assert mean_psnr(both, [background] * 5) > mean_psnr(alone, [background] * 5) + 5  # measured: 21.7 -> 30.9 dB


def test_modes_compared_on_synthetic_rain_with_prenet(compat_dir: Path, rain100l_dir: Path) -> None:
    """The measurement behind the defaults: a Rain100L background moving (3, 2) px a frame, light synthetic rain
    drawn anew per frame, PReNet (Rain100L weights). Measured (RGB PSNR, dB): rainy 24.8, frame 42.1, fuse 44.7
    (the plain median, tolerance 0, 47.3 with the flow on the derained frames against 45.0 on the rainy ones: on
    clean synthetic frames the median also averages the network's small errors away), lowrank alone 37.7, lowrank
    with the network 43.6, recurrent 39.8 (the state carried from frame to frame hurts weights not trained for it)."""
    big = read_image(rain100l_dir / "clean" / "001.png")
    h, w = 64, 96
    clean = [big[:, 40 + 2 * t : 40 + 2 * t + h, 60 + 3 * t : 60 + 3 * t + w].contiguous() for t in range(7)]
    rainy = [synthesize_rain(c, "light", seed=10 + i) for i, c in enumerate(clean)]
    net = Cached(sapnet.load_model(compat_dir / "prenet_official_rain100l.pth"))
    score = {
        "rainy": mean_psnr(rainy, clean),
        "frame": mean_psnr(list(FrameDerainer(net).run(rainy)), clean),
        "fuse": mean_psnr(list(FuseDerainer(net).run(rainy)), clean),
        "median": mean_psnr(list(FuseDerainer(net, tolerance=0).run(rainy)), clean),
        "median, flow on rainy": mean_psnr(list(FuseDerainer(net, flow_from="rainy", tolerance=0).run(rainy)), clean),
        "lowrank": mean_psnr(list(LowRankDerainer(None).run(rainy)), clean),
        "lowrank + network": mean_psnr(list(LowRankDerainer(net).run(rainy)), clean),
        "recurrent": mean_psnr(list(RecurrentDerainer(net.net).run(rainy)), clean),
    }
    assert score["median"] > score["median, flow on rainy"] + 1 > score["frame"] + 1, score
    assert score["median"] > score["fuse"] > score["frame"] + 1, score
    assert score["lowrank"] > score["rainy"] + 8, score
    assert score["lowrank + network"] > max(score["frame"], score["lowrank"]), score
    assert score["recurrent"] < score["frame"] - 1, score  # the public weights were not trained for a carried state


class Planted(nn.Module):
    """A stand-in network returning its input with small offsets (below a tolerance) and, on the call numbered
    ``spike_at``, a bright square: a streak left in one frame only."""

    def __init__(self, spike_at: int) -> None:
        super().__init__()
        self.calls = 0
        self.spike_at = spike_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x + 0.004 * (self.calls % 3 - 1)
        if self.calls == self.spike_at:
            out = out.clone()
            out[..., 10:14, 20:24] += 0.3
        self.calls += 1
        return out


@pytest.mark.parametrize("tolerance", [0.0, 0.01, 0.02])
def test_fuse_keeps_the_frames_own_values_within_tolerance_and_votes_out_a_streak(tolerance: float) -> None:
    background = noise_texture(H, W, 3)
    clip = [background] * 5
    # flow on the (identical) rainy frames: the streak does not disturb it
    out = list(FuseDerainer(Planted(spike_at=2), window=5, flow_from="rainy", tolerance=tolerance).run(clip))
    own = background + 0.004 * (2 % 3 - 1)  # the centre frame's own output, without its streak
    centre = out[2]
    assert float((centre[..., 10:14, 20:24] - background[..., 10:14, 20:24]).abs().max()) < 0.01  # streak gone
    rest = torch.ones(H, W, dtype=torch.bool)
    rest[10:14, 20:24] = False
    if tolerance == 0:  # the plain median of the five (offsets -1, 0, 1, -1, 0 x 0.004): the background itself
        torch.testing.assert_close(centre[:, rest], background[:, rest].clamp(0, 1), atol=1e-6, rtol=0)
    else:  # within tolerance of the median: the frame's own value
        torch.testing.assert_close(centre[:, rest], own[:, rest].clamp(0, 1), atol=1e-6, rtol=0)


def test_mode_options_reach_the_mode_and_unknown_ones_are_refused() -> None:
    assert isinstance(VideoDerainer(NoisyIdentity(), "fuse", tolerance=0.05).derainer, FuseDerainer)
    assert VideoDerainer(NoisyIdentity(), "fuse", tolerance=0.05).derainer.tolerance == 0.05  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="tolerance"):
        VideoDerainer(NoisyIdentity(), "frame", tolerance=0.05)
    for bad in (-0.1, 1.5, True, "0.1"):
        with pytest.raises(ValueError, match="tolerance"):
            FuseDerainer(NoisyIdentity(), tolerance=bad)  # type: ignore[arg-type]


def test_window_defaults() -> None:
    assert VideoDerainer(NoisyIdentity(), "frame").window == 1
    assert VideoDerainer(NoisyIdentity(), "fuse").window == DEFAULT_WINDOW
    assert VideoDerainer(None, "lowrank").window == DEFAULT_WINDOW
    assert VideoDerainer(tiny_net(), "recurrent").window == 1
    assert set(MODES) == {"frame", "fuse", "lowrank", "recurrent"}
    assert [m for m, cls in MODES.items() if cls.windowed] == ["fuse", "lowrank"]
    assert FuseDerainer(NoisyIdentity()).flow_from == "derained"
    assert LowRankDerainer(None).flow_from == "rainy"
    assert LowRankDerainer(NoisyIdentity()).flow_from == "derained"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"mode": "fuse", "window": 4}, ValueError, "odd"),
        ({"mode": "fuse", "window": 0}, ValueError, "odd"),
        ({"mode": "fuse", "window": -3}, ValueError, "odd"),
        ({"mode": "fuse", "window": 3.0}, TypeError, "int"),
        ({"mode": "lowrank", "window": 2}, ValueError, "odd"),
        ({"mode": "lowrank", "window": 1}, ValueError, "at least 3"),
        ({"mode": "frame", "window": 3}, ValueError, "window must be 1"),
        ({"mode": "recurrent"}, ValueError, "mode 'recurrent': needs a sapnet DerainNet"),
        ({"mode": "Recurrent"}, ValueError, "unknown mode 'Recurrent'.*'frame', 'fuse', 'lowrank', 'recurrent'"),
        ({"mode": "Fuse"}, ValueError, "unknown mode"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        VideoDerainer(NoisyIdentity(), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["frame", "fuse", "recurrent"])
def test_modes_that_need_a_network_refuse_none(mode: str) -> None:
    with pytest.raises(ValueError, match=f"mode '{mode}' needs a derain network"):
        VideoDerainer(None, mode)


def test_flow_source_arguments() -> None:
    with pytest.raises(ValueError, match="flow_from must be one of"):
        FuseDerainer(NoisyIdentity(), flow_from="clean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a derain network"):
        LowRankDerainer(None, flow_from="derained")
    with pytest.raises(ValueError, match="lam must be positive"):
        LowRankDerainer(None, lam=0.0)


def test_step_checks_its_frames() -> None:
    derainer = VideoDerainer(None, "lowrank", window=3)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        derainer.step(torch.rand(1, 3, H, W))
    with pytest.raises(TypeError, match="float"):
        derainer.step(torch.zeros(3, H, W, dtype=torch.uint8))
    with pytest.raises(ValueError):
        derainer.step(torch.full((3, H, W), 2.0))
    derainer.step(torch.rand(3, H, W))
    with pytest.raises(ValueError, match="frame 1 is 32x48, but the clip's frames are 64x48"):
        derainer.step(torch.rand(3, H, 32))


@pytest.mark.parametrize(("k", "seed"), [(1, 0), (2, 1), (3, 2), (5, 3), (6, 4)])
def test_masked_median_matches_numpy_over_the_valid_samples(k: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(k, 2, 5, 6, generator=g)
    valid = torch.rand(k, 1, 5, 6, generator=g) < 0.6
    got = masked_median(values, valid)
    for c, y, x in itertools.product(range(2), range(5), range(6)):
        picked = values[valid[:, 0, y, x], c, y, x].numpy()
        expected = float(np.median(picked)) if picked.size else float(values[0, c, y, x])
        assert float(got[c, y, x]) == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="valid"):
        masked_median(values, valid[:, :, :4])


def test_suppress_streaks_removes_thin_bright_lines_and_keeps_wide_content() -> None:
    image = torch.full((3, H, W), 0.3)
    image[:, :, 20:32] = 0.7  # a wide bright band: content
    streaked = image.clone()
    streaked[:, 5:40, 10] = 1.0  # a 1-pixel vertical streak
    streaked[:, 5:40, 40:42] = 1.0  # a 2-pixel one
    out = suppress_streaks(streaked)
    assert out.shape == (1, H, W)
    assert torch.allclose(out, suppress_streaks(image), atol=1e-6)
    assert torch.allclose(out[0], image[0] * 0.299 + image[1] * 0.587 + image[2] * 0.114, atol=1e-6)
    with pytest.raises(ValueError, match="odd"):
        suppress_streaks(image, width=4)


def test_singular_value_threshold_matches_the_svd() -> None:
    m = torch.randn(300, 6, generator=torch.Generator().manual_seed(0))
    u, s, vh = torch.linalg.svd(m.double(), full_matrices=False)
    for tau in (0.0, 3.0, 100.0):
        expected = (u * (s - tau).clamp(min=0)) @ vh
        assert torch.allclose(singular_value_threshold(m, tau).double(), expected, atol=1e-4)


@pytest.mark.parametrize("n", [3, 5, 8])
def test_robust_pca_separates_a_low_rank_matrix_from_sparse_corruption(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    m = 2000
    low = torch.rand(m, 1, generator=g) * (0.8 + 0.4 * torch.rand(1, n, generator=g))
    sparse = (torch.rand(m, n, generator=g) < 0.05) * torch.rand(m, n, generator=g)
    result = robust_pca(low + sparse, tol=1e-7)
    assert result.converged and 1 <= result.iterations < 100
    assert torch.allclose(result.low_rank + result.sparse, low + sparse, atol=1e-4)
    assert float((result.low_rank - low).abs().mean()) < 1e-2
    assert float((result.sparse - sparse).abs().mean()) < 1e-2
    assert int(torch.linalg.matrix_rank(result.low_rank.double(), atol=1e-3)) == 1


def test_robust_pca_edge_cases() -> None:
    zero = robust_pca(torch.zeros(10, 3))
    assert zero.converged and not zero.low_rank.any() and not zero.sparse.any()
    with pytest.raises(ValueError, match=r"\(m, n\)"):
        robust_pca(torch.zeros(3))
    with pytest.raises(TypeError, match="float"):
        robust_pca(torch.zeros(4, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="lam"):
        robust_pca(torch.ones(4, 2), lam=-1.0)
    capped = robust_pca(torch.rand(50, 4, generator=torch.Generator().manual_seed(0)), max_iter=1)
    assert capped.iterations == 1 and not capped.converged


@pytest.mark.parametrize(("mode", "window"), [("frame", None), ("fuse", 3), ("lowrank", 3), ("recurrent", None)])
def test_derain_video_folder_to_folder(tmp_path: Path, mode: str, window: int | None) -> None:
    clip = [quantize_8bit(f, "round") for f in moving_clip(5)]
    write_frames(clip, tmp_path / "in")
    model = None if mode == "lowrank" else sapnet.create_model("prenet", stages=2, channels=8)
    count = derain_video(tmp_path / "in", tmp_path / "out", model, mode, window=window, progress=False)
    assert count == 5
    written = list(read_frames(tmp_path / "out"))
    expected = list(VideoDerainer(model, mode, window=window).run(read_frames(tmp_path / "in")))
    assert len(written) == 5
    for a, b in zip(written, expected, strict=True):
        assert torch.equal(a, quantize_8bit(b, "round"))


def test_derain_video_to_mp4(tmp_path: Path) -> None:
    pytest.importorskip("av", reason="PyAV is not installed (pip install sapnet[video])")
    write_frames(moving_clip(4), tmp_path / "in")
    with pytest.raises(ValueError, match="fps"):  # a folder of frames has no frame rate
        derain_video(tmp_path / "in", tmp_path / "out.mp4", None, "lowrank", window=3, progress=False)
    assert not (tmp_path / "out.mp4").exists()
    assert derain_video(tmp_path / "in", tmp_path / "out.mp4", None, "lowrank", window=3, fps=10, progress=False) == 4
    assert len(list(read_frames(tmp_path / "out.mp4"))) == 4


# ------------------------------------------------------------------------------------------------- recurrent


def tiny_net(recurrent: str = "lstm", seed: int = 0) -> sapnet.DerainNet:
    torch.manual_seed(seed)
    return sapnet.create_model("prenet", stages=2, channels=8, recurrent=recurrent).eval()


class StateSpy:
    """Records the state each call of ``net.forward_with_state`` starts from and the state it returns."""

    def __init__(self, net: sapnet.DerainNet) -> None:
        self.given: list[tuple[torch.Tensor, ...] | None] = []
        self.returned: list[tuple[torch.Tensor, ...]] = []
        original = net.forward_with_state

        def spy(x: torch.Tensor, state: tuple[torch.Tensor, ...] | None = None) -> tuple[torch.Tensor, tuple]:
            self.given.append(None if state is None else tuple(t.clone() for t in state))
            out, final = original(x, state)
            self.returned.append(tuple(t.clone() for t in final))
            return out, final

        net.forward_with_state = spy  # type: ignore[method-assign]


@pytest.mark.parametrize("recurrent", ["lstm", "gru"])
@pytest.mark.parametrize("tile", [0, 40])
def test_recurrent_step_equals_run_and_carries_the_state(recurrent: str, tile: int) -> None:
    clip = moving_clip(4)
    net = tiny_net(recurrent)
    stepper = RecurrentDerainer(net, tile=tile)
    got = [out for frame in clip for out in stepper.step(frame)]
    assert stepper.delay == 0 and len(got) == 4 and stepper.flush() == []
    ran = list(VideoDerainer(net, "recurrent", tile=tile).run(clip))
    framed = list(FrameDerainer(net, tile=tile).run(clip))
    assert all(torch.equal(a, b) for a, b in zip(got, ran, strict=True))
    for t, (a, b) in enumerate(zip(got, framed, strict=True)):
        assert a.shape == (3, H, W) and a.dtype == torch.float32 and float(a.min()) >= 0 and float(a.max()) <= 1
        assert torch.equal(a, b) == (t == 0)  # the first frame starts from zero, as the frame mode
    assert stepper.cuts == []


def test_recurrent_tiles_carry_about_the_whole_frame_state() -> None:
    clip = moving_clip(3)
    whole = list(RecurrentDerainer(tiny_net(), tile=0).run(clip))
    tiled = list(RecurrentDerainer(tiny_net(), tile=40).run(clip))  # 2 x 2 overlapping tiles of 40 px
    for a, b in zip(whole, tiled, strict=True):
        assert float((a - b).abs().max()) < 0.02


def test_recurrent_resets_at_a_planted_cut() -> None:
    clip = moving_clip(3, seed=3) + moving_clip(3, seed=11)  # another texture from frame 3 on
    net = tiny_net()
    derainer = RecurrentDerainer(net)
    out = list(derainer.run(clip))
    framed = list(FrameDerainer(net).run(clip))
    assert derainer.cuts == [3]
    assert [torch.equal(a, b) for a, b in zip(out, framed, strict=True)] == [True, False, False, True, False, False]
    # the luma rule alone, and the flow rule alone, each find it
    for kwargs in ({"min_visible": 0.0, "cut_threshold": 0.1}, {"cut_threshold": float("inf")}):
        derainer = RecurrentDerainer(net, **kwargs)
        assert torch.equal(list(derainer.run(clip))[3], framed[3]) and derainer.cuts == [3], kwargs
    # every frame a cut: the frame mode
    derainer = RecurrentDerainer(net, cut_threshold=1e-9)
    assert all(torch.equal(a, b) for a, b in zip(derainer.run(clip), framed, strict=True))
    assert derainer.cuts == [1, 2, 3, 4, 5]


def test_recurrent_carries_the_state_exactly_over_identical_frames() -> None:
    frame = moving_clip(1)[0]
    net = tiny_net()
    spy = StateSpy(net)
    list(RecurrentDerainer(net).run([frame, frame, frame]))
    assert spy.given[0] is None
    for given, returned in zip(spy.given[1:], spy.returned[:-1], strict=True):  # zero flow, all pixels visible
        assert given is not None and all(torch.equal(g, r) for g, r in zip(given, returned, strict=True))


def test_recurrent_zeroes_the_state_where_it_is_not_visible() -> None:
    clip = moving_clip(2, dx=3, dy=0)  # the content moves 3 px left: the last columns come into view
    net = tiny_net()
    spy = StateSpy(net)
    list(RecurrentDerainer(net).run(clip))
    given = spy.given[1]
    assert given is not None
    for t in given:
        assert bool((t[..., -3:] == 0).all())  # from outside the previous frame
        assert float((t[..., 4:-6] != 0).float().mean()) > 0.9  # carried elsewhere
    halved = StateSpy(net2 := tiny_net())
    list(RecurrentDerainer(net2, carry=0.5).run(clip))
    assert halved.given[1] is not None
    for a, b in zip(halved.given[1], given, strict=True):
        torch.testing.assert_close(a, b * 0.5)


def test_recurrent_refuses_what_it_cannot_carry() -> None:
    with pytest.raises(ValueError, match=r"config\.recurrent='none'"):
        VideoDerainer(tiny_net("none"), "recurrent")
    with pytest.raises(ValueError, match=r"needs a sapnet DerainNet.*NoisyIdentity"):
        RecurrentDerainer(NoisyIdentity())
    assert RecurrentDerainer.model_problem(tiny_net()) is None and FrameDerainer.model_problem(NoisyIdentity()) is None
    for kwargs, match in [
        ({"window": 3}, "window must be 1"),
        ({"cut_threshold": 0.0}, "cut_threshold"),
        ({"min_visible": 1.5}, "min_visible"),
        ({"carry": -0.1}, "carry"),
        ({"tile": 16}, "tile_overlap"),
        ({"tile": -1}, "tile must be"),
    ]:
        with pytest.raises(ValueError, match=match):
            RecurrentDerainer(tiny_net(), **kwargs)  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("tile", [0, 40])
def test_recurrent_on_cuda_matches_the_cpu(tile: int) -> None:
    clip = moving_clip(3)
    cpu = list(RecurrentDerainer(tiny_net(), tile=tile).run(clip))
    derainer = RecurrentDerainer(tiny_net(), tile=tile, device="cuda")
    gpu = list(derainer.run(clip))
    assert derainer.state is not None and derainer.state[0].device.type == ("cpu" if tile else "cuda")
    for a, b in zip(cpu, gpu, strict=True):
        assert b.device.type == "cpu"
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)
