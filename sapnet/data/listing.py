"""Listing image folders and summarising lists in messages: the one place the package does either.

Every folder of images is read the same way (:func:`list_images`): files with an image extension
(:data:`~sapnet.data.image.IMAGE_EXTENSIONS`, any case), hidden entries (``.DS_Store``, macOS ``._001.png``
resource forks, ``.git/``) skipped, in natural order (``img2`` before ``img10``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sapnet.data.image import IMAGE_EXTENSIONS

__all__ = ["LIST_LIMIT", "is_image_file", "list_images", "natural_sort_key", "plural", "read_name_list", "summarise"]

LIST_LIMIT = 10
"""Items a message names before it says how many more there are."""


def natural_sort_key(text: str) -> tuple[Any, ...]:
    """Sort key that orders digit runs by value (``img2`` before ``img10``), ignoring case for the rest."""
    parts = re.split(r"([0-9]+)", text)
    # re.split with a capturing group alternates text (even index) and digits (odd index), so the elements
    # compared at any position are always of the same type; the text itself breaks ties after the parts.
    return tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(parts)), text


def is_image_file(path: Path) -> bool:
    """Whether ``path`` is a visible (not dot-named) file with an image extension."""
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def list_images(folder: str | os.PathLike[str], *, recursive: bool = False) -> list[Path]:
    """The image files in ``folder`` (see :func:`is_image_file`), in natural order of their names.

    With ``recursive``, also those in its sub-folders at any depth (hidden folders skipped, symbolic links
    to folders not followed), ordered by their path relative to ``folder``, compared folder by folder.
    """
    root = Path(folder)
    if not recursive:
        return sorted((p for p in root.iterdir() if is_image_file(p)), key=lambda p: natural_sort_key(p.name))
    found: list[Path] = []
    for here, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(p for name in files if is_image_file(p := Path(here) / name))
    return sorted(found, key=lambda p: tuple(natural_sort_key(part) for part in p.relative_to(root).parts))


def read_name_list(path: str | os.PathLike[str]) -> list[str]:
    """The file names listed in a text file, one per line (blank lines and ``#`` comments ignored), in order.

    Such lists fix a subset of a folder, e.g. ``datasets/splits/sirr_real_heldout.txt``.

    Raises:
        FileNotFoundError: no such file. ValueError: a name listed twice, or no names.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image list")
    names = [line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"{path}: lists no image names")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{path}: names listed more than once: {summarise(repeated)}")
    return names


def plural(n: int, word: str) -> str:
    """``1 image`` / ``3 images``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def summarise(items: Iterable[str], limit: int = LIST_LIMIT) -> str:
    """The items in natural order, comma-separated: ``a, b, c``, or past ``limit`` items
    ``a, b, ... (and 5 more; 15 in all)``."""
    ordered = sorted(items, key=natural_sort_key)
    if len(ordered) <= limit:
        return ", ".join(ordered)
    return f"{', '.join(ordered[:limit])}, ... (and {len(ordered) - limit} more; {len(ordered)} in all)"
