"""The one folder listing and list summary of the package: ``sapnet.data.listing``."""

from __future__ import annotations

from pathlib import Path

import pytest

from sapnet.data.listing import is_image_file, list_images, natural_sort_key, plural, summarise


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name in [
        "img10.png",
        "img2.JPG",
        "Img1.tif",
        "notes.txt",
        ".DS_Store",
        "._img3.png",
        "sub/b10.png",
        "sub/b9.png",
        "sub/deeper/c.webp",
        ".hidden/x.png",
        "sub10/a.png",
        "sub2/a.png",
    ]:
        _touch(tmp_path / name)
    (tmp_path / "folder.png").mkdir()  # a folder with an image extension is not an image file
    return tmp_path


def test_list_images_natural_order_skipping_hidden_and_non_images(tree: Path) -> None:
    assert [p.name for p in list_images(tree)] == ["Img1.tif", "img2.JPG", "img10.png"]


def test_list_images_recursive(tree: Path) -> None:
    found = [p.relative_to(tree).as_posix() for p in list_images(tree, recursive=True)]
    assert found == [
        "Img1.tif",
        "img2.JPG",
        "img10.png",
        "sub/b9.png",
        "sub/b10.png",
        "sub/deeper/c.webp",
        "sub2/a.png",
        "sub10/a.png",
    ]


@pytest.mark.parametrize(("name", "expected"), [("a.png", True), ("a.PNG", True), (".a.png", False), ("a.txt", False)])
def test_is_image_file(tmp_path: Path, name: str, expected: bool) -> None:
    assert is_image_file(_touch(tmp_path / name)) is expected
    assert not is_image_file(tmp_path / "missing.png")


@pytest.mark.parametrize(("n", "text"), [(0, "0 files"), (1, "1 file"), (2, "2 files")])
def test_plural(n: int, text: str) -> None:
    assert plural(n, "file") == text


@pytest.mark.parametrize(
    ("count", "limit", "text"),
    [
        (0, 10, ""),
        (3, 10, "k1, k2, k3"),
        (3, 3, "k1, k2, k3"),
        (12, 10, "k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, ... (and 2 more; 12 in all)"),
        (5, 2, "k1, k2, ... (and 3 more; 5 in all)"),
    ],
)
def test_summarise_in_natural_order(count: int, limit: int, text: str) -> None:
    items = (f"k{i}" for i in range(count, 0, -1))  # any iterable, in any order
    assert summarise(items, limit) == text


def test_natural_sort_key() -> None:
    assert sorted(["a10b2", "a2b10", "a2b9", "A2b9"], key=natural_sort_key) == ["A2b9", "a2b9", "a2b10", "a10b2"]
    assert sorted(["a2", "a", "a1b", "a1"], key=natural_sort_key) == ["a", "a1", "a1b", "a2"]  # prefixes first
