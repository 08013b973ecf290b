"""Getting the files of registry weights: offline mirror, hash-checked cache, download.

:func:`weights_file` finds the file of a :class:`~sapnet.models.registry.WeightsEntry`, in this order:

1. a mirror folder, ``weights_dir=`` or the ``SAPNET_WEIGHTS_DIR`` environment variable, searched recursively:
   any file of the entry's size and SHA-256 is used, whatever its name or place (so a copy of the authors'
   ``logs/`` folder, or ``../shared/compat``, serves every entry);
2. for our own weights (``bundled``), the repository's ``checkpoints/<arch>.<tag>-<sha256[:8]>.pth``;
3. the cache, ``torch.hub.get_dir()/checkpoints/sapnet/<arch>.<tag>-<sha256[:8]>.pth`` (``$TORCH_HOME``), whose
   hash is checked at every use (as the shipped file's): a corrupted file is reported, never loaded;
4. a download of the entry's URL with a progress bar, into a temporary file beside the cache entry that is
   renamed into place only after its SHA-256 matches (a mismatch or an interruption leaves nothing behind).

The plumbing shared with the loss backbones and the downstream models (torch hub cache folder, memoised
SHA-256, content-addressed mirror lookup, the "weights unavailable" error) is :mod:`sapnet.hub`.
"""

from __future__ import annotations

import http.client
import os
import shutil
import urllib.error
from collections.abc import Callable
from pathlib import Path

from sapnet.data.download import fetch_url, sha256sum
from sapnet.files import atomic_write
from sapnet.hub import WeightsUnavailableError, find_file, hub_checkpoint_dir
from sapnet.models.checkpoint import CheckpointError
from sapnet.models.registry import WeightsEntry, get_weights

__all__ = [
    "WEIGHTS_DIR_ENV",
    "WeightsError",
    "WeightsHashError",
    "bundled_dir",
    "cache_dir",
    "cached_file",
    "download_weights",
    "find_in_mirror",
    "weights_file",
]

WEIGHTS_DIR_ENV = "SAPNET_WEIGHTS_DIR"
"""Environment variable naming an offline mirror folder of weights files."""


class WeightsError(WeightsUnavailableError, CheckpointError):
    """Registry weights that cannot be had: offline without a mirror, HTTP error, ... Both the package's
    :class:`sapnet.hub.WeightsUnavailableError` and a :class:`~sapnet.models.checkpoint.CheckpointError` (what
    the model resolver raises)."""


class WeightsHashError(WeightsError):
    """A weights file whose SHA-256 is not the registry's (corrupted cache, tampered or wrong download)."""


def bundled_dir() -> Path:
    """The repository's ``checkpoints/`` folder (beside the ``sapnet`` package of a checkout or an editable
    install), where the weights we trained ourselves are shipped (:attr:`WeightsEntry.bundled`)."""
    return Path(__file__).resolve().parents[2] / "checkpoints"


def cache_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints/sapnet`` (follows ``$TORCH_HOME``), where downloads are kept."""
    return hub_checkpoint_dir() / "sapnet"


def cached_file(entry: WeightsEntry) -> Path:
    """Where ``entry``'s file is (or would be) in the cache."""
    return cache_dir() / entry.filename


def find_in_mirror(entry: WeightsEntry, folder: str | os.PathLike[str]) -> Path | None:
    """A file below ``folder`` (recursively, links followed) with ``entry``'s size and SHA-256, or ``None``
    (:func:`sapnet.hub.find_file`)."""
    return find_file(folder, entry.bytes, entry.sha256)


def _check_cached(entry: WeightsEntry, path: Path) -> Path:
    digest = sha256sum(path)  # not memoised: damage on disk leaves size and modification time as they were
    if digest != entry.sha256:
        raise WeightsHashError(
            f"{path}: the cached file of {entry.name} is corrupted (SHA-256 {digest}, expected {entry.sha256}); "
            f"it was not used. Delete it and run `sapnet weights download {entry.name}`, or set "
            f"{WEIGHTS_DIR_ENV} to a folder holding the original file."
        )
    return path


def download_weights(
    name: str | WeightsEntry,
    dest: str | os.PathLike[str] | None = None,
    *,
    progress: bool = True,
    timeout: float = 30.0,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Download the file of weights ``name`` into ``dest`` (default: the cache) and check its SHA-256.

    An existing file with the right hash is kept (no download); one with a wrong hash is replaced. The
    download goes to a temporary file renamed into place only once its hash matches.

    Returns:
        The path of the verified file (``dest/<arch>.<tag>-<hash8>.pth``).

    Raises:
        KeyError: unknown name.
        WeightsHashError: the downloaded file is not the published one (it is deleted).
        WeightsError: the URL could not be fetched (the message says what to do offline).
    """
    entry = name if isinstance(name, WeightsEntry) else get_weights(name)
    folder = Path(dest).expanduser() if dest is not None else cache_dir()
    if entry.bundled:  # shipped with sapnet: copied, never downloaded
        shipped = bundled_dir() / entry.filename
        if shipped.is_file():
            _check_cached(entry, shipped)
            target = folder / entry.filename
            if not (target.is_file() and sha256sum(target) == entry.sha256):
                with atomic_write(target) as tmp:
                    shutil.copyfile(shipped, tmp)
            return target
        if not entry.url:
            raise WeightsError(_bundled_missing(entry, None))
    try:
        return _download(entry, folder, progress, timeout, log)
    except _FetchError as e:
        raise WeightsError(_unavailable(entry, str(e))) from None


class _FetchError(Exception):
    """The URL of an entry could not be fetched; the message is the reason."""


def _download(
    entry: WeightsEntry, folder: Path, progress: bool, timeout: float, log: Callable[[str], None] | None
) -> Path:
    target = folder / entry.filename
    if target.is_file() and sha256sum(target) == entry.sha256:
        return target
    if log is not None:
        log(f"downloading {entry.url} -> {target}")
    with atomic_write(target, suffix=".part") as tmp:  # deleted unless complete and of the published hash
        try:
            fetch_url(entry.url, tmp, timeout=timeout, progress=progress)
        except urllib.error.HTTPError as e:
            raise _FetchError(f"downloading {entry.url} failed (HTTP {e.code} {e.reason})") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise _FetchError(f"downloading {entry.url} failed ({getattr(e, 'reason', e)})") from None
        digest = sha256sum(tmp)
        if digest != entry.sha256:
            raise WeightsHashError(
                f"{entry.url}: the downloaded file ({tmp.stat().st_size} bytes, SHA-256 {digest}) is not the "
                f"published {entry.name} ({entry.bytes} bytes, SHA-256 {entry.sha256}); it was deleted"
            )
    return target


def _bundled_missing(entry: WeightsEntry, mirror: str | os.PathLike[str] | None) -> str:
    where = f"the mirror folder {os.fspath(mirror)!r}, " if mirror is not None else ""
    return (
        f"{entry.name}: sapnet's own weights ({entry.filename}, {entry.bytes} bytes) are shipped in the "
        f"repository's checkpoints/ folder and are not downloadable; not found in {where}{bundled_dir()} or "
        f"{cache_dir()}: copy the file from a sapnet checkout into a folder named by {WEIGHTS_DIR_ENV}"
    )


def _unavailable(entry: WeightsEntry, reason: str, mirror: str | os.PathLike[str] | None = None) -> str:
    if mirror is not None:
        where = f"nor in the mirror folder {os.fspath(mirror)!r}"
    else:
        where = f"and {WEIGHTS_DIR_ENV} (a mirror folder) is not set"
    return (
        f"cannot get the weights {entry.name}: {reason}; it is not in the cache ({cached_file(entry)}) {where}. "
        f"Offline, put the file ({entry.bytes} bytes, SHA-256 {entry.sha256}; any name) in a folder and set "
        f"{WEIGHTS_DIR_ENV}=FOLDER, or fill the cache or a folder on a machine with internet access with "
        f"`sapnet weights download {entry.name} [--to FOLDER]`"
    )


def weights_file(
    name: str | WeightsEntry,
    *,
    weights_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    progress: bool = True,
) -> Path:
    """The verified local file of weights ``name``: from the mirror, the cache or a download (see the module
    docstring for the order).

    Args:
        name: an ``arch.tag`` of the registry (or its entry).
        weights_dir: a mirror folder searched first; ``None``: ``$SAPNET_WEIGHTS_DIR`` if set.
        download: fetch the file when it is neither mirrored nor cached.
        progress: show a download progress bar.

    Raises:
        KeyError: unknown name.
        WeightsHashError: the cached file is corrupted (it is not used), or a download is not the published file.
        WeightsError: not found and not downloadable; the message lists what was tried.
    """
    entry = name if isinstance(name, WeightsEntry) else get_weights(name)
    mirror = weights_dir if weights_dir is not None else os.environ.get(WEIGHTS_DIR_ENV) or None
    if mirror is not None:
        found = find_in_mirror(entry, mirror)
        if found is not None:
            return found
    if entry.bundled:
        shipped = bundled_dir() / entry.filename
        if shipped.is_file():
            return _check_cached(entry, shipped)
    cached = cached_file(entry)
    if cached.is_file():
        return _check_cached(entry, cached)
    if entry.bundled and not entry.url:
        raise WeightsError(_bundled_missing(entry, mirror))
    if not download:
        raise WeightsError(_unavailable(entry, "downloads are disabled", mirror))
    try:
        return _download(entry, cache_dir(), progress, 30.0, None)
    except _FetchError as e:
        raise WeightsError(_unavailable(entry, str(e), mirror)) from None
