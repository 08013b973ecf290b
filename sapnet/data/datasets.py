"""Readers for deraining test sets: rainy/clean pairs in the common folder layouts, and unpaired real photos.

Pairs are always matched by file name (after removing the layout's prefixes or suffixes), never by position in
a sorted listing: a set where one file is missing or renamed is refused with the names that do not match,
instead of silently pairing every later rainy image with the wrong clean one.

Supported layouts (:data:`LAYOUTS`, detected automatically or forced with ``layout=``):

========================  =============================================================================
``prenet``                ``rainy/rain-001.png`` with ``norain-001.png`` in the root or in ``norain/``
                          (PReNet / JORDER); paired by the number, so ``rain-1`` pairs ``norain-001``
``input_target``          ``input/`` + ``target/`` (MPRNet, Restormer), same names
``rain_clean``            ``rain/`` + ``clean/``
``rain_norain``           ``rain/`` + ``norain/``
``rainy_gt``              ``rainy/`` + ``gt/``
``data_gt``               ``data/`` + ``gt/``
``rainy_clean``           ``rainy/`` + ``clean/``
``input_gt``              ``input/`` + ``gt/``
``rain12``                ``001_in.png`` + ``001_GT.png`` in the root (Rain12; ``_in`` / ``_gt`` in any case)
========================  =============================================================================

In the folder layouts a pair shares its file stem; extensions may differ (``001.jpg`` with ``001.png``).
Folder names are matched case-insensitively. Files without an image extension (``README.txt``, ``Thumbs.db``)
and hidden files (``.DS_Store``, macOS ``._001.png`` resource forks) are ignored; sub-folders are not searched.
Files with an image extension are not opened at discovery: a corrupt one raises
:class:`~sapnet.data.image.ImageReadError` when its pair is read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from sapnet.data.image import format_size, read_image
from sapnet.data.listing import is_image_file, list_images, natural_sort_key, plural, summarise

__all__ = [
    "LAYOUTS",
    "DatasetError",
    "DatasetNotFoundError",
    "DatasetWarning",
    "ImagePair",
    "LayoutNotFoundError",
    "PairedImageDataset",
    "UnpairedImageDataset",
    "detect_layout",
    "find_images",
    "find_pairs",
]


class DatasetError(ValueError):
    """A data set folder that cannot be read as asked: no known layout, several layouts, empty folders, names
    that do not pair up, or a pair whose two images differ in size."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The data set folder does not exist."""


class LayoutNotFoundError(DatasetError):
    """The folder matches none of the paired :data:`LAYOUTS` (it may still be an unpaired set: callers that
    fall back to :func:`find_images` should catch this, not :class:`DatasetError`, so that a paired set with
    missing or misnamed files is reported instead of being read as unpaired)."""


class DatasetWarning(UserWarning):
    """A data set that can be read but does not look like the published benchmark (count, rainy-input PSNR)."""


@dataclass(frozen=True)
class ImagePair:
    """One rainy image and its clean ground truth; ``name`` is the shared key (e.g. ``"001"``)."""

    name: str
    rainy: Path
    clean: Path


def _natural_path_key(path: Path) -> tuple[Any, ...]:
    return natural_sort_key(path.name)


class _Listing:
    """What one folder holds: sub-folders by lower-case name, image files, and other visible entries."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dirs: dict[str, list[Path]] = {}
        self.images: list[Path] = []
        self.others: list[str] = []
        for entry in sorted(root.iterdir(), key=_natural_path_key):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                self.dirs.setdefault(entry.name.casefold(), []).append(entry)
            elif is_image_file(entry):
                self.images.append(entry)
            else:
                self.others.append(entry.name)

    def subdir(self, name: str) -> Path | None:
        found = self.dirs.get(name.casefold(), [])
        if len(found) > 1:
            names = ", ".join(f"{p.name}/" for p in found)
            raise DatasetError(f"{self.root}: folders {names} differ only in case; keep one of them")
        return found[0] if found else None

    def describe(self) -> str:
        parts = []
        if self.dirs:
            folders = [f"{p.name}/" for ps in self.dirs.values() for p in ps]
            parts.append(f"folders {summarise(folders)}")
        if self.images:
            parts.append(f"{plural(len(self.images), 'image file')} ({summarise([p.name for p in self.images])})")
        if self.others:
            parts.append(f"other files {summarise(self.others)}")
        return "; ".join(parts) if parts else "nothing (the folder is empty)"


# A side of a layout: where its images are, and how a file name gives the pair key and the pair name.
_KeyFn = Callable[[Path], tuple[Any, str] | None]


@dataclass
class _Side:
    label: str  # "rainy" / "clean"
    where: str  # human description of where the files are, e.g. "rain/"
    files: list[Path]
    key: _KeyFn
    empty_hint: str = ""


def _stem_key(path: Path) -> tuple[Any, str]:
    return path.stem, path.stem


class _Layout:
    name: str
    description: str
    short: str  # compact pattern for error messages

    def matches(self, listing: _Listing) -> bool:
        raise NotImplementedError

    def sides(self, listing: _Listing) -> tuple[_Side, _Side, list[Path]]:
        """Rainy side, clean side, and image files that belong to the layout's folder but to neither side."""
        raise NotImplementedError


class _TwoFolders(_Layout):
    def __init__(self, name: str, rainy_dir: str, clean_dir: str, note: str = "") -> None:
        self.name = name
        self.rainy_dir = rainy_dir
        self.clean_dir = clean_dir
        self.description = f"{rainy_dir}/ + {clean_dir}/ with the same file names{note}"
        self.short = f"{rainy_dir}/ + {clean_dir}/"

    def matches(self, listing: _Listing) -> bool:
        return listing.subdir(self.rainy_dir) is not None and listing.subdir(self.clean_dir) is not None

    def sides(self, listing: _Listing) -> tuple[_Side, _Side, list[Path]]:
        sides = []
        for label, name in (("rainy", self.rainy_dir), ("clean", self.clean_dir)):
            folder = listing.subdir(name)
            assert folder is not None
            sides.append(_Side(label, f"{folder.name}/", list_images(folder), _stem_key, _subfolder_hint(folder)))
        return sides[0], sides[1], []


def _subfolder_hint(folder: Path) -> str:
    subs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if not subs:
        return ""
    return f" (it holds {plural(len(subs), 'sub-folder')}; images are not searched recursively)"


_PRENET_RAINY = re.compile(r"(?:rain[-_]?)?([0-9]+)", re.IGNORECASE)
_PRENET_CLEAN = re.compile(r"(?:norain[-_]?)?([0-9]+)", re.IGNORECASE)
_PRENET_CLEAN_IN_ROOT = re.compile(r"norain[-_]?([0-9]+)", re.IGNORECASE)


def _number_key(pattern: re.Pattern[str]) -> _KeyFn:
    def key(path: Path) -> tuple[Any, str] | None:
        m = pattern.fullmatch(path.stem)
        return (int(m.group(1)), m.group(1)) if m else None

    return key


class _PReNet(_Layout):
    name = "prenet"
    description = "rainy/rain-NNN.png with norain-NNN.png in the root or in norain/ (PReNet, JORDER); paired by number"
    short = "rainy/rain-N + norain-N"

    def _root_clean(self, listing: _Listing) -> list[Path]:
        return [p for p in listing.images if _PRENET_CLEAN_IN_ROOT.fullmatch(p.stem)]

    def matches(self, listing: _Listing) -> bool:
        if listing.subdir("rainy") is None:
            return False
        return listing.subdir("norain") is not None or bool(self._root_clean(listing))

    def sides(self, listing: _Listing) -> tuple[_Side, _Side, list[Path]]:
        rainy_dir = listing.subdir("rainy")
        assert rainy_dir is not None
        clean_files = self._root_clean(listing)
        where = "norain-NNN files in the root"
        clean_dir = listing.subdir("norain")
        if clean_dir is not None:
            clean_files = sorted([*clean_files, *list_images(clean_dir)], key=_natural_path_key)
            where = f"{clean_dir.name}/" if not self._root_clean(listing) else f"{where} and {clean_dir.name}/"
        rainy_files = list_images(rainy_dir)
        rainy = _Side(
            "rainy", f"{rainy_dir.name}/", rainy_files, _number_key(_PRENET_RAINY), _subfolder_hint(rainy_dir)
        )
        return rainy, _Side("clean", where, clean_files, _number_key(_PRENET_CLEAN)), []


_RAIN12 = re.compile(r"(.+)_(in|gt)", re.IGNORECASE)


class _Rain12(_Layout):
    name = "rain12"
    description = "NNN_in.png + NNN_GT.png side by side in one folder (Rain12; _in/_gt in any case)"
    short = "N_in + N_GT files"

    def matches(self, listing: _Listing) -> bool:
        return any(_RAIN12.fullmatch(p.stem) for p in listing.images)

    def sides(self, listing: _Listing) -> tuple[_Side, _Side, list[Path]]:
        rainy, clean, stray = [], [], []
        for p in listing.images:
            m = _RAIN12.fullmatch(p.stem)
            if m is None:
                stray.append(p)
            elif m.group(2).lower() == "in":
                rainy.append(p)
            else:
                clean.append(p)

        def key(path: Path) -> tuple[Any, str] | None:
            m = _RAIN12.fullmatch(path.stem)
            return (m.group(1), m.group(1)) if m else None

        return _Side("rainy", "*_in files", rainy, key), _Side("clean", "*_GT files", clean, key), stray


_LAYOUT_LIST: tuple[_Layout, ...] = (
    _PReNet(),
    _TwoFolders("input_target", "input", "target", " (MPRNet, Restormer)"),
    _TwoFolders("rain_clean", "rain", "clean"),
    _TwoFolders("rain_norain", "rain", "norain"),
    _TwoFolders("rainy_gt", "rainy", "gt"),
    _TwoFolders("data_gt", "data", "gt"),
    _TwoFolders("rainy_clean", "rainy", "clean"),
    _TwoFolders("input_gt", "input", "gt"),
    _Rain12(),
)
_LAYOUT_BY_NAME = {layout.name: layout for layout in _LAYOUT_LIST}
_LAYOUT_ALIASES = {"jorder": "prenet", "mprnet": "input_target", "restormer": "input_target"}

#: Layout name -> what it looks like on disk.
LAYOUTS: dict[str, str] = {layout.name: layout.description for layout in _LAYOUT_LIST}


def _layout_by_name(name: str) -> _Layout:
    key = name.strip().lower().replace("-", "_")
    key = _LAYOUT_ALIASES.get(key, key)
    if key not in _LAYOUT_BY_NAME:
        raise DatasetError(f"unknown layout {name!r}; valid layouts: {', '.join(LAYOUTS)}")
    return _LAYOUT_BY_NAME[key]


def _listing(root: str | os.PathLike[str]) -> _Listing:
    root = Path(root)
    if not root.exists():
        raise DatasetNotFoundError(f"{root}: data set folder not found")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder (give the folder that holds the data set)")
    return _Listing(root)


def _layouts_help() -> str:
    return ", ".join(f"{layout.name} ({layout.short})" for layout in _LAYOUT_LIST)


def _nested_hint(listing: _Listing) -> str:
    """When ``root`` matches nothing, name its sub-folders that do (e.g. ``data/`` holding ``Rain100L/``)."""
    nested = []
    for folders in listing.dirs.values():
        for folder in folders:
            try:
                if any(layout.matches(_Listing(folder)) for layout in _LAYOUT_LIST):
                    nested.append(f"{folder.name}/")
            except (OSError, DatasetError):
                continue
    return f" Its sub-folders {summarise(nested)} follow a layout: give one of them as root." if nested else ""


def _detect(listing: _Listing) -> _Layout:
    found = [layout for layout in _LAYOUT_LIST if layout.matches(listing)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise LayoutNotFoundError(
            f"{listing.root}: no known paired layout. Looked for {_layouts_help()}. Found {listing.describe()}."
            f"{_nested_hint(listing)} (For rainy photos without ground truth use UnpairedImageDataset.)"
        )
    names = ", ".join(f"{layout.name} ({layout.description})" for layout in found)
    raise DatasetError(
        f"{listing.root}: ambiguous, it matches several layouts: {names}. "
        f"Pass layout= one of {', '.join(layout.name for layout in found)}, or remove the extra folders."
    )


def detect_layout(root: str | os.PathLike[str]) -> str:
    """The name of the layout (a key of :data:`LAYOUTS`) that ``root`` follows.

    Raises:
        DatasetError: ``root`` is missing (:class:`DatasetNotFoundError`), matches no layout, or several.
    """
    return _detect(_listing(root)).name


def _keyed(side: _Side, root: Path) -> tuple[dict[Any, tuple[str, Path]], list[Path]]:
    """Key -> (pair name, file) for one side, and the files whose name gives no key."""
    keyed: dict[Any, tuple[str, Path]] = {}
    unkeyed: list[Path] = []
    duplicates: list[str] = []
    for path in side.files:
        k = side.key(path)
        if k is None:
            unkeyed.append(path)
        elif k[0] in keyed:
            duplicates.append(f"{_rel(keyed[k[0]][1], root)} and {_rel(path, root)}")
        else:
            keyed[k[0]] = (k[1], path)
    if duplicates:
        raise DatasetError(
            f"{root}: {side.label} files with the same pair name (e.g. 001.png and 001.jpg), "
            f"so they cannot be paired: {summarise(duplicates)}"
        )
    return keyed, unkeyed


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _pairs_for(listing: _Listing, layout: _Layout) -> list[ImagePair]:
    root = listing.root
    rainy_side, clean_side, stray = layout.sides(listing)
    for side in (rainy_side, clean_side):
        if not side.files:
            raise DatasetError(
                f"{root}: no {side.label} images in {side.where} (layout {layout.name}: {layout.description})"
                f"{side.empty_hint}"
            )
    rainy, rainy_unkeyed = _keyed(rainy_side, root)
    clean, clean_unkeyed = _keyed(clean_side, root)
    lonely_rainy = [_rel(p, root) for k, (_, p) in rainy.items() if k not in clean]
    lonely_rainy += [_rel(p, root) for p in rainy_unkeyed]
    lonely_clean = [_rel(p, root) for k, (_, p) in clean.items() if k not in rainy]
    lonely_clean += [_rel(p, root) for p in clean_unkeyed]
    problems = []
    if lonely_rainy:
        problems.append(f"{plural(len(lonely_rainy), 'rainy image')} without a clean one: {summarise(lonely_rainy)}")
    if lonely_clean:
        problems.append(f"{plural(len(lonely_clean), 'clean image')} without a rainy one: {summarise(lonely_clean)}")
    if stray:
        problems.append(f"images that are neither rainy nor clean: {summarise([_rel(p, root) for p in stray])}")
    if problems:
        raise DatasetError(
            f"{root}: file names do not pair up under layout {layout.name} ({layout.description}); pairs are "
            f"matched by name, never by position. " + "; ".join(problems)
        )
    pairs = [ImagePair(name, path, clean[k][1]) for k, (name, path) in rainy.items()]
    pairs.sort(key=lambda pair: natural_sort_key(pair.name))
    return pairs


def _resolve(root: str | os.PathLike[str], layout: str | None) -> tuple[str, list[ImagePair]]:
    listing = _listing(root)
    if layout is None:
        chosen = _detect(listing)
    else:
        chosen = _layout_by_name(layout)
        if not chosen.matches(listing):
            raise DatasetError(
                f"{listing.root}: does not follow layout {chosen.name} ({chosen.description}). "
                f"Found {listing.describe()}."
            )
    return chosen.name, _pairs_for(listing, chosen)


def find_pairs(root: str | os.PathLike[str], layout: str | None = None) -> list[ImagePair]:
    """The rainy/clean pairs under ``root``, paired by name and in natural order of the pair names.

    Args:
        root: the data set folder (e.g. ``.../Rain100L``).
        layout: a key of :data:`LAYOUTS` to force one (also ``"jorder"``, ``"mprnet"``, ``"restormer"``);
            ``None`` detects it.

    Raises:
        DatasetError: missing root (:class:`DatasetNotFoundError`), unknown layout name, no or several
            matching layouts, an empty folder, or names that do not pair up (the message lists them).
    """
    return _resolve(root, layout)[1]


class PairedImageDataset(Dataset):
    """Rainy/clean test pairs from a folder in one of the :data:`LAYOUTS`.

    Each item is ``{"rainy": (3, H, W) float tensor, "clean": (3, H, W) float tensor, "name": str}`` with
    values in [0, 1] (see :func:`~sapnet.data.image.read_image`); ``transform``, when given, is applied to that
    dict and its result returned. Files are only opened when an item is read.

    Raises (when reading an item):
        ImageReadError: an image file that cannot be decoded.
        DatasetError: the two images of a pair differ in size.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        layout: str | None = None,
        transform: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self.root = Path(root)
        self.layout, self.pairs = _resolve(self.root, layout)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def names(self) -> list[str]:
        return [pair.name for pair in self.pairs]

    def __getitem__(self, index: int) -> Any:
        pair = self.pairs[index]
        rainy = read_image(pair.rainy)
        clean = read_image(pair.clean)
        if rainy.shape != clean.shape:
            raise DatasetError(
                f"pair {pair.name!r}: rainy {pair.rainy} is {format_size(rainy)} but clean {pair.clean} is "
                f"{format_size(clean)}; the two images of a pair must have the same size"
            )
        sample: dict[str, Any] = {"rainy": rainy, "clean": clean, "name": pair.name}
        return self.transform(sample) if self.transform is not None else sample

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, layout={self.layout!r}, pairs={len(self)})"


_UNPAIRED_SUBDIRS = ("rain", "rainy", "input")


def find_images(root: str | os.PathLike[str]) -> list[Path]:
    """The image files of an unpaired set: those in ``root``, or, if it holds none, in exactly one of its
    ``rain/``, ``rainy/`` or ``input/`` folders; natural order.

    Raises:
        DatasetError: missing root, no images, several candidate folders, or two files with the same stem
            (``001.jpg`` and ``001.png``: their names would collide).
    """
    listing = _listing(root)
    images = listing.images
    if not images:
        candidates = []
        for name in _UNPAIRED_SUBDIRS:
            folder = listing.subdir(name)
            if folder is not None:
                found = list_images(folder)
                if found:
                    candidates.append((folder, found))
        if len(candidates) > 1:
            names = ", ".join(f"{folder.name}/" for folder, _ in candidates)
            raise DatasetError(f"{listing.root}: images in several folders ({names}); give one of them as root")
        if not candidates:
            looked = ", ".join(f"{name}/" for name in _UNPAIRED_SUBDIRS)
            raise DatasetError(f"{listing.root}: no images in it or in {looked}. Found {listing.describe()}.")
        images = candidates[0][1]
    _check_unique_stems(images)
    return images


def _check_unique_stems(images: Iterable[Path]) -> None:
    seen: dict[str, Path] = {}
    clashes = []
    for path in images:
        if path.stem in seen:
            clashes.append(f"{seen[path.stem].name} and {path.name}")
        else:
            seen[path.stem] = path
    if clashes:
        raise DatasetError(f"files with the same name but different extensions: {summarise(clashes)}")


class UnpairedImageDataset(Dataset):
    """Rainy images without ground truth (e.g. real photos): see :func:`find_images` for which files.

    Each item is ``{"rainy": (3, H, W) float tensor in [0, 1], "name": file stem}``, passed through
    ``transform`` when given.
    """

    def __init__(
        self, root: str | os.PathLike[str], *, transform: Callable[[dict[str, Any]], Any] | None = None
    ) -> None:
        self.root = Path(root)
        self.files = find_images(self.root)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    @property
    def names(self) -> list[str]:
        return [path.stem for path in self.files]

    def __getitem__(self, index: int) -> Any:
        path = self.files[index]
        sample: dict[str, Any] = {"rainy": read_image(path), "name": path.stem}
        return self.transform(sample) if self.transform is not None else sample

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, images={len(self)})"
