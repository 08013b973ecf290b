"""A resumable downloader for the standard deraining sets that have a direct link.

Where each set is published is recorded in :data:`sapnet.data.registry.DATASETS`: the authors' page, direct file
URLs where one exists, the archive name, its SHA-256 when one has been published (none has, so far: ``None``; a
hash is never made up here), where it is extracted and the layout :func:`sapnet.data.find_pairs` will find. Most
sets are only shared through Baidu Pan, OneDrive or Google Drive folders that cannot be fetched by a plain HTTP
client: they are ``manual=True``, and :func:`download` fails at once with the page to visit and the exact folder
to unpack into.

:func:`download` fetches with :mod:`urllib` into ``<file>.part``, resumes a partial file with an HTTP ``Range``
request, checks the SHA-256 (the published one, else the one recorded next to the file by an earlier download),
records the computed hash in ``<file>.sha256`` with a :class:`DownloadWarning` when nothing was published, and
extracts ``.zip`` / ``.tar*`` archives (refusing members that would land outside the target folder).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from sapnet._version import __version__
from sapnet.data.registry import DownloadInfo, get_download

__all__ = [
    "ChecksumError",
    "DownloadError",
    "DownloadWarning",
    "ManualDownloadError",
    "default_data_dir",
    "download",
    "fetch_url",
    "sha256sum",
]

_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A data set that could not be fetched: network failure, HTTP error, bad archive."""


class ManualDownloadError(DownloadError):
    """A data set that is only published on a page a script cannot fetch from (Baidu Pan, Google Drive, ...)."""


class ChecksumError(DownloadError):
    """A downloaded file whose SHA-256 differs from the published (or previously recorded) one."""


class DownloadWarning(UserWarning):
    """A download that worked but could not be verified (no published checksum)."""


def default_data_dir() -> Path:
    """``$SAPNET_DATA`` if set, else ``./data``."""
    env = os.environ.get("SAPNET_DATA")
    return Path(env).expanduser() if env else Path("data")


def sha256sum(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fetch_url(url: str, part: Path, timeout: float = 10.0, progress: bool = True) -> None:
    """Download ``url`` (``http(s)://``, ``file://``) into ``part``, resuming from its current size when the server
    honours ``Range``; a tqdm bar shows the bytes when ``progress``.

    Raises:
        urllib.error.URLError / HTTPError, TimeoutError, ConnectionError, http.client.HTTPException: as urllib
        raises them; what was received stays in ``part``.
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"sapnet/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left to send: the partial file is already whole
            return
        raise
    with response:
        status = getattr(response, "status", 200)
        mode = "ab" if offset and status == 206 else "wb"  # 200: the server ignored Range, start over
        done = offset if mode == "ab" else 0
        length = response.headers.get("Content-Length")
        total = done + int(length) if length and length.isdigit() else None
        with (
            open(part, mode) as f,
            tqdm(
                total=total,
                initial=done,
                unit="B",
                unit_scale=True,
                desc=part.name.removesuffix(".part"),
                disable=None if progress else True,
            ) as bar,
        ):
            while chunk := response.read(_CHUNK):
                f.write(chunk)
                bar.update(len(chunk))


def _verify(info: DownloadInfo, file: Path, log: Callable[[str], None]) -> None:
    digest = sha256sum(file)
    record = file.with_name(file.name + ".sha256")
    if info.sha256 is not None:
        if digest != info.sha256.lower():
            raise ChecksumError(
                f"{file}: SHA-256 {digest} does not match the published {info.sha256}; the file is corrupt or "
                f"not the published one. Delete it and download again."
            )
        log(f"{file.name}: SHA-256 matches the published checksum")
        return
    if record.is_file():
        fields = record.read_text(encoding="utf-8").split()
        recorded = fields[0].lower() if fields else ""
        if recorded and digest != recorded:
            raise ChecksumError(
                f"{file}: SHA-256 {digest} differs from {recorded}, recorded in {record} when it was first "
                f"downloaded; the file changed. Delete both and download again."
            )
        return
    record.write_text(f"{digest}  {file.name}\n", encoding="utf-8")
    message = (
        f"{info.name}: no published checksum for {file.name}; its SHA-256 is {digest} (recorded in {record}). "
        f"Compare it with a colleague's copy to be sure it is the published file."
    )
    warnings.warn(message, DownloadWarning, stacklevel=3)
    log(message)


def _safe_target(root: Path, member: str) -> Path:
    target = (root / member).resolve()
    if not target.is_relative_to(root.resolve()):
        raise DownloadError(f"archive member {member!r} would be written outside {root}; refusing to extract")
    return target


def _extract(archive: Path, target: Path) -> None:
    """Unpack a zip / tar archive into ``target`` via a temporary folder, so that a failure leaves no half tree."""
    tmp = target.with_name(f".{target.name}.extracting")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                for member in z.namelist():
                    _safe_target(tmp, member)
                z.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                for m in t.getmembers():
                    _safe_target(tmp, m.name)
                    if m.issym() or m.islnk():
                        raise DownloadError(f"{archive}: archive holds a link ({m.name}); refusing to extract")
                if hasattr(tarfile, "data_filter"):
                    t.extractall(tmp, filter="data")
                else:  # Python < 3.11.4: members were checked above
                    t.extractall(tmp)
        else:
            raise DownloadError(f"{archive}: not a zip or tar archive; unpack it by hand into {target}")
        target.mkdir(parents=True, exist_ok=True)
        for entry in tmp.iterdir():
            dest = target / entry.name
            if dest.exists():
                raise DownloadError(f"{dest} already exists; remove it (or {target}) to extract {archive.name} again")
            os.replace(entry, dest)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
        raise DownloadError(f"{archive}: broken archive ({e}); delete it and download again") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download(
    name: str | DownloadInfo,
    dest: str | os.PathLike[str] | None = None,
    *,
    timeout: float = 10.0,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Fetch, verify and unpack data set ``name`` into ``dest/<target>``; return that folder.

    The archive is kept in ``dest`` (``dest/<filename>``): running again skips the download (the file is
    re-verified) and the extraction (when ``dest/<target>`` already holds files). An interrupted download
    resumes from ``dest/<filename>.part``.

    Args:
        name: a key of :data:`~sapnet.data.registry.DATASETS` (or an alias, see
            :func:`~sapnet.data.registry.get_download`), or a :class:`~sapnet.data.registry.DownloadInfo`.
        dest: download root; ``None``: :func:`default_data_dir`.
        timeout: seconds to wait for a connection or for data before giving up on a URL.
        progress: show a tqdm bar.
        log: receives progress messages.

    Raises:
        KeyError: unknown name.
        ManualDownloadError: the set has no direct link; the message says where to get it and where to put it.
        ChecksumError: the file does not match its published or recorded SHA-256 (a fresh download that does
            not match is deleted).
        DownloadError: every URL failed (unreachable, HTTP error) or the archive is broken; the message names
            the URLs and the manual way.
    """
    info = name if isinstance(name, DownloadInfo) else get_download(name)
    root = Path(dest) if dest is not None else default_data_dir()
    target = root / info.target
    if info.manual or not info.urls:
        raise ManualDownloadError(f"{info.name} has no direct download link: {info.instructions(root)}")
    filename = info.filename or info.urls[0].rstrip("/").rsplit("/", 1)[-1]
    file = root / filename
    part = file.with_name(file.name + ".part")
    root.mkdir(parents=True, exist_ok=True)

    if not file.is_file():
        errors = []
        for url in info.urls:
            resume = f" (resuming at {part.stat().st_size} bytes)" if part.exists() else ""
            log(f"downloading {url} -> {file}{resume}")
            try:
                fetch_url(url, part, timeout, progress)
            except urllib.error.HTTPError as e:
                errors.append(f"{url}: HTTP {e.code} {e.reason}")
                continue
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
                reason = getattr(e, "reason", e)
                errors.append(f"{url}: {reason}")
                continue
            os.replace(part, file)
            break
        else:
            raise DownloadError(
                f"could not download {info.name} ({'; '.join(errors)}). If you are offline or the link is gone, "
                f"{info.instructions(root)}"
                + (f" A partial download is kept in {part} and resumes next time." if part.exists() else "")
            )
        try:
            _verify(info, file, log)
        except ChecksumError:
            file.unlink(missing_ok=True)
            raise
    else:
        log(f"{file} already downloaded")
        _verify(info, file, log)

    if target.is_dir() and any(target.iterdir()):
        log(f"{target} already holds files; not extracting again")
    else:
        log(f"extracting {file.name} -> {target}")
        _extract(file, target)
    return target
