"""Reading and writing clips one frame at a time: a folder of image frames or a video file.

Frames are float32 RGB tensors (3, H, W) in [0, 1], as everywhere in the package. A clip is never held in
memory whole: :func:`read_frames` yields frames as they are read or decoded, and :class:`FrameWriter` encodes
or saves each frame as it is given.

Video files (.mp4, .avi, .mov, .mkv) are decoded and encoded with PyAV (FFmpeg), the optional extra
``pip install sapnet[video]``; folders of frames need nothing beyond the package itself.
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch

from sapnet.data.datasets import DatasetError, DatasetNotFoundError
from sapnet.data.image import ImageReadError, check_float_range, read_image, tensor_to_array, write_image
from sapnet.data.listing import list_images
from sapnet.files import atomic_write

__all__ = [
    "DEFAULT_CRF",
    "DEFAULT_FPS",
    "FRAME_NAME",
    "VIDEO_EXTENSIONS",
    "FrameReadWarning",
    "FrameWriter",
    "VideoInfo",
    "frame_name",
    "probe",
    "read_frames",
    "write_frames",
]

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv"})
"""Suffixes (any case) read as video files; anything else that is not a folder is refused."""

FRAME_NAME = "frame_{:06d}.png"
"""How :class:`FrameWriter` names the frames of a folder, numbered from 1."""

DEFAULT_CRF = 18
"""libx264's constant rate factor when none is given: visually near-lossless, far smaller than lossless."""

DEFAULT_FPS = 25
"""The frame rate ``sapnet derain-video`` writes an .mp4 at when its input says none (a folder of frames) and no
``--fps`` is given."""


def frame_name(index: int) -> str:
    """The file name :class:`FrameWriter` gives frame ``index`` (0-based) of a folder: ``frame_000001.png`` for 0."""
    return FRAME_NAME.format(index + 1)


class FrameReadWarning(UserWarning):
    """A frame that could not be read or decoded and was skipped; the frames after it are still read.

    ``index`` is the frame's 0-based position in the clip (in a folder, in natural order of the names; in a
    video file, in display order, from the packet's time stamp and the frame rate), ``what`` names it (the file,
    or the video file and the index) and ``reason`` says what went wrong.
    """

    def __init__(self, index: int, what: str, reason: str) -> None:
        super().__init__(f"frame {index} ({what}) skipped: {reason}")
        self.index, self.what, self.reason = index, what, reason


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` finds out about a clip without reading it all.

    Attributes:
        frames: the number of frames, ``None`` where the container does not say (then only decoding counts
            them). For a folder: its image files, readable or not.
        fps: frames per second, ``None`` for a folder of frames (images hold no frame rate).
        width, height: the frame size in pixels (for a folder, that of its first readable frame).
    """

    frames: int | None
    fps: float | None
    width: int
    height: int


def _av() -> Any:
    """The PyAV module, imported on first use (it is an optional dependency)."""
    try:
        import av
    except ImportError as e:
        raise ImportError(
            "reading and writing video files needs PyAV: pip install sapnet[video] (or pip install av)"
        ) from e
    return av


def _classify(source: str | os.PathLike[str]) -> tuple[Path, bool]:
    """``(path, is_video_file)`` for a clip source, or the error that says why it is none."""
    path = Path(source)
    if not path.exists():
        raise DatasetNotFoundError(f"{path}: no such video file or folder of frames")
    if path.is_dir():
        return path, False
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise DatasetError(
            f"{path}: not a video file ({', '.join(sorted(VIDEO_EXTENSIONS))}) or a folder of image frames"
        )
    return path, True


def _frame_files(folder: Path) -> list[Path]:
    files = list_images(folder)
    if not files:
        raise DatasetError(f"{folder}: no image frames in this folder")
    return files


def _open_video(path: Path) -> Any:
    av = _av()
    try:
        container = av.open(str(path), mode="r")
    except av.FFmpegError as e:
        raise ImageReadError(f"{path}: cannot open the video ({e})") from e
    if not container.streams.video:
        container.close()
        raise DatasetError(f"{path}: holds no video stream")
    return container


def probe(source: str | os.PathLike[str]) -> VideoInfo:
    """Frame count, frame rate and size of a clip (a video file or a folder of frames), see :class:`VideoInfo`.

    A video file's header is read, not its frames; a folder's images are listed and the first readable one is
    read (unreadable ones before it are skipped with a :class:`FrameReadWarning`).

    Raises:
        DatasetNotFoundError: no such path. DatasetError: a file that is not a video, a folder without images
        or with none readable, a video file without a video stream. ImageReadError: a video file that cannot
        be opened. ImportError: a video file without PyAV installed.
    """
    path, is_video = _classify(source)
    if not is_video:
        files = _frame_files(path)
        first = next(iter(_read_folder(path, files, check_size=False)), None)
        if first is None:
            raise DatasetError(f"{path}: none of its {len(files)} image frames could be read")
        return VideoInfo(len(files), None, int(first.shape[-1]), int(first.shape[-2]))
    with _open_video(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        ctx = stream.codec_context
        return VideoInfo(int(stream.frames) or None, float(rate) if rate else None, int(ctx.width), int(ctx.height))


def read_frames(source: str | os.PathLike[str]) -> Iterator[torch.Tensor]:
    """The frames of a clip, one at a time: float32 RGB tensors (3, H, W) in [0, 1], on the CPU.

    ``source`` is a folder of image frames (every image file in it, see :func:`sapnet.data.list_images`, in
    natural order of the names: ``frame2`` before ``frame10``; 16-bit images at full precision, grayscale
    replicated to RGB with a warning) or a video file (.mp4, .avi, .mov, .mkv, decoded with PyAV to 8-bit RGB).
    Only the frame being yielded is held in memory.

    A frame that cannot be read (a corrupt image file, a packet the decoder refuses) is skipped with a
    :class:`FrameReadWarning` giving its index; the rest are read. The path is checked when this is called,
    the frames as they are consumed.

    Raises:
        DatasetNotFoundError: no such path. DatasetError: a file that is not a video, an empty folder, a frame
        whose size differs from the first frame's (naming it), no frame readable at all, a video file without a
        video stream. ImageReadError: a video file that cannot be opened. ImportError: a video file without
        PyAV installed.
    """
    path, is_video = _classify(source)
    if is_video:
        _open_video(path).close()  # errors now; the generator opens it again (it may never be started, or closed)
        return _read_video(path)
    return _read_folder(path, _frame_files(path), check_size=True)


def _check_size(frame: torch.Tensor, size: tuple[int, int] | None, what: str, first: str) -> tuple[int, int]:
    here = (int(frame.shape[-2]), int(frame.shape[-1]))
    if size is not None and here != size:
        raise DatasetError(
            f"{what} is {here[1]}x{here[0]}, but the clip's frames are {size[1]}x{size[0]} (as {first}): "
            "all frames of a clip must have one size"
        )
    return here


def _read_folder(folder: Path, files: list[Path], *, check_size: bool) -> Iterator[torch.Tensor]:
    size: tuple[int, int] | None = None
    first = ""
    for index, file in enumerate(files):
        try:
            frame = read_image(file)
        except ImageReadError as e:
            warnings.warn(FrameReadWarning(index, str(file), str(e)), stacklevel=2)
            continue
        if check_size:
            if size is None:
                first = f"frame {index}, {file.name}"
            size = _check_size(frame, size, f"frame {index} ({file})", first)
        yield frame
    if size is None and check_size:
        raise DatasetError(f"{folder}: none of its {len(files)} image frames could be read")


def _packet_index(packet: Any, stream: Any, fallback: int) -> int:
    """The 0-based frame index of a packet from its presentation time (its place in display order, which its place
    in the file need not be), or ``fallback`` where the stream has no time stamps or frame rate."""
    rate = stream.average_rate or stream.guessed_rate
    if packet.pts is None or not rate or stream.time_base is None:
        return fallback
    return max(0, round(float((packet.pts - (stream.start_time or 0)) * stream.time_base * rate)))


def _read_video(path: Path) -> Iterator[torch.Tensor]:
    av = _av()
    container = _open_video(path)
    index = 0  # frames yielded or skipped so far: the index of the next one
    size: tuple[int, int] | None = None
    try:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            try:
                decoded = packet.decode()  # the last (empty) packet flushes the frames the decoder still holds
            except av.FFmpegError as e:
                at = _packet_index(packet, stream, index)
                warnings.warn(FrameReadWarning(at, f"{path}, frame {at}", f"cannot decode ({e})"), stacklevel=2)
                index += 1
                continue
            for av_frame in decoded:
                rgb = av_frame.to_ndarray(format="rgb24")
                frame = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255)
                size = _check_size(frame, size, f"frame {index} of {path}", "frame 0")
                index += 1
                yield frame
    finally:
        container.close()
    if size is None:
        raise DatasetError(f"{path}: no frame could be decoded")


def _check_frame(frame: torch.Tensor, index: int) -> None:
    what = f"frame {index}"
    if frame.dim() != 3 or frame.shape[0] != 3:
        raise ValueError(f"{what}: expected a (3, H, W) RGB tensor, got shape {tuple(frame.shape)}")
    if not frame.is_floating_point():
        raise TypeError(f"{what}: expected a float tensor in [0, 1], got {frame.dtype}")
    check_float_range(frame, what)


def _as_rate(fps: float | Fraction) -> Fraction:
    if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction)) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    # 29.97 -> 2997/100; NTSC rates are best given exactly, as Fraction(30000, 1001)
    return Fraction(fps).limit_denominator(1_000_000)


class FrameWriter:
    """Write a clip frame by frame, to an .mp4 file (H.264) or a folder of PNG frames; a context manager.

    ``dest`` ending in ``.mp4`` (any case) is a video file; a path without a suffix, or an existing folder, is a
    folder of PNGs named ``frame_000001.png``, ``frame_000002.png``, ... (:func:`frame_name`, 8 bits per channel,
    lossless). Frames are float (3, H, W) tensors in [0, 1] (values clamped and rounded to 8 bits), all of
    the first frame's size.

    Video: H.264 (libx264) at ``fps`` frames per second (required; ``Fraction(30000, 1001)`` for NTSC
    29.97), with ``crf`` the constant rate factor (0-51, lower is better; default :data:`DEFAULT_CRF`) in 4:2:0
    YUV, which needs an even width and height. ``lossless=True`` stores the RGB values exactly (libx264rgb, qp 0,
    any size; larger files, and players that are not FFmpeg based may refuse them).

    The result appears only when the writer is closed without an error: a video is encoded to a hidden file
    beside ``dest`` and renamed over it; frames are saved into a hidden folder beside ``dest`` that is renamed to
    ``dest``, which must then be missing or empty (checked when the writer is made). An error inside the
    ``with`` block, or :meth:`abort`, removes what was written and leaves ``dest`` as it was.

    Examples:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp()) / "out"
        >>> with FrameWriter(folder) as writer:
        ...     for _ in range(3):
        ...         writer.write(torch.zeros(3, 8, 8))
        >>> sorted(p.name for p in folder.iterdir())
        ['frame_000001.png', 'frame_000002.png', 'frame_000003.png']
    """

    def __init__(
        self,
        dest: str | os.PathLike[str],
        fps: float | Fraction | None = None,
        *,
        crf: int | None = None,
        lossless: bool = False,
    ) -> None:
        self.dest = Path(dest)
        self.frames_written = 0
        self._size: tuple[int, int] | None = None
        self._closed = False
        suffix = self.dest.suffix.lower()
        self.is_video = suffix == ".mp4"
        if not self.is_video and suffix and not self.dest.is_dir():
            raise ValueError(f"{self.dest}: write frames to an .mp4 file or to a folder (a path without a suffix)")
        if self.is_video:
            if fps is None:
                raise ValueError(f"{self.dest}: a video needs a frame rate (fps=...)")
            self._rate = _as_rate(fps)
            if crf is not None and lossless:
                raise ValueError("crf and lossless=True exclude each other (lossless is qp 0)")
            self._crf = DEFAULT_CRF if crf is None else crf
            if isinstance(self._crf, bool) or not isinstance(self._crf, int) or not 0 <= self._crf <= 51:
                raise ValueError(f"crf must be an integer from 0 to 51, got {crf!r}")
            self._lossless = lossless
            self._av = _av()
            self._atomic = atomic_write(self.dest, suffix=".mp4")
            self._tmp = self._atomic.__enter__()
            self._container: Any = None
            self._stream: Any = None
        else:
            if crf is not None or lossless:
                raise ValueError(f"{self.dest}: crf and lossless apply to video files; PNG frames are lossless")
            if self.dest.exists() and (not self.dest.is_dir() or any(self.dest.iterdir())):
                raise FileExistsError(f"{self.dest}: exists and is not an empty folder; frames go to a new folder")
            self.dest.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = self.dest.parent / f".{self.dest.name}.{secrets.token_hex(6)}.tmp"
            self._tmp.mkdir()  # the umask's usual mode, unlike mkdtemp's 0700

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _open_stream(self, width: int, height: int) -> None:
        if not self._lossless and (width % 2 or height % 2):
            raise ValueError(
                f"{self.dest}: H.264 in 4:2:0 needs an even width and height, got {width}x{height}; crop or pad "
                "the frames, or write lossless=True"
            )
        self._container = self._av.open(str(self._tmp), mode="w", format="mp4")
        codec = "libx264rgb" if self._lossless else "libx264"
        stream = self._container.add_stream(codec, rate=self._rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = "rgb24" if self._lossless else "yuv420p"
        stream.options = {"qp": "0"} if self._lossless else {"crf": str(self._crf)}
        self._stream = stream

    def write(self, frame: torch.Tensor) -> None:
        """Add one frame: float (3, H, W) in [0, 1], any device, the same size as the first frame."""
        if self._closed:
            raise ValueError(f"{self.dest}: the writer is closed")
        index = self.frames_written
        _check_frame(frame, index)
        size = (int(frame.shape[-2]), int(frame.shape[-1]))
        if self._size is None:
            self._size = size
            if self.is_video:
                self._open_stream(size[1], size[0])
        elif size != self._size:
            raise ValueError(
                f"frame {index} is {size[1]}x{size[0]}, but the clip's frames are {self._size[1]}x{self._size[0]} "
                "(as frame 0): all frames of a clip must have one size"
            )
        if self.is_video:
            rgb = tensor_to_array(frame, np.uint8)
            av_frame = self._av.VideoFrame.from_ndarray(rgb, format="rgb24")
            for packet in self._stream.encode(av_frame):
                self._container.mux(packet)
        else:
            write_image(frame, self._tmp / frame_name(index))
        self.frames_written += 1

    def close(self) -> Path:
        """Finish the clip and put it at ``dest`` (returned). ``ValueError`` if no frame was written."""
        if self._closed:
            return self.dest
        if self.frames_written == 0:
            self.abort()
            raise ValueError(f"{self.dest}: no frames were written")
        try:
            if self.is_video:
                for packet in self._stream.encode():  # flush the frames the encoder still holds
                    self._container.mux(packet)
                self._container.close()
                self._container = None
        except BaseException:
            self.abort()
            raise
        self._closed = True
        if self.is_video:
            self._atomic.__exit__(None, None, None)
        else:
            if self.dest.is_dir():
                self.dest.rmdir()  # empty, as checked at the start (a non-empty one makes this fail, not lose files)
            os.replace(self._tmp, self.dest)
        return self.dest

    def abort(self) -> None:
        """Drop what was written: ``dest`` is left as it was before the writer was made."""
        if self._closed:
            return
        self._closed = True
        if self.is_video:
            if self._container is not None:
                try:
                    self._container.close()
                except Exception:  # the partial file is deleted anyway
                    pass
            err = RuntimeError("aborted")
            self._atomic.__exit__(type(err), err, None)  # deletes the temporary file, dest untouched
        else:
            shutil.rmtree(self._tmp, ignore_errors=True)


def write_frames(
    frames: Iterable[torch.Tensor],
    dest: str | os.PathLike[str],
    fps: float | Fraction | None = None,
    *,
    crf: int | None = None,
    lossless: bool = False,
) -> int:
    """Write every frame of ``frames`` (float (3, H, W) in [0, 1], consumed one at a time) with a
    :class:`FrameWriter` (see there for ``dest``, ``fps``, ``crf`` and ``lossless``); returns the frame count."""
    with FrameWriter(dest, fps, crf=crf, lossless=lossless) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.frames_written
