"""Video: clips read and written one frame at a time, optical flow and warping between frames.

* :func:`read_frames` / :func:`probe`: a folder of image frames or a video file (.mp4, .avi, .mov, .mkv) as a
  stream of float32 (3, H, W) RGB tensors in [0, 1]; :class:`FrameReadWarning` for frames skipped;
* :class:`FrameWriter` / :func:`write_frames`: an .mp4 (H.264, ``crf`` or ``lossless``) or a folder of PNGs;
* :func:`optical_flow` (OpenCV DIS), :func:`warp` (backward, bilinear), :func:`consistency_mask`
  (forward-backward occlusion check);
* :func:`camera_path` / :func:`render_clip` / :func:`build_video_set`: synthetic rainy clips with ground truth,
  a camera moving over a clean photo (pan, zoom, shake, static) with temporal weather degradations
  (:func:`degrade`: sensor noise, moving glare, fog, illumination change).
* :class:`VideoDerainer` (temporal modes ``"frame"``, ``"fuse"``, ``"lowrank"``, ``"recurrent"``: :data:`MODES`,
  streamed with ``step`` / ``flush`` / ``run``) and :func:`derain_video` (a clip file or folder into another);
  :func:`robust_pca` (low-rank plus sparse, the ``lowrank`` mode's core).

Video files need PyAV: ``pip install sapnet[video]``. The temporal metrics built on the flow are in
:mod:`sapnet.metrics.temporal`.
"""

from sapnet.video.derain import (
    CUT_THRESHOLD,
    DEFAULT_WINDOW,
    FLOW_SOURCES,
    FUSE_TOLERANCE,
    MIN_VISIBLE,
    MODES,
    STREAK_WIDTH,
    FrameDerainer,
    FuseDerainer,
    LowRankDerainer,
    RecurrentDerainer,
    TemporalDerainer,
    VideoDerainer,
    WindowDerainer,
    derain_video,
    masked_median,
    suppress_streaks,
)
from sapnet.video.flow import (
    CONSISTENCY_ALPHA,
    CONSISTENCY_BETA,
    LUMA_WEIGHTS,
    consistency_mask,
    luma_8bit,
    optical_flow,
    warp,
)
from sapnet.video.io import (
    DEFAULT_CRF,
    DEFAULT_FPS,
    FRAME_NAME,
    VIDEO_EXTENSIONS,
    FrameReadWarning,
    FrameWriter,
    VideoInfo,
    frame_name,
    probe,
    read_frames,
    write_frames,
)
from sapnet.video.lowrank import RPCA_MAX_ITER, RPCA_TOL, RobustPCA, robust_pca, singular_value_threshold
from sapnet.video.synthesis import (
    CAMERA_KINDS,
    DEGRADATION_NAMES,
    CameraPath,
    CameraPose,
    Degradations,
    PhotoTooSmallError,
    VideoBuildReport,
    build_video_set,
    camera_path,
    degrade,
    parse_degradations,
    render_clip,
    view_transforms,
)

__all__ = [
    "CAMERA_KINDS",
    "CONSISTENCY_ALPHA",
    "CONSISTENCY_BETA",
    "CUT_THRESHOLD",
    "DEFAULT_CRF",
    "DEFAULT_FPS",
    "DEFAULT_WINDOW",
    "DEGRADATION_NAMES",
    "FLOW_SOURCES",
    "FRAME_NAME",
    "FUSE_TOLERANCE",
    "LUMA_WEIGHTS",
    "MIN_VISIBLE",
    "MODES",
    "RPCA_MAX_ITER",
    "RPCA_TOL",
    "STREAK_WIDTH",
    "VIDEO_EXTENSIONS",
    "CameraPath",
    "CameraPose",
    "Degradations",
    "FrameDerainer",
    "FrameReadWarning",
    "FrameWriter",
    "FuseDerainer",
    "LowRankDerainer",
    "PhotoTooSmallError",
    "RecurrentDerainer",
    "RobustPCA",
    "TemporalDerainer",
    "VideoBuildReport",
    "VideoDerainer",
    "VideoInfo",
    "WindowDerainer",
    "build_video_set",
    "camera_path",
    "consistency_mask",
    "degrade",
    "derain_video",
    "frame_name",
    "luma_8bit",
    "masked_median",
    "optical_flow",
    "parse_degradations",
    "probe",
    "read_frames",
    "render_clip",
    "robust_pca",
    "singular_value_threshold",
    "suppress_streaks",
    "view_transforms",
    "warp",
    "write_frames",
]
