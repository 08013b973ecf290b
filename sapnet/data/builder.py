"""Build a paired training set from clean photos: K synthetic rainy versions of each, in the ``rain_clean`` layout.

``build_rain_set(clean_dir, out_dir)`` writes ``out_dir/rain/<name>.png`` and ``out_dir/clean/<name>.png`` (8-bit
RGB PNG, lossless) for every image of ``clean_dir``, the layout :func:`sapnet.data.find_pairs` reads. With
``per_image=1`` a pair is named after its source file (``photo.jpg`` -> ``photo.png``); with ``per_image=K > 1``
the K pairs are ``photo_1.png`` ... ``photo_K.png`` and the clean side repeats the same (quantised) photo.

Guarantees:

* Deterministic: the rain of pair (photo, k) depends only on ``(seed, file stem, k)`` (see :func:`pair_seed`),
  never on the order in which files are processed or on whether the build was interrupted and resumed.
* Resumable: a pair whose two files exist is skipped; every file is written atomically (temporary file, then
  rename), so an interrupted run leaves no half-written PNG. ``out_dir/synth.json`` records the parameters, and a
  resumed build with other parameters is refused instead of mixing two kinds of rain in one set.
* Never writes into its input: ``out_dir`` equal to, inside, or containing ``clean_dir`` is an error.

Bad inputs do not stop a build; they are listed in the :class:`BuildReport`: files without an image extension
are ignored, unreadable images and images whose shorter side is below ``min_size`` (default :data:`MIN_SIZE`,
the 100x100 training patch size of PReNet / SAPNet) fail, and grayscale or RGBA photos are converted to RGB
(grayscale replicated, alpha dropped) with a note.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from tqdm import tqdm

from sapnet.data.datasets import find_images
from sapnet.data.image import ImageConversionWarning, ImageReadError, quantize_8bit, read_image, write_image

__all__ = [
    "MANIFEST_NAME",
    "MIN_SIZE",
    "BuildError",
    "BuildReport",
    "build_rain_set",
    "check_folders",
    "check_manifest",
    "pair_names",
    "pair_seed",
    "paths_overlap",
    "render_pairs",
    "torch_threads",
    "write_manifest",
]

#: Smallest accepted shorter side (pixels) of a clean photo: the 100x100 patches PReNet / SAPNet train on.
MIN_SIZE = 100

#: File in ``out_dir`` recording how the set was built (preset, seed, images per photo).
MANIFEST_NAME = "synth.json"


class BuildError(ValueError):
    """A build that cannot start: output folder overlapping the input, or holding a set built differently."""


@dataclass
class BuildReport:
    """What :func:`build_rain_set` did. Pair names are output file stems (``photo`` or ``photo_3``)."""

    out_dir: Path
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # pairs whose two files already existed
    failed: list[tuple[str, str]] = field(default_factory=list)  # (source file name, reason)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (source file name, conversion applied)
    ignored: list[str] = field(default_factory=list)  # files in the input folder that are not images

    @property
    def ok(self) -> bool:
        """True when no source image failed."""
        return not self.failed

    units: ClassVar[tuple[str, str]] = ("pairs", "images")
    """What :meth:`summary` counts: the items written and the sources that failed."""

    def summary(self) -> str:
        """One line: counts of written, skipped and failed items (:attr:`units`: pairs / images)."""
        written, failed = self.units
        parts = [
            f"wrote {len(self.written)} {written}",
            f"skipped {len(self.skipped)} existing",
            f"failed {len(self.failed)} {failed}",
        ]
        if self.ignored:
            parts.append(f"ignored {len(self.ignored)} non-image files")
        return ", ".join(parts) + f" -> {self.out_dir}"

    def read_source(self, path: Path, log: Callable[[str], None], item: str | None = None) -> torch.Tensor | None:
        """Read the source photo ``path`` (:func:`~sapnet.data.read_image`), noting each conversion applied
        (``notes``, by file name) and logging it; ``None`` when it cannot be read, recorded in ``failed`` under
        ``item`` (default: the file name) and logged."""
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ImageConversionWarning)
                image = read_image(path)
        except ImageReadError as e:
            reason = " ".join(str(e).split())
            self.failed.append((item or path.name, reason))
            log(f"failed: {item}: {reason}" if item else f"failed: {reason}")
            return None
        for caught_warning in caught:
            if issubclass(caught_warning.category, ImageConversionWarning):
                self.notes.append((path.name, str(caught_warning.message)))
                log(f"note: {caught_warning.message}")
        return image


def check_folders(src: Path, out: Path) -> None:
    """Raise :class:`BuildError` when the output folder ``out`` overlaps the input folder ``src`` (equal, inside or
    containing it) or exists and is not a folder."""
    if src.exists() and paths_overlap(out.resolve(), src.resolve()):
        raise BuildError(
            f"output folder {out} overlaps the input folder {src} (equal, inside or containing it); "
            f"sapnet synth never writes into its input: choose a separate output folder"
        )
    if out.exists() and not out.is_dir():
        raise BuildError(f"output {out} exists and is not a folder")


def pair_seed(seed: int, stem: str, k: int) -> int:
    """The synthesis seed of pair ``k`` of the photo with file stem ``stem``: a stable 63-bit hash (SHA-256) of
    ``(seed, stem, k)``, identical across runs, machines and Python processes (unlike :func:`hash`)."""
    digest = hashlib.sha256(f"sapnet-synth\0{seed}\0{stem}\0{k}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def pair_names(stem: str, per_image: int) -> list[tuple[int, str]]:
    """``(k, output stem)`` of the pairs made from one photo: ``[(1, stem)]`` for one pair per photo, else
    ``[(1, stem_1), ..., (K, stem_K)]``."""
    if per_image < 1:
        raise ValueError(f"per_image must be >= 1, got {per_image}")
    if per_image == 1:
        return [(1, stem)]
    return [(k, f"{stem}_{k}") for k in range(1, per_image + 1)]


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` intra-op torch threads (``None``: leave the setting alone), then restore it.

    One thread is much faster for small images on a busy machine, where OpenMP workers spin waiting for cores.
    """
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _done(out_dir: Path, name: str) -> bool:
    return (out_dir / "rain" / f"{name}.png").is_file() and (out_dir / "clean" / f"{name}.png").is_file()


def render_pairs(
    clean: torch.Tensor,
    stem: str,
    out_dir: str | os.PathLike[str],
    *,
    preset: str = "heavy",
    per_image: int = 1,
    seed: int = 0,
) -> tuple[list[str], list[str]]:
    """Write the rainy/clean pairs of one clean image, skipping those already on disk.

    Args:
        clean: float tensor (3, H, W) in [0, 1]; it is quantised to 8 bits before rain is added, so the stored
            clean PNG is exactly the image the rain was rendered on.
        stem: the photo's name, from which pair names and per-pair seeds derive.
        out_dir: the set folder; pairs go to ``out_dir/rain/`` and ``out_dir/clean/``.
        preset, per_image, seed: see :func:`build_rain_set`.

    Returns:
        (pair names written, pair names skipped because both files existed).
    """
    from sapnet.data.synthesis import synthesize_rain

    if clean.dim() != 3 or clean.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) clean image, got shape {tuple(clean.shape)}")
    out = Path(out_dir)
    clean = quantize_8bit(clean.float(), "round")  # rounded: the clean PNG write_image stores
    written, skipped = [], []
    for k, name in pair_names(stem, per_image):
        if _done(out, name):
            skipped.append(name)
            continue
        rainy = synthesize_rain(clean[None], preset, pair_seed(seed, stem, k))[0]
        # clean first: a pair counts as done only when both exist, and each write is atomic.
        write_image(clean, out / "clean" / f"{name}.png")
        write_image(rainy, out / "rain" / f"{name}.png")
        written.append(name)
    return written, skipped


def paths_overlap(a: Path, b: Path) -> bool:
    """True when the resolved folders ``a`` and ``b`` are equal or one lies inside the other."""
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def check_manifest(out_dir: Path, manifest: dict[str, object]) -> None:
    """Raise :class:`BuildError` when ``out_dir``'s :data:`MANIFEST_NAME` exists and records other values for any
    key of ``manifest`` (or cannot be read); a missing record passes."""
    path = out_dir / MANIFEST_NAME
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BuildError(f"{path}: unreadable build record ({e}); remove it or choose another output folder") from e
    changed = {k: (old.get(k), v) for k, v in manifest.items() if old.get(k) != v}
    if changed:
        diff = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise BuildError(
            f"{out_dir} holds a set built with other parameters ({diff}); resuming would mix them. "
            f"Choose another output folder, or delete it to rebuild."
        )


def write_manifest(out_dir: Path, manifest: dict[str, object]) -> None:
    """Write ``manifest`` (JSON-able) to ``out_dir``'s :data:`MANIFEST_NAME` atomically, making the folder."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, out_dir / MANIFEST_NAME)


def _non_images(folder: Path, images: list[Path]) -> list[str]:
    keep = {p.name for p in images}
    return sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.name not in keep)


def build_rain_set(
    clean_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    preset: str = "heavy",
    per_image: int = 1,
    seed: int = 0,
    *,
    min_size: int = MIN_SIZE,
    threads: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> BuildReport:
    """Render ``per_image`` rainy versions of every clean photo in ``clean_dir`` into ``out_dir`` (``rain/`` +
    ``clean/``, PNG). See the module docstring for naming, determinism, resuming and bad inputs.

    Args:
        clean_dir: folder of clean photos (its image files, not recursive; see :func:`~sapnet.data.find_images`).
        out_dir: the set to create or complete; must not overlap ``clean_dir``.
        preset: a key of :data:`sapnet.data.synthesis.RAIN_PRESETS` (``"light"``, ``"heavy"``).
        per_image: rainy versions per photo (K >= 1).
        seed: global seed; each pair's seed is :func:`pair_seed` ``(seed, stem, k)``.
        min_size: photos whose shorter side is below this many pixels fail (they cannot give a training patch).
        threads: torch intra-op threads during the build (``None``: torch's current setting). The output does not
            depend on it.
        progress: show a tqdm bar.
        log: receives one line per failed, converted or ignored input.

    Raises:
        BuildError: ``out_dir`` overlaps ``clean_dir``, is a file, or holds a set built with other parameters.
        DatasetError: ``clean_dir`` is missing or holds no images.
        UnknownPresetError: unknown ``preset`` (a ``KeyError``), raised before anything is read or written.
        ValueError: ``per_image`` < 1.
    """
    from sapnet.data.synthesis import rain_preset

    rain_preset(preset)  # validates preset
    pair_names("x", per_image)  # validates per_image
    src, out = Path(clean_dir), Path(out_dir)
    check_folders(src, out)
    images = find_images(src)  # DatasetError when missing or empty
    manifest: dict[str, object] = {"preset": preset, "per_image": per_image, "seed": seed}
    check_manifest(out, manifest)
    write_manifest(out, manifest)

    report = BuildReport(out)
    report.ignored = _non_images(images[0].parent, images)
    for name in report.ignored:
        log(f"ignored: {name}: not an image file")
    with torch_threads(threads):
        for path in tqdm(images, desc="synth", unit="image", disable=None if progress else True):
            _build_one(path, out, report, preset, per_image, seed, min_size, log)
    return report


def _build_one(
    path: Path,
    out: Path,
    report: BuildReport,
    preset: str,
    per_image: int,
    seed: int,
    min_size: int,
    log: Callable[[str], None],
) -> None:
    """Add the pairs of one photo to ``out``, recording the outcome in ``report``."""
    names = [n for _, n in pair_names(path.stem, per_image)]
    if all(_done(out, n) for n in names):  # do not even decode the photo
        report.skipped.extend(names)
        return
    image = report.read_source(path, log)
    if image is None:
        return
    h, w = image.shape[-2:]
    if min(h, w) < min_size:
        reason = f"{w}x{h} pixels, smaller than the minimum {min_size}x{min_size}"
        report.failed.append((path.name, reason))
        log(f"failed: {path}: {reason}")
        return
    written, skipped = render_pairs(image, path.stem, out, preset=preset, per_image=per_image, seed=seed)
    report.written.extend(written)
    report.skipped.extend(skipped)
