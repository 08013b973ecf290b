"""Temporal consistency of a clip: how much a result flickers or wobbles from one frame to the next.

Each metric scores the consecutive pairs of frames of a clip and averages them; lower is better, 0 is a perfectly
consistent clip. Frames are float (3, H, W) RGB tensors in [0, 1] (label maps, for :func:`label_instability`),
given as any iterable (a list, or a stream such as :func:`sapnet.video.read_frames`): only the previous frame is
kept. Optical flow is OpenCV's DIS (:func:`sapnet.video.optical_flow`), computed on the CPU; the metrics are not
differentiable.

* :func:`warping_error` / :class:`WarpingError` (Lai et al., "Learning Blind Video Temporal Consistency", ECCV
  2018): the squared RGB difference between each frame and its predecessor warped onto it, over the pixels the
  forward-backward check finds visible in both; flow from the ground truth where there is one.
* :func:`tof` / :class:`TOF` (tOF, Chu et al., "Learning Temporal Coherence via Self-Supervision for GAN-based
  Video Generation", TOG 2020): how far the motion between consecutive output frames is from the ground truth's.
* :func:`flicker` / :class:`Flicker`: the absolute difference between a frame and its warped predecessor, for
  clips without ground truth (flow from the rainy inputs or from the output itself).
* :func:`label_instability` / :class:`LabelInstability`: of a segmenter's label maps (int (H, W)) rather than of
  frames, the fraction of pixels whose label differs from their flow-warped predecessor's (flow on the frames
  the labels were predicted for: the clean clip where there is one).

The ``*_per_frame`` functions and the classes' ``values`` give one value per pair: the i-th for frames i and i + 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Literal

import torch
from torch import nn

from sapnet.data.image import check_float_range
from sapnet.video.flow import consistency_mask, optical_flow, warp

__all__ = [
    "TOF",
    "Flicker",
    "LabelInstability",
    "WarpingError",
    "flicker",
    "flicker_per_frame",
    "label_instability",
    "label_instability_per_frame",
    "tof",
    "tof_per_frame",
    "warping_error",
    "warping_error_per_frame",
]


def _check_frame(frame: torch.Tensor, what: str) -> None:
    if frame.dim() != 3 or frame.shape[0] != 3:
        raise ValueError(f"{what}: expected a (3, H, W) RGB frame, got shape {tuple(frame.shape)}")
    if not frame.is_floating_point():
        raise TypeError(f"{what}: expected a float frame in [0, 1], got {frame.dtype}")
    check_float_range(frame, what)


def _check_labels(labels: torch.Tensor, what: str) -> None:
    if labels.dim() != 2 or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{what}: expected an integer (H, W) label map, got {labels.dtype} {tuple(labels.shape)}")


def _visible_warp(
    previous: torch.Tensor,
    current: torch.Tensor,
    previous_reference: torch.Tensor | None,
    current_reference: torch.Tensor | None,
    mode: Literal["bilinear", "nearest"] = "bilinear",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``previous`` warped onto ``current`` with the flow measured on the reference frames where given (else on
    the frames themselves), and the bool (1, H, W) mask of the pixels of ``current`` visible in ``previous``."""
    flow_previous = previous if previous_reference is None else previous_reference
    flow_current = current if current_reference is None else current_reference
    back = optical_flow(flow_current, flow_previous)
    forth = optical_flow(flow_previous, flow_current)
    visible = consistency_mask(back, forth).to(current.device)
    warped, _ = warp(previous, back, mode)
    return warped, visible


class _PairMetric(nn.Module):
    """A metric of consecutive frame pairs, fed one frame at a time; subclasses score one pair."""

    needs_reference = False  # whether update() must be given a reference frame with each frame
    reference_name = "reference"

    def _check(self, frame: torch.Tensor, what: str) -> None:
        """Raise unless ``frame`` is what the metric scores (default: an RGB frame in [0, 1])."""
        _check_frame(frame, what)

    def __init__(self) -> None:
        super().__init__()
        self.values: list[float] = []
        self._previous: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self._with_reference: bool | None = None
        self._count = 0

    def reset(self) -> None:
        """Forget the frames and values so far: the next frame starts a new clip."""
        self.values = []
        self._previous = None
        self._with_reference = None
        self._count = 0

    def _pair(
        self,
        previous: torch.Tensor,
        current: torch.Tensor,
        previous_reference: torch.Tensor | None,
        current_reference: torch.Tensor | None,
    ) -> float:
        raise NotImplementedError

    def update(self, frame: torch.Tensor, reference: torch.Tensor | None = None) -> float | None:
        """Add the clip's next frame (float (3, H, W) in [0, 1]; :class:`LabelInstability`: a label map) and,
        where the metric takes one, the matching frame of the reference clip (float (3, H, W) in [0, 1]); returns
        the value of the pair it ends (``None`` for a clip's first frame). A reference is given with every frame of
        a clip or with none."""
        index = self._count
        self._check(frame, f"frame {index}")
        with_reference = reference is not None
        if self.needs_reference and not with_reference:
            raise ValueError(f"{type(self).__name__} needs the {self.reference_name} frame with each frame")
        if self._with_reference is not None and with_reference != self._with_reference:
            raise ValueError(
                f"frame {index}: a {self.reference_name} frame must come with every frame of a clip or with none"
            )
        if reference is not None:
            _check_frame(reference, f"{self.reference_name} frame {index}")
            if reference.shape[-2:] != frame.shape[-2:]:
                raise ValueError(
                    f"frame {index}: {self.reference_name} frame of shape {tuple(reference.shape)}, "
                    f"output frame of shape {tuple(frame.shape)}"
                )
        if self._previous is not None and self._previous[0].shape != frame.shape:
            raise ValueError(
                f"frame {index} has shape {tuple(frame.shape)}, frame {index - 1} {tuple(self._previous[0].shape)}"
            )
        self._with_reference = with_reference
        value = None
        if self._previous is not None:
            previous, previous_reference = self._previous
            with torch.no_grad():
                value = float(self._pair(previous, frame, previous_reference, reference))
            self.values.append(value)
        self._previous = (frame.detach(), None if reference is None else reference.detach())
        self._count += 1
        return value

    def compute(self) -> float:
        """The mean of the pair values so far. ``ValueError`` before two frames."""
        if not self.values:
            raise ValueError(f"{type(self).__name__}: a clip needs at least 2 frames, got {self._count}")
        return sum(self.values) / len(self.values)

    def run(self, frames: Iterable[torch.Tensor], reference: Iterable[torch.Tensor] | None = None) -> None:
        """Feed a whole clip (and its reference clip, of the same length, where given) through :meth:`update`."""
        references: Iterator[torch.Tensor] | None = None if reference is None else iter(reference)
        count = 0
        for frame in frames:
            ref = None
            if references is not None:
                ref = next(references, None)
                if ref is None:
                    raise ValueError(f"the {self.reference_name} clip ends after {count} frames, the clip goes on")
            self.update(frame, ref)
            count += 1
        if references is not None and next(references, None) is not None:
            raise ValueError(f"the {self.reference_name} clip is longer than the clip ({count} frames)")

    def forward(self, frames: Iterable[torch.Tensor], reference: Iterable[torch.Tensor] | None = None) -> float:
        """The clip's score, as the matching function gives it (this object's own stream is left alone)."""
        metric = type(self)()
        metric.run(frames, reference)
        return metric.compute()


def _score(
    metric: _PairMetric, frames: Iterable[torch.Tensor], reference: Iterable[torch.Tensor] | None
) -> _PairMetric:
    metric.run(frames, reference)
    return metric


class WarpingError(_PairMetric):
    """Module form of :func:`warping_error`; stream a clip with ``update(frame, reference)``, then ``compute()``."""

    reference_name = "reference"

    def _pair(
        self,
        previous: torch.Tensor,
        current: torch.Tensor,
        previous_reference: torch.Tensor | None,
        current_reference: torch.Tensor | None,
    ) -> float:
        warped, visible = _visible_warp(previous, current, previous_reference, current_reference)
        squared = (current.double() - warped.double()).square().sum(dim=0, keepdim=True)  # |RGB difference|^2
        count = int(visible.sum())
        # Lai et al.'s evaluation divides by the frame's pixel count where no pixel is visible (the sum is 0 then)
        return float((squared * visible).sum()) / (count or visible.numel())


class TOF(_PairMetric):
    """Module form of :func:`tof`; stream a clip with ``update(frame, reference)``, then ``compute()``."""

    needs_reference = True
    reference_name = "reference"

    def _pair(
        self,
        previous: torch.Tensor,
        current: torch.Tensor,
        previous_reference: torch.Tensor | None,
        current_reference: torch.Tensor | None,
    ) -> float:
        assert previous_reference is not None and current_reference is not None
        flow = optical_flow(previous, current)
        flow_reference = optical_flow(previous_reference, current_reference)
        return float((flow.double() - flow_reference.double()).abs().mean())


class Flicker(_PairMetric):
    """Module form of :func:`flicker`; stream a clip with ``update(frame, input)``, then ``compute()``."""

    reference_name = "input"

    def _pair(
        self,
        previous: torch.Tensor,
        current: torch.Tensor,
        previous_reference: torch.Tensor | None,
        current_reference: torch.Tensor | None,
    ) -> float:
        warped, visible = _visible_warp(previous, current, previous_reference, current_reference)
        absolute = (current.double() - warped.double()).abs()
        count = int(visible.sum()) * current.shape[0]
        return float((absolute * visible).sum()) / (count or absolute.numel())


class LabelInstability(_PairMetric):
    """Module form of :func:`label_instability`; stream a clip with ``update(labels, frame)``, then
    ``compute()``."""

    needs_reference = True
    reference_name = "flow"

    def _check(self, frame: torch.Tensor, what: str) -> None:
        _check_labels(frame, what)

    def _pair(
        self,
        previous: torch.Tensor,
        current: torch.Tensor,
        previous_reference: torch.Tensor | None,
        current_reference: torch.Tensor | None,
    ) -> float:
        assert previous_reference is not None and current_reference is not None
        # float32 holds class ids exactly (up to 2^24); nearest sampling keeps them ids
        moved, visible = _visible_warp(
            previous[None].float(), current, previous_reference, current_reference, mode="nearest"
        )
        changed = (moved[0] != current.to(moved.device, torch.float32)) & visible[0]
        count = int(visible.sum())
        return int(changed.sum()) / (count or visible.numel())


def warping_error_per_frame(
    frames: Iterable[torch.Tensor], reference: Iterable[torch.Tensor] | None = None
) -> list[float]:
    """:func:`warping_error` of each consecutive pair: the i-th value is that of frames i and i + 1."""
    return _score(WarpingError(), frames, reference).values


def warping_error(frames: Iterable[torch.Tensor], reference: Iterable[torch.Tensor] | None = None) -> float:
    """Warping error of a clip (Lai et al., ECCV 2018), lower is better.

    For each frame ``V_t`` after the first, its predecessor is warped onto it, ``W = warp(V_{t-1}, F_t)`` with
    ``F_t`` the flow from frame t to frame t - 1; the pair's value is ``sum_p M(p) |V_t(p) - W(p)|^2 / sum_p M(p)``,
    the squared difference summed over R, G and B and averaged over the pixels ``M`` that the forward-backward
    check (:func:`sapnet.video.consistency_mask`) finds visible in both frames (over all pixels when none is). The
    clip's value is the mean over pairs, in squared [0, 1] units (at most 3; the paper's tables show it times 1000
    or 100, depending on the paper).

    ``frames``: the clip, float (3, H, W) RGB in [0, 1]. ``reference``: the ground-truth clip, frame for frame;
    the flow and the mask come from it (so that the motion is the true one, not the output's), else from
    ``frames`` themselves. ``ValueError`` for fewer than 2 frames or clips of different lengths or sizes.
    """
    return _score(WarpingError(), frames, reference).compute()


def tof_per_frame(frames: Iterable[torch.Tensor], reference: Iterable[torch.Tensor]) -> list[float]:
    """:func:`tof` of each consecutive pair: the i-th value is that of frames i and i + 1."""
    return _score(TOF(), frames, reference).values


def tof(frames: Iterable[torch.Tensor], reference: Iterable[torch.Tensor]) -> float:
    """tOF of a clip (Chu et al., TOG 2020), lower is better: how far the output's motion is from the truth's.

    For each pair of consecutive frames, the optical flow from frame t - 1 to frame t of ``frames`` is compared
    with that of ``reference``: the mean over pixels and the two components of ``|flow - flow_reference|``, in
    pixels. The clip's value is the mean over pairs (the paper computes the flows with another method, so its
    figures are comparable in kind, not digit for digit).

    ``frames``, ``reference``: the output and the ground-truth clip, frame for frame, float (3, H, W) RGB in [0, 1].
    ``ValueError`` for fewer than 2 frames or clips of different lengths or sizes.
    """
    return _score(TOF(), frames, reference).compute()


def flicker_per_frame(frames: Iterable[torch.Tensor], inputs: Iterable[torch.Tensor] | None = None) -> list[float]:
    """:func:`flicker` of each consecutive pair: the i-th value is that of frames i and i + 1."""
    return _score(Flicker(), frames, inputs).values


def flicker(frames: Iterable[torch.Tensor], inputs: Iterable[torch.Tensor] | None = None) -> float:
    """Flicker of a clip without ground truth, lower is better.

    As :func:`warping_error`, but the mean *absolute* difference per channel: for each frame after the first,
    ``mean |V_t - warp(V_{t-1}, F_t)|`` over R, G, B and the pixels visible in both frames, in [0, 1] units (a
    frame uniformly brighter by 0.1 than its static predecessor scores 0.1). The clip's value is the mean over pairs.

    ``frames``: the clip, float (3, H, W) RGB in [0, 1]. ``inputs``: the clip it was made from (the rainy frames),
    frame for frame; the flow and the mask come from it, else from ``frames`` themselves (then motion the output
    gets wrong is partly followed rather than counted). ``ValueError`` for fewer than 2 frames or clips of
    different lengths or sizes.
    """
    return _score(Flicker(), frames, inputs).compute()


def label_instability_per_frame(labels: Iterable[torch.Tensor], frames: Iterable[torch.Tensor]) -> list[float]:
    """:func:`label_instability` of each consecutive pair: the i-th value is that of label maps i and i + 1."""
    return _score(LabelInstability(), labels, frames).values


def label_instability(labels: Iterable[torch.Tensor], frames: Iterable[torch.Tensor]) -> float:
    """Temporal instability of a clip's segmentation, lower is better: the fraction of pixels whose label changes
    between a frame and its flow-warped predecessor.

    For each label map ``L_t`` after the first, its predecessor is warped onto it with the nearest pixel,
    ``W = warp(L_{t-1}, F_t)``, ``F_t`` the flow from frame t to frame t - 1 measured on ``frames``; the pair's
    value is ``sum_p M(p) [L_t(p) != W(p)] / sum_p M(p)`` over the pixels ``M`` the forward-backward check
    (:func:`sapnet.video.consistency_mask`) finds visible in both frames (over all pixels when none is): 0 for
    labels that move with the scene, 1 when every visible pixel changes class. The clip's value is the mean
    over pairs. Every label counts as a class (ignored pixels included: these are predictions).

    ``labels``: integer (H, W) label maps (a segmenter's predictions). ``frames``: the frames the flow is measured
    on, float (3, H, W) RGB in [0, 1] of the same size, frame for frame: the clean clip where there is one (the
    true motion), else the frames the labels were predicted on. ``ValueError`` for fewer than 2 maps, clips of
    different lengths or sizes, or maps that are not integer (H, W) tensors.
    """
    return _score(LabelInstability(), labels, frames).compute()
