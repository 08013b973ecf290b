"""Video deraining: a derain network (or none) applied to a clip with a temporal mode, one frame at a time.

Frames are float32 RGB tensors (3, H, W) in [0, 1]; results are the same, on the CPU. Every mode is a
:class:`TemporalDerainer` with a streaming interface: :meth:`~TemporalDerainer.step` takes the clip's next frame
and returns the frames that became ready, :meth:`~TemporalDerainer.flush` ends the clip and returns the rest,
:meth:`~TemporalDerainer.run` does both over an iterable. A mode with a centred window of ``k`` frames holds
only those ``k`` frames (a deque) and answers ``k // 2`` frames late. :class:`VideoDerainer` picks a mode by name;
:func:`derain_video` derains a clip from a file or folder into another.

Modes (:data:`MODES`):

* ``"frame"`` (:class:`FrameDerainer`): the network on each frame alone, the baseline.
* ``"fuse"`` (:class:`FuseDerainer`): each frame derained, then each pixel of a centre frame that differs by more
  than :data:`FUSE_TOLERANCE` from the per-pixel median of the derained frames of its window warped onto it
  (optical flow centre -> neighbour on the derained frames, forward-backward occlusion check; the centre itself
  included) replaced by that median: streaks the network leaves in one frame only, and its frame-to-frame
  flicker, are voted out, and the rest keeps the centre's own detail.
* ``"lowrank"`` (:class:`LowRankDerainer`): training-free. The rainy frames of the window warped onto the centre
  form a matrix (one column per frame, the Y channel); robust PCA (:func:`sapnet.video.robust_pca`) splits it into
  a low-rank background and a sparse part, and the positive part of the sparse part at the centre is rain
  (rain only adds light). Alone (``model=None``) it subtracts that rain; with a network, the result is the
  per-pixel minimum of the network's output and the rain-subtracted frame.
* ``"recurrent"`` (:class:`RecurrentDerainer`): the network's ConvLSTM / ConvGRU state carried from each frame
  to the next (warped by the flow, zeroed where occluded, reset at scene cuts) instead of starting at zero.

Measured (with the plain median, ``tolerance=0``, for ``fuse``) on 9 frames of 160x120 cut from a Rain100L
background moving 3 px right and 2 px down per frame, with
``synthesize_rain(..., "light")`` drawn anew per frame and PReNet (``prenet_official_rain100l.pth``), RGB PSNR
against the clean frames: rainy 24.4 dB, ``frame`` 39.6, ``fuse`` (window 5) 45.3 with the flow on the derained
frames against 40.0 with it on the rainy ones (43.4 after :func:`suppress_streaks`); ``lowrank`` alone 40.0
(31.4 with the flow on the rainy frames as they are), with the network 41.3 as the per-pixel minimum against 39.1
taking the network's output where rain was found and the rain-subtracted frame elsewhere. With ``"medium"`` rain
(hazed): rainy 19.0, ``frame`` 26.6, ``fuse`` 27.7, ``lowrank`` alone 24.6 (it cannot lift haze), with the
network 27.6. Windows of 7 gain up to 0.5 dB more for ``fuse``; 5 is the default.

A new mode is a subclass of :class:`TemporalDerainer` implementing ``_push`` / ``_flush`` / ``_reset``, added to
:data:`MODES`.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from tqdm import tqdm

from sapnet.inference.derain import derain, network_width, resolve_model
from sapnet.inference.tiling import (
    DEFAULT_MEMORY_BUDGET,
    DEFAULT_TILE_OVERLAP,
    check_tiling,
    choose_tile,
    image_tiles,
)
from sapnet.models import DerainNet
from sapnet.models.blocks import RecurrentState
from sapnet.video.flow import LUMA_WEIGHTS, consistency_mask, optical_flow, warp
from sapnet.video.io import FrameWriter, _check_frame, probe, read_frames
from sapnet.video.lowrank import RPCA_MAX_ITER, RPCA_TOL, robust_pca

__all__ = [
    "CUT_THRESHOLD",
    "DEFAULT_WINDOW",
    "FLOW_SOURCES",
    "FUSE_TOLERANCE",
    "MIN_VISIBLE",
    "MODES",
    "STREAK_WIDTH",
    "FrameDerainer",
    "FuseDerainer",
    "LowRankDerainer",
    "RecurrentDerainer",
    "TemporalDerainer",
    "VideoDerainer",
    "WindowDerainer",
    "derain_video",
    "masked_median",
    "suppress_streaks",
]

DEFAULT_WINDOW = 5
"""Frames in the centred window of the ``fuse`` and ``lowrank`` modes when none is given."""

FUSE_TOLERANCE = 0.02
"""How far (per channel, [0, 1] units) the ``fuse`` mode lets a frame's own output differ from its window's median
before replacing it by the median (measured: :class:`FuseDerainer`)."""

STREAK_WIDTH = 7
"""Width in pixels of the horizontal opening :func:`suppress_streaks` applies to rainy frames before their flow."""

FlowSource = Literal["rainy", "derained"]
FLOW_SOURCES: tuple[FlowSource, ...] = ("rainy", "derained")
"""The frames the optical flow of a window mode can be computed on."""

ModelArg = torch.nn.Module | str | os.PathLike[str] | None


def masked_median(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-pixel median over the valid samples: ``values`` float (K, C, H, W), ``valid`` bool (K, 1, H, W).

    For each pixel and channel the median of the samples ``k`` with ``valid[k]`` (the mean of the two middle ones
    for an even count); ``values[0]`` where no sample is valid. Returns (C, H, W) of ``values``' dtype.
    """
    if values.dim() != 4 or valid.shape != (values.shape[0], 1, *values.shape[2:]):
        raise ValueError(
            f"values (K, C, H, W) and valid (K, 1, H, W) expected, got {tuple(values.shape)}, {tuple(valid.shape)}"
        )
    valid = valid.to(torch.bool)
    count = valid.sum(dim=0)  # (1, H, W)
    keyed = torch.where(valid, values, torch.inf)  # invalid samples sort last
    ordered = keyed.sort(dim=0).values
    lower = ((count - 1).clamp(min=0) // 2)[None].expand(1, *values.shape[1:])
    upper = (count // 2).clamp(max=values.shape[0] - 1)[None].expand(1, *values.shape[1:])
    median = (ordered.gather(0, lower)[0] + ordered.gather(0, upper)[0]) / 2
    return torch.where(count > 0, median, values[0])


def _luma(frames: torch.Tensor) -> torch.Tensor:
    """BT.601 luma (..., H, W) of float RGB frames (..., 3, H, W), unrounded (the weights of the flow's luma)."""
    weights = torch.tensor(LUMA_WEIGHTS, dtype=frames.dtype, device=frames.device)
    return torch.einsum("c,...chw->...hw", weights, frames)


def suppress_streaks(frame: torch.Tensor, width: int = STREAK_WIDTH) -> torch.Tensor:
    """The luma of a rainy frame with thin bright streaks removed, for computing optical flow on.

    ``frame``: float RGB (3, H, W) in [0, 1]. A grey-scale opening (erosion then dilation, a minimum then a maximum
    over ``width`` pixels of a row) of its BT.601 luma: bright structures narrower than ``width`` pixels
    horizontally (near-vertical rain streaks) go, wider content stays. Returns float (1, H, W).
    """
    if width < 1 or width % 2 == 0:
        raise ValueError(f"width must be an odd number of pixels >= 1, got {width}")
    y = _luma(frame)[None, None]
    pad = (0, width // 2)
    y = -F.max_pool2d(-y, (1, width), 1, pad)
    return F.max_pool2d(y, (1, width), 1, pad)[0]


class TemporalDerainer:
    """A temporal mode: derains a clip fed one frame at a time. Subclasses implement ``_push`` (one checked
    frame in, the frames that became ready out), ``_flush`` (the rest at the clip's end) and ``_reset``.

    Args:
        model: a derain network, a registry name or a checkpoint path (see :func:`sapnet.derain`); ``None`` only
            for modes that work without one (:attr:`needs_model` false).
        window: frames in the centred window (odd, >= 1).
        tile: the network's tiling, as ``tile`` of :func:`sapnet.derain` (``None``: whole frames while they fit
            the default memory budget).
        device: where the network (and robust PCA) runs; default the model's device (the CPU without a model).
            Frames stay on the CPU, as does the optical flow.
    """

    name: ClassVar[str] = ""
    needs_model: ClassVar[bool] = True
    windowed: ClassVar[bool] = False
    """Whether the mode works over a centred window of frames (``window`` > 1 allowed, default
    :data:`DEFAULT_WINDOW`); the others take ``window=1`` only."""
    _no_window: ClassVar[str] = "has no window"  # why a mode without a window refuses one, in its error

    def __init__(
        self,
        model: ModelArg,
        *,
        window: int = 1,
        tile: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if isinstance(window, bool) or not isinstance(window, int):
            raise TypeError(f"window must be an int, got {type(window).__name__}")
        if window < 1 or window % 2 == 0:
            raise ValueError(f"window must be an odd number of frames >= 1 (a centred window), got {window}")
        if model is None and self.needs_model:
            raise ValueError(f"mode {self.name!r} needs a derain network: pass model= (only 'lowrank' works without)")
        self.model: torch.nn.Module | None = None if model is None else resolve_model(model)
        if window != 1 and not self.windowed:
            raise ValueError(f"mode {self.name!r} {self._no_window}: window must be 1, got {window}")
        self.window = window
        self.tile = tile
        if device is not None:
            self.device = torch.device(device)
        else:
            p = None if self.model is None else next(self.model.parameters(), None)
            self.device = p.device if p is not None else torch.device("cpu")
        self._count = 0  # frames of the current clip given so far
        self._size: tuple[int, int] | None = None

    @classmethod
    def model_problem(cls, model: torch.nn.Module) -> str | None:
        """Why this mode cannot use the network ``model`` (``None``: it can); any network suits the base modes."""
        return None

    @property
    def delay(self) -> int:
        """Frames :meth:`step` answers late: ``window // 2``."""
        return self.window // 2

    def network(self, frame: torch.Tensor) -> torch.Tensor:
        """The network's output for one frame (float32 (3, H, W) in [0, 1], CPU). ``RuntimeError`` without one."""
        if self.model is None:
            raise RuntimeError(f"mode {self.name!r} was made without a network")
        return derain(frame, self.model, device=self.device, tile=self.tile)

    def step(self, frame: torch.Tensor) -> list[torch.Tensor]:
        """Give the clip's next frame (float (3, H, W) in [0, 1], the first frame's size, any device); returns the
        derained frames that became ready, oldest first (none during the first :attr:`delay` frames)."""
        _check_frame(frame, self._count)
        size = (int(frame.shape[-2]), int(frame.shape[-1]))
        if self._size is not None and size != self._size:
            raise ValueError(
                f"frame {self._count} is {size[1]}x{size[0]}, but the clip's frames are "
                f"{self._size[1]}x{self._size[0]}: all frames of a clip must have one size"
            )
        self._size = size
        out = self._push(frame.detach().to("cpu", torch.float32))
        self._count += 1
        return out

    def flush(self) -> list[torch.Tensor]:
        """End the clip: the derained frames not yet returned, in order. The next :meth:`step` starts a new clip."""
        out = self._flush() if self._count else []
        self.reset()
        return out

    def reset(self) -> None:
        """Drop the current clip without returning its remaining frames."""
        self._count = 0
        self._size = None
        self._reset()

    def run(self, frames: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Derain a whole clip: :meth:`step` over ``frames`` (consumed lazily), then :meth:`flush`; yields one
        derained frame per input frame, in order."""
        for frame in frames:
            yield from self.step(frame)
        yield from self.flush()

    def _push(self, frame: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def _flush(self) -> list[torch.Tensor]:
        raise NotImplementedError

    def _reset(self) -> None:
        raise NotImplementedError


class FrameDerainer(TemporalDerainer):
    """``"frame"`` mode: the network on each frame alone (no window, no delay)."""

    name = "frame"
    _no_window = "derains each frame alone"

    def _push(self, frame: torch.Tensor) -> list[torch.Tensor]:
        return [self.network(frame)]

    def _flush(self) -> list[torch.Tensor]:
        return []

    def _reset(self) -> None:
        pass


@dataclass
class _Entry:
    """A frame of the window: its index in the clip, the rainy frame, the network's output (where there is a
    network) and the image the optical flow is computed on."""

    index: int
    rainy: torch.Tensor
    derained: torch.Tensor | None
    guide: torch.Tensor


class WindowDerainer(TemporalDerainer):
    """A mode over a centred window of frames: frame ``t`` is made from frames ``t - k // 2 .. t + k // 2`` (those
    that exist: fewer at the clip's start and end), so it is returned when frame ``t + k // 2`` is given (or at
    :meth:`flush`). Holds the last ``k`` frames and the optical flows between them, nothing more.

    Subclasses implement ``_centre(entries, at)``: the output for ``entries[at]`` from the window's entries.

    Args:
        flow_from: the frames the optical flow (OpenCV DIS, :func:`~sapnet.video.optical_flow`) is computed on:
            ``"derained"``, the network's outputs (needs a network), or ``"rainy"``, the inputs with their streaks
            suppressed (:func:`suppress_streaks`); ``None``: ``"derained"`` where there is a network.
        others: as :class:`TemporalDerainer`.
    """

    windowed = True

    def __init__(
        self,
        model: ModelArg,
        *,
        window: int = DEFAULT_WINDOW,
        tile: int | None = None,
        device: torch.device | str | None = None,
        flow_from: FlowSource | None = None,
    ) -> None:
        super().__init__(model, window=window, tile=tile, device=device)
        if flow_from is None:
            flow_from = "rainy" if self.model is None else "derained"
        if flow_from not in FLOW_SOURCES:
            raise ValueError(f"flow_from must be one of {', '.join(map(repr, FLOW_SOURCES))}, got {flow_from!r}")
        if flow_from == "derained" and self.model is None:
            raise ValueError("flow_from='derained' needs a derain network (model=None derains nothing)")
        self.flow_from: FlowSource = flow_from
        self._entries: deque[_Entry] = deque(maxlen=window)
        self._flows: dict[tuple[int, int], torch.Tensor] = {}
        self._next = 0  # index of the next frame to return

    def _push(self, frame: torch.Tensor) -> list[torch.Tensor]:
        derained = None if self.model is None else self.network(frame)
        guide = derained if self.flow_from == "derained" and derained is not None else suppress_streaks(frame)
        self._entries.append(_Entry(self._count, frame, derained, guide))
        centre = self._count - self.delay
        return [self._emit(centre)] if centre >= 0 else []

    def _flush(self) -> list[torch.Tensor]:
        return [self._emit(centre) for centre in range(self._next, self._count)]

    def _reset(self) -> None:
        self._entries.clear()
        self._flows.clear()
        self._next = 0

    def _emit(self, centre: int) -> torch.Tensor:
        entries = [e for e in self._entries if abs(e.index - centre) <= self.delay]
        at = next(i for i, e in enumerate(entries) if e.index == centre)
        oldest = entries[0].index
        for key in [key for key in self._flows if min(key) < oldest]:
            del self._flows[key]
        self._next = centre + 1
        return self._centre(entries, at)

    def _flow(self, a: _Entry, b: _Entry) -> torch.Tensor:
        """Optical flow (2, H, W) from frame ``a`` to frame ``b`` (on :attr:`flow_from`), cached while both are
        in the window (each pair's flows serve two centres)."""
        key = (a.index, b.index)
        flow = self._flows.get(key)
        if flow is None:
            flow = self._flows[key] = optical_flow(a.guide, b.guide)
        return flow

    def _aligned(self, entries: list[_Entry], at: int, frames: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``frames`` (one per entry, (3, H, W)) backward-warped onto the centre ``entries[at]``, and where each is
        valid: float (K, 3, H, W) and bool (K, 1, H, W), the centre's own frame unwarped and valid everywhere.
        A warped frame is valid where its sample lies inside the frame and passes the forward-backward check."""
        centre = entries[at]
        warped: list[torch.Tensor] = []
        valid: list[torch.Tensor] = []
        for entry, frame in zip(entries, frames, strict=True):
            if entry is centre:
                warped.append(frame)
                valid.append(torch.ones((1, *frame.shape[1:]), dtype=torch.bool))
                continue
            forth = self._flow(centre, entry)
            back = self._flow(entry, centre)
            moved, _ = warp(frame, forth)
            warped.append(moved)
            valid.append(consistency_mask(forth, back))  # includes "inside the frame"
        return torch.stack(warped), torch.stack(valid)

    def _centre(self, entries: list[_Entry], at: int) -> torch.Tensor:
        raise NotImplementedError


class FuseDerainer(WindowDerainer):
    """``"fuse"`` mode: each frame derained by the network, then each pixel of the centre frame checked against
    the per-pixel :func:`masked_median` of the derained frames of its window warped onto it, over the pixels each
    is valid at (forward-backward consistent, inside the frame), the centre's own output always included: where
    the centre's value is within ``tolerance`` of that median it is kept, elsewhere (a streak the network left in
    this frame only, a flickering value) it is replaced by the median. Where no neighbour is valid the output is
    the centre's own. With ``window=1`` it is the ``frame`` mode exactly; ``tolerance=0`` is the plain median.

    Why keep the centre where it agrees: every warped neighbour is resampled (bilinear) along an imperfect flow,
    so their median is slightly blurred. Measured with the public SAPNet weights (``benchmarks/video.py``
    settings, window 5) on the first 9 frames of the three real clips of ``../shared/data/video``, flicker / NIQE:
    ``frame`` 0.0145 / 3.69, plain median 0.0068 / 3.95 (blurred: NIQE up), ``tolerance`` 0.01: 0.0078 / 3.79,
    0.015: 0.0087 / 3.69, **0.02: 0.0095 / 3.60**, 0.025: 0.0103 / 3.56; on 8 synthetic heavy-rain clips
    (256x256, 12 frames) PSNR / warping error: ``frame`` 20.24 dB / 0.0156, median 20.61 / 0.0091, 0.02: 20.56 /
    0.0094. The default 0.02 (5 grey levels) halves the flicker of real clips without raising NIQE.

    The flow is computed on the derained frames (the default ``flow_from``): on a moving clip with synthetic
    rain and PReNet it gave 45.3 dB against 40.0 on the rainy frames (figures in the module docstring; checked by
    ``tests/test_video_derain.py``). Cost per frame: the network once, plus ``window - 1`` DIS flows (each pair's
    two flows are computed once and used by both centres) and a sort of ``window`` values per pixel.

    Args:
        tolerance: the largest difference (per channel, in [0, 1] units) from the window's median at which the
            centre's own value is kept; ``0``: always the median.
        others: as :class:`WindowDerainer`.
    """

    name = "fuse"

    def __init__(
        self,
        model: ModelArg,
        *,
        window: int = DEFAULT_WINDOW,
        tile: int | None = None,
        device: torch.device | str | None = None,
        flow_from: FlowSource | None = None,
        tolerance: float = FUSE_TOLERANCE,
    ) -> None:
        super().__init__(model, window=window, tile=tile, device=device, flow_from=flow_from)
        if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance <= 1:
            raise ValueError(f"tolerance must be a number in [0, 1], got {tolerance!r}")
        self.tolerance = float(tolerance)

    def _centre(self, entries: list[_Entry], at: int) -> torch.Tensor:
        outputs: list[torch.Tensor] = []
        for entry in entries:
            assert entry.derained is not None  # this mode has a network
            outputs.append(entry.derained)
        if len(outputs) == 1:
            return outputs[0]
        values, valid = self._aligned(entries, at, outputs)
        median = masked_median(values, valid)
        own = outputs[at]
        if self.tolerance > 0:
            median = torch.where((own - median).abs() <= self.tolerance, own, median)
        return median.clamp_(0, 1)


class LowRankDerainer(WindowDerainer):
    """``"lowrank"`` mode: robust PCA of the flow-aligned rainy window; training-free, ``model=None`` allowed.

    For each centre frame the rainy frames of its window are warped onto it (flow on the derained frames where
    there is a network, else on the rainy ones after :func:`suppress_streaks`; pixels that fail the
    forward-backward check, or fall outside, take the centre's own value) and their BT.601 luma stacked as the
    columns of an (H * W, K) matrix ``D``. :func:`~sapnet.video.robust_pca` splits ``D = L + S`` (``lam``
    default ``1 / sqrt(H * W)``); rain is ``R = max(S_centre, 0)`` (rain only adds light; negative sparse values
    are moving content, kept). Without a network the result is ``rainy - R`` in each of R, G and B (rain is
    achromatic). With a network it is ``min(network output, rainy - R)`` per pixel and channel, which measured
    1.6 to 2.4 dB better than taking the network's output only where ``R`` is above a threshold (module docstring).
    Suited to light and moderate rain: dense rain is not sparse and haze is not removed.

    Needs ``window >= 3``; a clip of one frame is returned as the network's output (or unchanged without one).
    Cost per frame: ``window - 1`` DIS flows and one robust PCA of ``H * W x window`` float32 values on
    ``device``, about 13 iterations of a few passes over it: about 0.7 s for 1280x720 and 2.6 s for 1920x1080
    with window 5 on one CPU thread (the Gram-matrix SVD keeps it linear in ``H * W``).

    Args:
        lam: the weight of the sparse part; ``None``: ``1 / sqrt(H * W)``.
        tol, max_iter: robust PCA's stopping rule.
        others: as :class:`WindowDerainer`.
    """

    name = "lowrank"
    needs_model = False

    def __init__(
        self,
        model: ModelArg = None,
        *,
        window: int = DEFAULT_WINDOW,
        tile: int | None = None,
        device: torch.device | str | None = None,
        flow_from: FlowSource | None = None,
        lam: float | None = None,
        tol: float = RPCA_TOL,
        max_iter: int = RPCA_MAX_ITER,
    ) -> None:
        super().__init__(model, window=window, tile=tile, device=device, flow_from=flow_from)
        if window < 3:
            raise ValueError(f"mode 'lowrank' needs a window of at least 3 frames, got {window}")
        if lam is not None and lam <= 0:
            raise ValueError(f"lam must be positive, got {lam}")
        self.lam = lam
        self.tol = tol
        self.max_iter = max_iter

    def _rain(self, entries: list[_Entry], at: int) -> torch.Tensor:
        """The rain of the centre frame ``entries[at]``: float32 (1, H, W) >= 0 (Y channel, [0, 1] units)."""
        rainy = [e.rainy for e in entries]
        values, valid = self._aligned(entries, at, rainy)
        values = torch.where(valid, values, rainy[at])  # occluded or outside: the centre's own value
        h, w = values.shape[-2:]
        d = _luma(values).reshape(len(entries), h * w).T.contiguous().to(self.device)
        sparse = robust_pca(d, self.lam, tol=self.tol, max_iter=self.max_iter).sparse
        return sparse[:, at].clamp(min=0).reshape(1, h, w).to("cpu", torch.float32)

    def _centre(self, entries: list[_Entry], at: int) -> torch.Tensor:
        centre = entries[at]
        if len(entries) == 1:
            return centre.rainy.clone() if centre.derained is None else centre.derained
        rain = self._rain(entries, at)
        background = (centre.rainy - rain).clamp_(0, 1)
        if centre.derained is None:
            return background
        return torch.minimum(centre.derained, background)


CUT_THRESHOLD = 0.25
"""Mean absolute difference, in [0, 1] units, of the streak-suppressed luma (:func:`suppress_streaks`) of two
consecutive rainy frames above which the ``recurrent`` mode takes the second for a scene cut without computing
the flow. Measured: 0.00 to 0.14 between consecutive frames of the three real clips of ``shared/data/video`` and
of synthetic clips with heavy rain (pan, zoom, shake, static); 0.18 to 0.35 across cuts between them (those below
0.25 are caught by :data:`MIN_VISIBLE`)."""

MIN_VISIBLE = 0.3
"""Fraction of a frame's pixels that must pass the forward-backward check with its predecessor (flow on the
streak-suppressed luma) for the ``recurrent`` mode to carry the state; below it, a scene cut. Measured on the
same clips: 0.66 to 0.99 between consecutive frames, 0.01 to 0.07 across cuts."""


class RecurrentDerainer(TemporalDerainer):
    """``"recurrent"`` mode: the network's recurrent state carried from one frame to the next.

    A :class:`~sapnet.models.DerainNet` with a recurrent cell (``config.recurrent`` ``"lstm"`` or ``"gru"``)
    starts the ConvLSTM / ConvGRU state of its first stage at zero for every image. Here frame ``t``'s first stage
    starts from frame ``t - 1``'s final state (:meth:`~sapnet.models.DerainNet.forward_with_state`), brought
    into frame ``t``:

    * warped with the backward flow (frame ``t`` -> ``t - 1``, OpenCV DIS on the streak-suppressed luma of the
      rainy frames, :func:`suppress_streaks`; the derained frame ``t`` does not exist yet), bilinear (exactly
      unchanged where the flow is zero), detached (the derainer runs without autograd), times ``carry``;
    * zeroed where the forward-backward check fails (:func:`~sapnet.video.consistency_mask`: occluded in
      ``t - 1``, or coming from outside the frame);
    * dropped entirely at a scene cut: the network then starts from zero exactly as the ``frame`` mode does
      (same output). A frame is a cut when the mean absolute difference of its streak-suppressed luma and its
      predecessor's exceeds ``cut_threshold``, or when fewer than ``min_visible`` of its pixels pass the check.
      The frames found to be cuts are listed in :attr:`cuts`.

    The state is float32 at the frame's resolution, ``2 * C`` (LSTM) or ``C`` (GRU) channels: 0.5 GiB for a
    1920x1080 frame and the 32-channel LSTM. No delay, one output per frame. Cost per frame: the network once and
    two DIS flows (about as much as a ``fuse`` window of 2).

    Tiling: the state lives for the whole frame, on the CPU when the frame is tiled (on ``device`` otherwise);
    each tile starts from its crop of it, and the tiles' final states are blended back with the same linear ramps
    as their outputs (:func:`~sapnet.inference.tiling.tiled_apply`), so the state of a pixel where tiles overlap
    is a weighted mean of theirs: an approximation, as tiling itself is for SAPNet's attention. ``tile`` follows
    :func:`sapnet.derain` (``None``: whole frames while they fit the default memory budget).

    It does not help the public weights, which were trained with the state starting at zero on every image. RGB
    PSNR (dB) on 9 frames of 160x120 of a Rain100L background moving (3, 2) px a frame, rain drawn anew per frame,
    ``frame`` / ``recurrent`` / ``recurrent`` with ``carry=0.5``: PReNet (Rain100L) light rain 37.6 / 34.3 / 36.6,
    medium 26.1 / 26.5 / 26.7; SAPNet (Rain100H) medium 27.9 / 27.8 / 28.0, heavy 21.0 / 20.6 / 20.9; on four
    synthetic 240x160 clips with heavy rain (``sapnet synth --video``: pan, zoom, shake, static) SAPNet loses 0.9
    to 2.2 dB and PReNet (Rain100H) 0.3 to 0.8 dB on three of them (+0.2 on the static one), and the warping
    error against the clean clip grows in nearly every case (up to 3x for SAPNet). The mode is the plumbing for
    networks trained with a carried state.

    Args:
        model: a :class:`~sapnet.models.DerainNet` with a recurrent cell (or a registry name / checkpoint path of
            one); ``ValueError`` otherwise.
        window: 1 (the mode has no window).
        cut_threshold: see above (default :data:`CUT_THRESHOLD`); ``inf`` never cuts on luma.
        min_visible: see above (default :data:`MIN_VISIBLE`), in [0, 1]; 0 never cuts on the flow.
        carry: the factor in [0, 1] on the warped state (1: carried as it is; 0: never carried, the ``frame`` mode
            up to rounding).
        tile_overlap: pixels shared by neighbouring tiles.
        others: as :class:`TemporalDerainer`.
    """

    name = "recurrent"
    _no_window = "carries a state from frame to frame"

    def __init__(
        self,
        model: ModelArg,
        *,
        window: int = 1,
        tile: int | None = None,
        device: torch.device | str | None = None,
        cut_threshold: float = CUT_THRESHOLD,
        min_visible: float = MIN_VISIBLE,
        carry: float = 1.0,
        tile_overlap: int = DEFAULT_TILE_OVERLAP,
    ) -> None:
        super().__init__(model, window=window, tile=tile, device=device)
        net = self.model
        problem = None if net is None else self.model_problem(net)
        if problem is not None:
            raise ValueError(f"mode 'recurrent': {problem}")
        assert isinstance(net, DerainNet)
        if tile is not None and tile < 0:
            raise ValueError(f"tile must be None (automatic), 0 (whole frames) or a number of pixels, got {tile}")
        if tile:
            check_tiling(tile, tile_overlap)
        if not cut_threshold > 0:
            raise ValueError(f"cut_threshold must be positive, got {cut_threshold}")
        if not 0 <= min_visible <= 1:
            raise ValueError(f"min_visible must be in [0, 1], got {min_visible}")
        if not 0 <= carry <= 1:
            raise ValueError(f"carry must be in [0, 1], got {carry}")
        self.net: DerainNet = net
        self.cut_threshold = float(cut_threshold)
        self.min_visible = float(min_visible)
        self.carry = float(carry)
        self.tile_overlap = tile_overlap
        self.cuts: list[int] = []
        """The frames (0-based) of the current clip, or of the last one ended, at which the state was dropped
        as a scene cut."""
        self.state: RecurrentState | None = None
        """The network's final state on the last frame given (``None`` before the clip's first frame)."""
        self._guide: torch.Tensor | None = None  # the last frame's streak-suppressed luma (1, H, W)

    @classmethod
    def model_problem(cls, model: torch.nn.Module) -> str | None:
        """Why ``model`` has no recurrent state to carry (``None``: it has): not a
        :class:`~sapnet.models.DerainNet`, or one with ``config.recurrent == "none"``."""
        if not isinstance(model, DerainNet):
            return f"needs a sapnet DerainNet (it carries the network's recurrent state), got {type(model).__name__}"
        if model.cell is None:
            return (
                "needs a network with a recurrent cell; this one has config.recurrent='none' (no state to carry): "
                "use mode 'frame' or 'fuse'"
            )
        return None

    def _push(self, frame: torch.Tensor) -> list[torch.Tensor]:
        if self._count == 0:
            self.cuts = []
        guide = suppress_streaks(frame)
        state = None
        if self.state is not None and self._guide is not None:
            state = self._carried(self.state, self._guide, guide)
            if state is None:
                self.cuts.append(self._count)
        out, self.state = self._network(frame, state)
        self._guide = guide
        return [out]

    def _flush(self) -> list[torch.Tensor]:
        return []

    def _reset(self) -> None:
        self.state = None
        self._guide = None

    @torch.inference_mode()
    def _carried(self, state: RecurrentState, previous: torch.Tensor, current: torch.Tensor) -> RecurrentState | None:
        """The previous frame's final state brought into the current frame (``None``: a scene cut), from the
        streak-suppressed lumas (1, H, W) of both frames."""
        if float((current - previous).abs().mean()) > self.cut_threshold:
            return None
        back = optical_flow(current, previous)  # current -> previous: samples the previous frame's state
        forth = optical_flow(previous, current)
        visible = consistency_mask(back, forth)
        if float(visible.float().mean()) < self.min_visible:
            return None
        carried = []
        for t in state:
            moved, _ = warp(t, back[None])  # outside the frame is not visible: zeroed with the occlusions
            # Where the flow is exactly zero the state stays exactly as it was (bilinear sampling at the pixel's
            # own position is off by float rounding).
            still = (back == 0).all(dim=0)[None, None].to(moved.device)
            moved = torch.where(still, t, moved)
            keep = visible[None].to(moved.device, moved.dtype)
            carried.append(moved.mul_(keep * self.carry))
        return tuple(carried)

    def _network(self, frame: torch.Tensor, state: RecurrentState | None) -> tuple[torch.Tensor, RecurrentState]:
        """The network on ``frame`` (3, H, W) from ``state``: the output (3, H, W) clamped to [0, 1] on the CPU,
        as :func:`sapnet.derain` gives it, and the final state (whole frames: on :attr:`device`; tiled: on the
        CPU)."""
        # As sapnet.derain prepares and calls the network, so that a reset frame gives the frame mode's output;
        # outside inference mode, so that the parameters stay ordinary tensors.
        net = self.net.to(self.device).to(memory_format=torch.channels_last).eval()
        h, w = frame.shape[-2:]
        tile = self.tile
        if tile is None:
            tile = choose_tile(h, w, network_width(net), DEFAULT_MEMORY_BUDGET)
            if tile:
                check_tiling(tile, self.tile_overlap)

        def forward(x: torch.Tensor, s: RecurrentState | None) -> tuple[torch.Tensor, RecurrentState]:
            x = x.to(self.device).contiguous(memory_format=torch.channels_last)
            if s is not None:
                s = tuple(t.to(self.device) for t in s)
            out, final = net.forward_with_state(x, s)
            return out.float(), final

        with torch.inference_mode():
            if not tile:
                out, final = forward(frame[None], state)
                return out.cpu()[0].clamp_(0, 1), final
            return self._tiled(frame, state, tile, forward)

    def _tiled(
        self,
        frame: torch.Tensor,
        state: RecurrentState | None,
        tile: int,
        forward: Callable[[torch.Tensor, RecurrentState | None], tuple[torch.Tensor, RecurrentState]],
    ) -> tuple[torch.Tensor, RecurrentState]:
        """``forward`` over overlapping tiles of ``frame``, each from its crop of ``state``; the outputs and the
        final states blended as :func:`~sapnet.inference.tiling.tiled_apply` blends outputs (its arithmetic, so a
        frame without state gives the ``frame`` mode's tiled output)."""
        image = frame[None]
        _, _, h, w = image.shape
        out = torch.zeros(image.shape, dtype=torch.float32)
        weight = torch.zeros((1, 1, h, w), dtype=torch.float32)
        final: list[torch.Tensor] = []
        for t in image_tiles(h, w, tile, self.tile_overlap):
            result, tile_state = forward(t.crop(image), None if state is None else tuple(t.crop(s) for s in state))
            t.crop(out).add_(result.to("cpu") * t.weight)
            t.crop(weight).add_(t.weight)
            if not final:
                final = [torch.zeros((1, s.shape[1], h, w), dtype=torch.float32) for s in tile_state]
            for acc, s in zip(final, tile_state, strict=True):
                t.crop(acc).add_(s.float().to("cpu") * t.weight)
        return (out / weight)[0].clamp_(0, 1), tuple(acc / weight for acc in final)


MODES: dict[str, type[TemporalDerainer]] = {
    FrameDerainer.name: FrameDerainer,
    FuseDerainer.name: FuseDerainer,
    LowRankDerainer.name: LowRankDerainer,
    RecurrentDerainer.name: RecurrentDerainer,
}
"""The temporal modes by name, as :class:`VideoDerainer` and :func:`derain_video` take them."""


class VideoDerainer:
    """A clip derainer with the temporal mode ``mode`` (a name in :data:`MODES`): the same streaming interface,
    :meth:`step`, :meth:`flush`, :meth:`run`, passed on to the mode's class (:attr:`derainer`).

    Args:
        model: a derain network, a registry name or a checkpoint path; ``None`` only for ``"lowrank"``.
        mode: ``"frame"``, ``"fuse"``, ``"lowrank"`` or ``"recurrent"`` (see the module docstring).
        window: frames in the centred window (odd); ``None``: :data:`DEFAULT_WINDOW` for the modes with a window
            (``"fuse"``, ``"lowrank"``), 1 for the others.
        tile, device: as :class:`TemporalDerainer`.
        options: keyword arguments of the mode's class (e.g. ``tolerance`` of :class:`FuseDerainer`, ``carry`` of
            :class:`RecurrentDerainer`); one the class does not take raises ``TypeError``.

    Examples:
        >>> import sapnet
        >>> net = sapnet.create_model("prenet", stages=2, channels=8)
        >>> derainer = VideoDerainer(net, mode="fuse", window=3)
        >>> clip = [torch.rand(3, 24, 32) for _ in range(4)]
        >>> [len(derainer.step(frame)) for frame in clip], len(derainer.flush())  # one frame late
        ([0, 1, 1, 1], 1)
    """

    def __init__(
        self,
        model: ModelArg,
        mode: str = "fuse",
        *,
        window: int | None = None,
        tile: int | None = None,
        device: torch.device | str | None = None,
        **options: Any,
    ) -> None:
        cls = MODES.get(mode) if isinstance(mode, str) else None
        if cls is None:
            raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(map(repr, MODES))}")
        if window is None:
            window = DEFAULT_WINDOW if cls.windowed else 1
        self.mode = mode
        self.derainer: TemporalDerainer = cls(model, window=window, tile=tile, device=device, **options)

    @property
    def window(self) -> int:
        return self.derainer.window

    @property
    def delay(self) -> int:
        """Frames :meth:`step` answers late: ``window // 2``."""
        return self.derainer.delay

    def step(self, frame: torch.Tensor) -> list[torch.Tensor]:
        """See :meth:`TemporalDerainer.step`."""
        return self.derainer.step(frame)

    def flush(self) -> list[torch.Tensor]:
        """See :meth:`TemporalDerainer.flush`."""
        return self.derainer.flush()

    def reset(self) -> None:
        """See :meth:`TemporalDerainer.reset`."""
        self.derainer.reset()

    def run(self, frames: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """See :meth:`TemporalDerainer.run`."""
        return self.derainer.run(frames)


def derain_video(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    model: ModelArg,
    mode: str = "fuse",
    *,
    window: int | None = None,
    fps: float | Fraction | None = None,
    tile: int | None = None,
    device: torch.device | str | None = None,
    crf: int | None = None,
    lossless: bool = False,
    progress: bool = True,
) -> int:
    """Derain the clip ``source`` (a video file or a folder of frames, :func:`~sapnet.video.read_frames`) into
    ``dest`` (an .mp4 or a folder of PNGs, :class:`~sapnet.video.FrameWriter`), frame by frame; returns the
    number of frames written. ``dest`` appears only when the whole clip is done.

    ``model``, ``mode``, ``window``, ``tile``, ``device``: as :class:`VideoDerainer`. ``fps``: the frame rate of
    an .mp4 ``dest``; ``None``: the source's (a folder of frames has none: give it). ``crf``, ``lossless``: as
    :class:`~sapnet.video.FrameWriter`. ``progress``: a tqdm bar over the clip's frames (on stderr).
    """
    derainer = VideoDerainer(model, mode, window=window, tile=tile, device=device)
    info = probe(source)
    rate = info.fps if fps is None else fps
    with (
        FrameWriter(dest, rate, crf=crf, lossless=lossless) as writer,
        tqdm(total=info.frames, desc=Path(source).name, unit="frame", disable=not progress) as bar,
    ):
        for frame in derainer.run(read_frames(source)):
            writer.write(frame)
            bar.update(1)
    return writer.frames_written
