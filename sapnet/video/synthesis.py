"""Synthetic rainy clips with ground truth: a camera moving over a clean photo, rain falling in front of it.

A clip is rendered in three steps (all pure torch, on the photo's device):

1. **Camera.** :func:`camera_path` gives one :class:`CameraPose` per frame (kinds :data:`CAMERA_KINDS`): ``pan``
   (constant velocity), ``zoom`` (constant zoom rate towards or away from the scene), ``shake`` (a hand-held
   camera: smooth random jitter and roll, a sum of slow sinusoids) or ``static``. :func:`view_transforms` places
   the whole path on the photo: the photo is scaled so that every frame's view fits (as large as possible, never
   enlarged: a photo too small for the path is refused with :class:`PhotoTooSmallError`), at a random position
   where it has room, giving each frame's affine map from output pixels to photo pixels.
2. **Clean frames.** Each frame is the photo resampled through its affine map (``grid_sample``, bilinear), after an
   antialiased downscaling of the photo by the frame's photo-to-output scale where it shrinks the photo (zooming
   out), so fine texture does not alias. The clean frames are rounded to 8 bits: exactly what a PNG stores.
3. **Rain.** ``synthesize_rain(clean, preset, seed, sequence=True)``: streaks falling coherently across the frames,
   in camera space (the rain does not move with the scene). Optionally :func:`degrade` then adds temporal weather
   effects to the rainy frames only (the clean frames stay the ground truth): sensor noise (new in each frame),
   a moving glare, a fog region of slowly changing density and a slow illumination change.

Everything is a function of ``seed``: the camera, the placement and each degradation draw from their own streams
derived from it (:func:`stream_seed`), so switching one degradation on or off leaves the others as they were.

:func:`build_video_set` writes a benchmark of such clips (``out/<clip>/rain/frame_000001.png ...``, ``clean/``,
``clip.json``), deterministic and resumable like :func:`sapnet.data.builder.build_rain_set`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from sapnet.data.builder import (
    BuildReport,
    check_folders,
    check_manifest,
    torch_threads,
    write_manifest,
)
from sapnet.data.datasets import find_images
from sapnet.data.image import quantize_8bit, write_image
from sapnet.data.synthesis import RainParams, rain_preset, synthesize_rain
from sapnet.video.io import frame_name

__all__ = [
    "CAMERA_KINDS",
    "CLIP_RECORD",
    "DEFAULT_FRAMES",
    "DEFAULT_SIZE",
    "DEGRADATION_NAMES",
    "MIN_CLIP_SIDE",
    "CameraPath",
    "CameraPose",
    "Degradations",
    "PhotoTooSmallError",
    "VideoBuildReport",
    "build_video_set",
    "camera_path",
    "clip_seed",
    "degrade",
    "parse_degradations",
    "render_clip",
    "stream_seed",
    "view_transforms",
]

CAMERA_KINDS = ("pan", "zoom", "shake", "static")
"""The camera motions :func:`camera_path` knows."""

DEGRADATION_NAMES = ("noise", "glare", "fog", "light")
"""The temporal weather degradations :func:`degrade` knows, in the order they are applied (last: sensor noise)."""

DEFAULT_SIZE = (256, 256)
"""Clip frame size (width, height) when none is given: fits every camera kind on a 481x321 or 321x481 BSDS photo."""

DEFAULT_FRAMES = 24
"""Frames per clip when none is given (one second at 24 fps)."""

MIN_CLIP_SIDE = 16
"""Smallest accepted clip width or height, in pixels."""

CLIP_RECORD = "clip.json"
"""The file in each clip folder that records how it was made; it is written last (a clip without it is partial)."""

# Defaults of the camera kinds' options, in output pixels / degrees per frame.
_PAN_SPEED = 2.0  # pixels per frame
_PAN_SPREAD = 15.0  # drawn pan directions: horizontal (left or right) +- this many degrees
_ZOOM_RANGE = (1.15, 1.35)  # drawn final magnification (or its inverse, zooming out)
_SHAKE_AMPLITUDE = 3.0  # pixels
_SHAKE_ROLL = 0.5  # degrees
_SHAKE_COMPONENTS = 4  # sinusoids per axis
_SHAKE_FREQUENCIES = (0.02, 0.12)  # cycles per frame: 0.5 to 3 Hz at 24 fps, a hand's slow tremor and sway

_OPTIONS: dict[str, tuple[str, ...]] = {
    "pan": ("speed", "direction"),
    "zoom": ("zoom",),
    "shake": ("amplitude", "roll"),
    "static": (),
}


def stream_seed(seed: int, what: str) -> int:
    """A 63-bit seed for the random stream ``what`` (``"camera"``, ``"placement"``, ``"fog"``, ...) of a clip with
    seed ``seed``: a SHA-256 hash, identical across runs, machines and processes."""
    digest = hashlib.sha256(f"sapnet-video\0{int(seed)}\0{what}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def clip_seed(seed: int, name: str) -> int:
    """The seed of the clip called ``name`` in a set built with seed ``seed`` (a stable 63-bit hash of both): a
    clip's content depends on these only, never on the order of the build."""
    return stream_seed(seed, f"clip\0{name}")


def _generator(seed: int, what: str) -> torch.Generator:
    gen = torch.Generator(device="cpu")
    gen.manual_seed(stream_seed(seed, what))
    return gen


def _uniform(gen: torch.Generator, lo: float, hi: float, n: int | None = None) -> torch.Tensor:
    """Uniform float64 draws in [lo, hi): one (a 0-d tensor) or ``n``."""
    u = torch.rand(() if n is None else (n,), generator=gen, dtype=torch.float64)
    return lo + (hi - lo) * u


def _number(name: str, value: object, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo:g}, {hi:g}], got {value!r}")
    return float(value)


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


# --- camera paths ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraPose:
    """Where the camera looks in one frame, relative to the clip's reference view (the view at its mean position).

    Attributes:
        x, y: displacement of the view's centre, in output pixels at zoom 1 (``x`` right, ``y`` down): a camera
            moving right by ``d`` makes the content move left by ``d`` pixels.
        zoom: magnification (> 0; 2 shows half the width, twice as large).
        angle: camera roll in degrees (counter-clockwise in the image); the content turns the other way.
    """

    x: float = 0.0
    y: float = 0.0
    zoom: float = 1.0
    angle: float = 0.0


@dataclass(frozen=True)
class CameraPath:
    """One :class:`CameraPose` per frame, and the kind of motion they came from (see :func:`camera_path`)."""

    kind: str
    poses: tuple[CameraPose, ...]

    def __len__(self) -> int:
        return len(self.poses)

    def footprint(self, size: tuple[int, int]) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)``: the box that every frame's view (``size`` = (W, H) output pixels, corner to corner)
        covers, in output pixels at zoom 1 around the reference view's centre."""
        w, h = size
        xs: list[float] = []
        ys: list[float] = []
        for pose in self.poses:
            cos, sin = math.cos(math.radians(pose.angle)), math.sin(math.radians(pose.angle))
            for qx, qy in ((-w / 2, -h / 2), (w / 2, -h / 2), (-w / 2, h / 2), (w / 2, h / 2)):
                xs.append(pose.x + (cos * qx - sin * qy) / pose.zoom)
                ys.append(pose.y + (sin * qx + cos * qy) / pose.zoom)
        return min(xs), min(ys), max(xs), max(ys)

    def to_json(self) -> list[list[float]]:
        """The poses as ``[[x, y, zoom, angle], ...]`` (what ``clip.json`` records)."""
        return [[p.x, p.y, p.zoom, p.angle] for p in self.poses]


def camera_path(
    kind: str,
    frames: int,
    *,
    seed: int = 0,
    speed: float | None = None,
    direction: float | None = None,
    zoom: float | None = None,
    amplitude: float | None = None,
    roll: float | None = None,
) -> CameraPath:
    """The camera poses of a clip of ``frames`` frames (a function of ``kind``, ``seed`` and the options).

    Kinds and their options (``None``: the default, or a value drawn from ``seed`` where said):

    * ``"pan"``: constant velocity, ``speed`` output pixels per frame (default 2, in [0, 100]) in the
      ``direction`` the camera moves, degrees from the +x axis, positive turning towards +y (default: drawn,
      left or right +- 15 degrees). The content moves by ``-speed`` along it: the flow of the clean frames.
    * ``"zoom"``: constant zoom rate, the last frame magnified ``zoom`` times the first, in [0.25, 4] (> 1 zooms
      in, < 1 out; default: drawn in [1.15, 1.35] or its inverse). The widest view has zoom 1: zooming in goes
      from 1 to ``zoom``, zooming out from ``1 / zoom`` to 1.
    * ``"shake"``: a hand-held camera: smooth random jitter of at most ``amplitude`` output pixels per axis
      (default 3, in [0, 100]) and roll of at most ``roll`` degrees (default 0.5, in [0, 30]), each a sum of
      four sinusoids of 0.02-0.12 cycles per frame with random phases and weights.
    * ``"static"``: a fixed camera, no options.

    Raises:
        ValueError: an unknown kind (the message lists the known ones), ``frames`` < 1, an option the kind does
            not take, or a value out of range.

    Examples:
        >>> [pose.x for pose in camera_path("pan", 3, speed=2.0, direction=0.0).poses]
        [0.0, 2.0, 4.0]
        >>> camera_path("shake", 24, seed=1) == camera_path("shake", 24, seed=1)  # a function of the seed
        True
    """
    if kind not in _OPTIONS:
        raise ValueError(f"unknown camera path {kind!r}; choose one of {', '.join(CAMERA_KINDS)}")
    n = _count("frames", frames)
    given = {"speed": speed, "direction": direction, "zoom": zoom, "amplitude": amplitude, "roll": roll}
    extra = sorted(k for k, v in given.items() if v is not None and k not in _OPTIONS[kind])
    if extra:
        takes = ", ".join(_OPTIONS[kind]) or "no options"
        raise ValueError(f"a {kind} camera path does not take {', '.join(extra)} (it takes: {takes})")
    gen = _generator(seed, f"camera\0{kind}")
    t = torch.arange(n, dtype=torch.float64)
    if kind == "pan":
        v = _PAN_SPEED if speed is None else _number("speed", speed, 0.0, 100.0)
        if direction is None:
            side = 180.0 if float(_uniform(gen, 0.0, 1.0)) < 0.5 else 0.0
            angle = side + float(_uniform(gen, -_PAN_SPREAD, _PAN_SPREAD))
        else:
            angle = _number("direction", direction, -360.0, 360.0)
        vx, vy = v * math.cos(math.radians(angle)), v * math.sin(math.radians(angle))
        poses = [CameraPose(x=k * vx + 0.0, y=k * vy + 0.0) for k in range(n)]  # + 0.0: no -0.0 in clip.json
    elif kind == "zoom":
        if zoom is None:
            final = float(_uniform(gen, *_ZOOM_RANGE))
            final = 1.0 / final if float(_uniform(gen, 0.0, 1.0)) < 0.5 else final
        else:
            final = _number("zoom", zoom, 0.25, 4.0)
        rate = t / max(n - 1, 1)
        widest = min(final, 1.0)  # the widest view has zoom 1: zooming out starts magnified
        poses = [CameraPose(zoom=float(final**r / widest)) for r in rate]
    elif kind == "shake":
        amp = _SHAKE_AMPLITUDE if amplitude is None else _number("amplitude", amplitude, 0.0, 100.0)
        tilt = _SHAKE_ROLL if roll is None else _number("roll", roll, 0.0, 30.0)
        axes = [amp * _jitter(gen, t) for _ in range(2)] + [tilt * _jitter(gen, t)]
        poses = [CameraPose(x=float(x), y=float(y), angle=float(a)) for x, y, a in zip(*axes, strict=True)]
    else:
        poses = [CameraPose() for _ in range(n)]
    return CameraPath(kind, tuple(poses))


def _jitter(gen: torch.Generator, t: torch.Tensor) -> torch.Tensor:
    """A smooth random signal over frames ``t`` with ``|value| <= 1``: a weighted sum of slow sinusoids."""
    freq = _uniform(gen, *_SHAKE_FREQUENCIES, n=_SHAKE_COMPONENTS)
    phase = _uniform(gen, 0.0, 2 * math.pi, n=_SHAKE_COMPONENTS)
    weight = _uniform(gen, 0.5, 1.0, n=_SHAKE_COMPONENTS)
    weight = weight / weight.sum()
    return (weight[:, None] * torch.sin(2 * math.pi * freq[:, None] * t[None] + phase[:, None])).sum(0)


class PhotoTooSmallError(ValueError):
    """A photo smaller than the area a clip's camera path sweeps over (photos are never enlarged)."""

    def __init__(self, photo_size: tuple[int, int], needed: tuple[int, int], kind: str, size: tuple[int, int]):
        super().__init__(
            f"photo is {photo_size[0]}x{photo_size[1]} pixels, but a {size[0]}x{size[1]} {kind} clip along this "
            f"camera path needs at least {needed[0]}x{needed[1]}: use a larger photo, a smaller --size or fewer "
            "frames / a slower camera"
        )
        self.photo_size, self.needed = photo_size, needed


def _check_size(size: tuple[int, int], name: str = "size") -> tuple[int, int]:
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise ValueError(f"{name} must be (width, height), got {size!r}")
    w, h = size
    for v in (w, h):
        if isinstance(v, bool) or not isinstance(v, int) or v < MIN_CLIP_SIDE:
            raise ValueError(f"{name} must be two integers >= {MIN_CLIP_SIDE} (width, height), got {size!r}")
    return int(w), int(h)


def view_transforms(
    path: CameraPath, size: tuple[int, int], photo_size: tuple[int, int], *, seed: int = 0
) -> torch.Tensor:
    """Each frame's affine map from output pixels to photo pixels: float64 (N, 2, 3) on the CPU, ``[x_photo,
    y_photo] = M[:, :2] @ [x, y] + M[:, 2]`` for output pixel ``(x, y)`` (pixel centres at integers).

    The photo (``photo_size`` = (W, H)) is scaled by the largest factor ``b`` (photo pixels per output pixel at zoom
    1) at which the path's :meth:`~CameraPath.footprint` fits inside it, and the footprint is placed at a position
    drawn from ``seed`` among those where it fits. ``b`` < 1 (the photo would have to be enlarged) is refused.

    Raises:
        PhotoTooSmallError: the footprint does not fit the photo at ``b = 1``. ValueError: a bad size.
    """
    w, h = _check_size(size)
    pw, ph = photo_size
    if len(path) == 0:
        raise ValueError("the camera path has no frames")
    x0, y0, x1, y1 = path.footprint((w, h))
    fw, fh = x1 - x0, y1 - y0
    scale = min(pw / fw, ph / fh)
    if scale < 1.0 - 1e-9:
        raise PhotoTooSmallError((pw, ph), (math.ceil(fw - 1e-6), math.ceil(fh - 1e-6)), path.kind, (w, h))
    scale = max(scale, 1.0)
    gen = _generator(seed, "placement")
    # the footprint [c + b x0, c + b x1] must lie within the photo's area [-0.5, pw - 0.5] (pixel edges)
    lo_x, hi_x = -0.5 - scale * x0, pw - 0.5 - scale * x1
    lo_y, hi_y = -0.5 - scale * y0, ph - 0.5 - scale * y1
    cx = float(_uniform(gen, 0.0, 1.0)) * max(hi_x - lo_x, 0.0) + lo_x
    cy = float(_uniform(gen, 0.0, 1.0)) * max(hi_y - lo_y, 0.0) + lo_y
    out = torch.empty(len(path), 2, 3, dtype=torch.float64)
    mid_x, mid_y = (w - 1) / 2, (h - 1) / 2
    for i, pose in enumerate(path.poses):
        cos, sin = math.cos(math.radians(pose.angle)), math.sin(math.radians(pose.angle))
        k = scale / pose.zoom
        a = torch.tensor([[k * cos, -k * sin], [k * sin, k * cos]], dtype=torch.float64)
        centre = torch.tensor([cx + scale * pose.x, cy + scale * pose.y], dtype=torch.float64)
        out[i, :, :2] = a
        out[i, :, 2] = centre - a @ torch.tensor([mid_x, mid_y], dtype=torch.float64)
    return out


def _check_photo(photo: torch.Tensor) -> None:
    if not isinstance(photo, torch.Tensor) or not photo.is_floating_point():
        raise TypeError(f"photo must be a floating torch.Tensor in [0, 1], got {type(photo).__name__}")
    if photo.dim() != 3 or photo.shape[0] != 3:
        raise ValueError(f"photo must be a (3, H, W) RGB tensor, got shape {tuple(photo.shape)}")


def _render_views(photo: torch.Tensor, transforms: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The views (N, 3, H, W) float32 of ``photo`` (3, Hp, Wp) through ``transforms`` (N, 2, 3), bilinear, the
    photo first downscaled with antialiasing by each frame's scale where that is above 1."""
    w, h = size
    ph, pw = photo.shape[-2:]
    src = photo.float()[None]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    ones = torch.ones_like(xs)
    points = torch.stack((xs, ys, ones), dim=-1)  # (H, W, 3)
    shrunk: dict[tuple[int, int], torch.Tensor] = {}
    frames = []
    for m in transforms:
        mapped = points @ m.T  # (H, W, 2) photo pixel coordinates
        # align_corners=False: -1 and 1 are the photo's outer pixel edges, the same on any resized copy of it
        grid = torch.stack((((2 * mapped[..., 0] + 1) / pw) - 1, ((2 * mapped[..., 1] + 1) / ph) - 1), dim=-1)
        factor = math.sqrt(abs(float(torch.linalg.det(m[:, :2]))))  # photo pixels per output pixel
        target = (max(1, round(ph / factor)), max(1, round(pw / factor)))
        image = src
        if factor > 1.0 and target != (ph, pw):
            if target not in shrunk:
                shrunk[target] = F.interpolate(src, size=target, mode="bilinear", antialias=True, align_corners=False)
            image = shrunk[target]
        grid32 = grid.to(device=photo.device, dtype=torch.float32)[None]
        frames.append(F.grid_sample(image, grid32, mode="bilinear", padding_mode="border", align_corners=False)[0])
    return torch.stack(frames).clamp(0.0, 1.0)


# --- temporal degradations ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Degradations:
    """Strengths in [0, 1] of the temporal weather degradations (0: off; 1: strong but plausible).

    Attributes:
        noise: sensor noise, Gaussian, signal dependent (shot + read noise), drawn anew in every frame; at 1 its
            standard deviation is ``sqrt(0.003 x + 0.0004)`` (0.035 at ``x = 0.3``).
        glare: a soft warm-white blob (a low sun, a street lamp in the lens) screened over the frame, drifting
            along a circular arc at a few tenths of a percent of the diagonal per frame; peak 0.85 at 1.
        fog: a large soft region of fog (scattering model ``I t + A (1 - t)``, ``t = exp(-beta * map)``) whose
            density ``beta`` oscillates slowly (periods of 60-150 frames); ``beta`` up to 1.2 at 1.
        light: a slow global illumination change (clouds): a gain ``exp(a(t))``, ``a`` an offset of +-0.1-0.2
            plus an oscillation of 0.15 (periods of 60-150 frames), both scaled by the strength.
    """

    noise: float = 0.0
    glare: float = 0.0
    fog: float = 0.0
    light: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _number(f"{f.name} strength", getattr(self, f.name), 0.0, 1.0))

    @property
    def active(self) -> bool:
        """True when any strength is above 0."""
        return any(v > 0 for v in asdict(self).values())

    def to_dict(self) -> dict[str, float]:
        """The strengths above 0, by name (``{}`` when none is)."""
        return {k: v for k, v in asdict(self).items() if v > 0}


DegradationSpec = Degradations | Mapping[str, float] | Iterable[str] | str | None


def parse_degradations(spec: DegradationSpec) -> Degradations:
    """A :class:`Degradations` from ``None`` (none), a ``Degradations``, a mapping ``{"fog": 0.5}``, or names
    with optional strengths: ``"noise"`` (strength 1), ``"fog=0.5"``, or a list of those.

    Raises:
        ValueError: an unknown name (the message lists the known ones), a strength that is not a number in [0, 1],
            or a name given twice.
    """
    if spec is None:
        return Degradations()
    if isinstance(spec, Degradations):
        return spec
    if isinstance(spec, Mapping):
        items = [(str(k), v) for k, v in spec.items()]
    else:
        items = []
        for entry in [spec] if isinstance(spec, str) else spec:
            if not isinstance(entry, str):
                raise ValueError(f"degradations must be names like 'fog' or 'fog=0.5', got {entry!r}")
            name, eq, value = entry.partition("=")
            try:
                strength: object = float(value) if eq else 1.0
            except ValueError:
                raise ValueError(f"degradation {entry!r}: the strength must be a number in [0, 1]") from None
            items.append((name.strip(), strength))
    found: dict[str, float] = {}
    for name, strength in items:
        if name not in DEGRADATION_NAMES:
            raise ValueError(f"unknown degradation {name!r}; choose from {', '.join(DEGRADATION_NAMES)}")
        if name in found:
            raise ValueError(f"degradation {name!r} given twice")
        found[name] = _number(f"{name} strength", strength, 0.0, 1.0)
    return Degradations(**found)


def _slow_wave(gen: torch.Generator, t: torch.Tensor) -> torch.Tensor:
    """``sin(2 pi t / P + phi)`` over frames ``t`` (float64), period ``P`` drawn in [60, 150] frames."""
    period = float(_uniform(gen, 60.0, 150.0))
    phase = float(_uniform(gen, 0.0, 2 * math.pi))
    return torch.sin(2 * math.pi * t / period + phase)


def _light(x: torch.Tensor, s: float, gen: torch.Generator, t: torch.Tensor) -> torch.Tensor:
    sign = 1.0 if float(_uniform(gen, 0.0, 1.0)) < 0.5 else -1.0
    offset = sign * float(_uniform(gen, 0.1, 0.2))
    gain = torch.exp(s * (offset + 0.15 * _slow_wave(gen, t)))
    return x * gain.to(x.device, x.dtype)[:, None, None, None]


def _grid(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32, device=device),
        torch.arange(w, dtype=torch.float32, device=device),
        indexing="ij",
    )
    return xs, ys


def _fog(x: torch.Tensor, s: float, gen: torch.Generator, t: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    texture = torch.rand(1, 1, 4, 4, generator=gen).to(x.device)
    texture = F.interpolate(texture, size=(h, w), mode="bicubic", align_corners=True).clamp(0.0, 1.0)[0, 0]
    cx, cy = float(_uniform(gen, 0.0, 1.0)) * (w - 1), float(_uniform(gen, 0.0, 1.0)) * (h - 1)
    sigma = float(_uniform(gen, 0.3, 0.6)) * max(h, w)
    xs, ys = _grid(h, w, x.device)
    region = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2)) * (0.5 + 0.5 * texture)
    beta = s * 1.2 * (0.65 + 0.35 * _slow_wave(gen, t))
    trans = torch.exp(-beta.to(x.device, torch.float32)[:, None, None, None] * region)
    airlight = torch.tensor((0.77, 0.78, 0.8), device=x.device)[None, :, None, None]
    return x * trans + airlight * (1.0 - trans)


def _glare(x: torch.Tensor, s: float, gen: torch.Generator, t: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    radius = float(_uniform(gen, 0.15, 0.35)) * min(h, w)  # of the arc it drifts along
    cx, cy = float(_uniform(gen, 0.3, 0.7)) * w, float(_uniform(gen, 0.25, 0.6)) * h
    speed = float(_uniform(gen, 0.004, 0.012)) * math.hypot(h, w)  # pixels per frame
    turn = 1.0 if float(_uniform(gen, 0.0, 1.0)) < 0.5 else -1.0
    phase = float(_uniform(gen, 0.0, 2 * math.pi))
    sigma = float(_uniform(gen, 0.1, 0.2)) * min(h, w)  # of the blob
    angle = phase + turn * speed / radius * t
    px = (cx + radius * torch.cos(angle)).to(x.device, torch.float32)[:, None, None]
    py = (cy + radius * torch.sin(angle)).to(x.device, torch.float32)[:, None, None]
    xs, ys = _grid(h, w, x.device)
    blob = 0.85 * s * torch.exp(-((xs - px) ** 2 + (ys - py) ** 2) / (2 * sigma**2))  # (N, H, W)
    color = torch.tensor((1.0, 0.93, 0.8), device=x.device)[None, :, None, None]
    return 1.0 - (1.0 - x) * (1.0 - blob[:, None] * color)


def _noise(x: torch.Tensor, s: float, gen: torch.Generator, t: torch.Tensor) -> torch.Tensor:
    del t  # independent in every frame
    std = s * torch.sqrt(0.003 * x.clamp(0.0, 1.0) + 0.0004)
    return x + std * torch.randn(x.shape, generator=gen).to(x.device)


_EFFECTS: dict[str, Callable[[torch.Tensor, float, torch.Generator, torch.Tensor], torch.Tensor]] = {
    "light": _light,
    "fog": _fog,
    "glare": _glare,
    "noise": _noise,
}


def degrade(frames: torch.Tensor, degradations: DegradationSpec, seed: int = 0) -> torch.Tensor:
    """Temporal weather degradations over consecutive frames (see :class:`Degradations`): illumination, then fog,
    glare and sensor noise, each drawn from its own stream of ``seed``.

    Args:
        frames: (N, 3, H, W) float in [0, 1], consecutive frames of one clip, any device.
        degradations: what to apply and how strongly (see :func:`parse_degradations`).
        seed: the clip's seed; the same seed gives the same glare path, fog region, noise, ...

    Returns:
        float32 (N, 3, H, W) in [0, 1] on ``frames``' device (``frames`` itself, as float32, when none is active).
    """
    deg = parse_degradations(degradations)
    if frames.dim() != 4 or frames.shape[1] != 3 or not frames.is_floating_point():
        raise ValueError(f"frames must be a float (N, 3, H, W) tensor, got {frames.dtype} {tuple(frames.shape)}")
    out = frames.float()
    t = torch.arange(frames.shape[0], dtype=torch.float64)
    for name, effect in _EFFECTS.items():
        strength = getattr(deg, name)
        if strength > 0:
            out = effect(out, strength, _generator(seed, name), t).clamp(0.0, 1.0)
    return out


# --- clips ---------------------------------------------------------------------------------------------------


def render_clip(
    photo: torch.Tensor,
    path: str | CameraPath = "pan",
    *,
    size: tuple[int, int] = DEFAULT_SIZE,
    frames: int | None = None,
    preset: str | RainParams = "heavy",
    seed: int = 0,
    degradations: DegradationSpec = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A synthetic rainy clip and its ground truth, from one clean photo (see the module docstring).

    Args:
        photo: the clean photo, float (3, Hp, Wp) in [0, 1], any device.
        path: a :class:`CameraPath`, or a kind of :data:`CAMERA_KINDS`, made with :func:`camera_path` (default
            options, drawn from ``seed``): ``render_clip(p, "pan", seed=s)`` is
            ``render_clip(p, camera_path("pan", frames, seed=s), seed=s)``.
        size: frame (width, height), each >= :data:`MIN_CLIP_SIDE`.
        frames: the number of frames (default :data:`DEFAULT_FRAMES` for a kind; a path's length for a path,
            which it must equal if given).
        preset: rain preset name or ``RainParams`` for :func:`~sapnet.data.synthesis.synthesize_rain`.
        seed: seed of the clip: the rain is ``synthesize_rain(clean, preset, seed, sequence=True)``; the camera,
            its placement on the photo and the degradations use streams derived from it.
        degradations: temporal degradations of the rainy frames (see :func:`parse_degradations`).

    Returns:
        ``(rainy, clean)``: float32 (N, 3, H, W) in [0, 1] on ``photo``'s device; ``clean`` is on the 8-bit grid
        (what a PNG stores, the frames the rain was rendered on).

    Raises:
        PhotoTooSmallError: the photo is smaller than the area the camera sweeps over. ValueError / TypeError: a
        bad photo, size, path, frame count, degradation; UnknownPresetError: an unknown preset.
    """
    _check_photo(photo)
    w, h = _check_size(size)
    deg = parse_degradations(degradations)
    if isinstance(preset, str):
        rain_preset(preset)
    if isinstance(path, str):
        path = camera_path(path, DEFAULT_FRAMES if frames is None else frames, seed=seed)
    elif not isinstance(path, CameraPath):
        raise TypeError(f"path must be a CameraPath or one of {', '.join(CAMERA_KINDS)}, got {path!r}")
    elif frames is not None and frames != len(path):
        raise ValueError(f"frames={frames} but the camera path has {len(path)} poses")
    transforms = view_transforms(path, (w, h), (int(photo.shape[-1]), int(photo.shape[-2])), seed=seed)
    clean = quantize_8bit(_render_views(photo, transforms, (w, h)), "round")  # rounded: what write_image stores
    rainy = synthesize_rain(clean, preset, seed, sequence=True)
    if deg.active:
        rainy = degrade(rainy, deg, seed)
    return rainy, clean


# --- sets of clips -------------------------------------------------------------------------------------------


class VideoBuildReport(BuildReport):
    """What :func:`build_video_set` did; ``written`` / ``skipped`` / ``failed`` name clips (the photo a failed
    clip came from is in its reason)."""

    units = ("clips", "clips")


def _clip_complete(folder: Path, frames: int) -> bool:
    if not (folder / CLIP_RECORD).is_file():
        return False
    return all((folder / side / frame_name(i)).is_file() for side in ("rain", "clean") for i in range(frames))


def _photo_order(images: list[Path], seed: int) -> list[Path]:
    """The photos in an order drawn from ``seed`` (a hash of each name: independent of the listing order)."""
    return sorted(images, key=lambda p: (stream_seed(seed, f"photo\0{p.stem}"), p.stem))


def build_video_set(
    clean_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    clips: int | None = None,
    frames: int = DEFAULT_FRAMES,
    size: tuple[int, int] = DEFAULT_SIZE,
    kinds: Sequence[str] = CAMERA_KINDS,
    preset: str = "heavy",
    seed: int = 0,
    degradations: DegradationSpec = None,
    *,
    threads: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> VideoBuildReport:
    """Render a benchmark of synthetic rainy clips with ground truth from the clean photos in ``clean_dir``.

    Layout: ``out_dir/<clip>/rain/frame_000001.png ...`` and ``out_dir/<clip>/clean/...`` (8-bit RGB PNG, names
    from :func:`sapnet.video.io.frame_name`) and ``out_dir/<clip>/clip.json`` (photo, camera kind and poses,
    preset, clip seed, degradations, frames, size); ``out_dir/synth.json`` records the set's parameters.

    Clip ``i`` (1-based) is called ``<iiii>_<photo stem>_<kind>``: the photos are taken in an order drawn from
    ``seed`` (cycled when ``clips`` exceeds them) and the camera kinds in turn: photo ``j`` of that order gets
    kind ``(j + c) % len(kinds)`` on its ``c``-th use (from 0), so a reused photo gets another motion. A clip's
    content depends only on ``(seed, name)`` (:func:`clip_seed`) and the parameters: deterministic whatever the
    order, and a larger ``clips`` on a resumed build adds clips without changing the others.

    Resumable: a clip is rendered into a hidden ``.<clip>.partial`` folder, renamed into place when complete.
    Complete clips (``clip.json`` and every frame present) are skipped; partial or incomplete ones are redone.
    A resumed build with other parameters (except ``clips``) is refused.

    Args:
        clean_dir: folder of clean photos (not recursive). Train clips from
            ``../shared/data/clean_corpus/bsds300_train209``, test clips from ``bsds500_test200``; never from the
            Rain100L / Rain100H test backgrounds.
        out_dir: the set to create or complete; must not overlap ``clean_dir``.
        clips: number of clips (default: one per photo).
        frames, size: frames per clip and their (width, height).
        kinds: camera kinds (:data:`CAMERA_KINDS`), used in turn.
        preset: rain preset name; seed: global seed; degradations: see :func:`parse_degradations`.
        threads: torch intra-op threads during the build (the output does not depend on it).
        progress: show a tqdm bar. log: receives one line per failed, converted or ignored input.

    Raises:
        BuildError: ``out_dir`` overlaps ``clean_dir``, is a file, or holds a set built with other parameters.
        DatasetError: ``clean_dir`` is missing or holds no images. UnknownPresetError: unknown preset.
        ValueError: unknown camera kind or degradation, bad ``clips`` / ``frames`` / ``size``.
        Nothing is read or written before these checks.
    """
    if clips is not None:
        _count("clips", clips)
    _count("frames", frames)
    w, h = _check_size(size)
    kinds = list(kinds)
    if not kinds:
        raise ValueError(f"kinds must name at least one camera path of {', '.join(CAMERA_KINDS)}")
    for kind in kinds:
        camera_path(kind, 1)  # validates the kind
    deg = parse_degradations(degradations)
    rain_preset(preset)
    src, out = Path(clean_dir), Path(out_dir)
    check_folders(src, out)
    images = find_images(src)  # DatasetError when missing or empty
    manifest: dict[str, object] = {
        "video": True,
        "frames": frames,
        "size": [w, h],
        "cameras": kinds,
        "preset": preset,
        "seed": seed,
        "degradations": deg.to_dict(),
    }
    check_manifest(out, manifest)
    write_manifest(out, manifest)

    report = VideoBuildReport(out)
    keep = {p.name for p in images}
    report.ignored = sorted(
        p.name for p in images[0].parent.iterdir() if p.is_file() and not p.name.startswith(".") and p.name not in keep
    )
    for name in report.ignored:
        log(f"ignored: {name}: not an image file")
    order = _photo_order(images, seed)
    count = len(images) if clips is None else clips
    plan = []
    for i in range(count):
        cycle, index = divmod(i, len(order))
        photo = order[index]
        kind = kinds[(index + cycle) % len(kinds)]
        plan.append((f"{i + 1:04d}_{photo.stem}_{kind}", photo, kind))
    with torch_threads(threads):
        for name, photo, kind in tqdm(plan, desc="synth video", unit="clip", disable=None if progress else True):
            _build_clip(
                name,
                photo,
                kind,
                out,
                report,
                log,
                frames=frames,
                size=(w, h),
                preset=preset,
                seed=seed,
                degradations=deg,
            )
    return report


def _build_clip(
    name: str,
    photo_path: Path,
    kind: str,
    out: Path,
    report: VideoBuildReport,
    log: Callable[[str], None],
    *,
    frames: int,
    size: tuple[int, int],
    preset: str,
    seed: int,
    degradations: Degradations,
) -> None:
    """Render clip ``name`` into ``out`` unless it is complete, recording the outcome in ``report``."""
    dest, partial = out / name, out / f".{name}.partial"
    if _clip_complete(dest, frames):  # do not even decode the photo
        report.skipped.append(name)
        return
    photo = report.read_source(photo_path, log, item=name)
    if photo is None:
        return
    cseed = clip_seed(seed, name)
    path = camera_path(kind, frames, seed=cseed)
    try:
        rainy, clean = render_clip(
            photo, path, size=size, frames=frames, preset=preset, seed=cseed, degradations=degradations
        )
    except PhotoTooSmallError as e:
        report.failed.append((name, f"{photo_path}: {e}"))
        log(f"failed: {name}: {photo_path}: {e}")
        return
    shutil.rmtree(partial, ignore_errors=True)
    for i in range(frames):
        write_image(clean[i], partial / "clean" / frame_name(i))
        write_image(rainy[i], partial / "rain" / frame_name(i))
    record = {
        "photo": photo_path.name,
        "camera": kind,
        "path": path.to_json(),
        "preset": preset,
        "seed": cseed,
        "set_seed": seed,
        "frames": frames,
        "size": list(size),
        "degradations": degradations.to_dict(),
    }
    (partial / CLIP_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if dest.exists():
        shutil.rmtree(dest)  # an incomplete clip of this set (the manifest matched): redone
    os.replace(partial, dest)
    report.written.append(name)
