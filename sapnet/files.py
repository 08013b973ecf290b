"""Writing files so that a reader never sees half of one: the package's one atomic writer."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_write", "default_file_mode"]


def default_file_mode() -> int:
    """The mode a newly created file gets from ``open()`` under the current umask (e.g. ``0o644``)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, suffix: str = ".tmp", fsync: bool = False) -> Iterator[Path]:
    """A temporary file beside ``path`` to write; when the block ends normally it replaces ``path``.

    The temporary file is hidden (``.<name>.<random><suffix>``), created empty in ``path``'s folder (made if
    needed) so that the final rename is atomic, and given the umask's usual mode (not ``mkstemp``'s 0600) before
    the rename. If the block raises (a failed write, a check of the content, an interrupt), it is deleted and any
    previous file at ``path`` is left as it was. ``fsync``: flush it to disk before the rename (checkpoints).

    Examples:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "result.txt"
        >>> with atomic_write(target) as tmp:
        ...     _ = tmp.write_text("done")
        >>> target.read_text()
        'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if fsync:
            with tmp.open("rb") as f:
                os.fsync(f.fileno())
        tmp.chmod(default_file_mode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
