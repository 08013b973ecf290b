"""atomic_write: the package's one atomic writer."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sapnet.files import atomic_write, default_file_mode


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_file_gets_the_umask_mode(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        with atomic_write(tmp_path / "sub" / "a.txt") as tmp:
            tmp.write_text("x")
        assert default_file_mode() == 0o666 & ~umask
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "sub" / "a.txt").stat().st_mode) == 0o666 & ~umask


def test_failure_keeps_the_previous_file_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="check failed"), atomic_write(target, suffix=".part") as tmp:
        tmp.write_text("half")
        raise RuntimeError("check failed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
