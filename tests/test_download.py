"""``sapnet.data.download`` / ``sapnet download`` against a local HTTP server; the network is never touched."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import sapnet
from sapnet.cli import main
from sapnet.data import find_pairs
from sapnet.data.download import ChecksumError, DownloadError, DownloadWarning, ManualDownloadError, download
from sapnet.data.registry import DATASETS, DownloadInfo, get_download

UNREACHABLE = "http://127.0.0.1:9/x.zip"  # discard port: nothing listens, the connection is refused at once


def png_bytes(seed: int) -> bytes:
    a = np.random.default_rng(seed).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def rain12_zip() -> bytes:
    """A tiny archive shaped like Rain12: one folder of NNN_in.png + NNN_GT.png."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in (1, 2):
            z.writestr(f"rain12/{i:03d}_in.png", png_bytes(i))
            z.writestr(f"rain12/{i:03d}_GT.png", png_bytes(10 + i))
        z.writestr("rain12/readme.txt", "test archive")
    return buf.getvalue()


class _Server:
    """Serves ``files`` (path -> bytes) with ``Range: bytes=N-`` support; records each request's headers."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[dict[str, str]] = []
        self.honour_range = True
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(dict(self.headers))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                header = self.headers.get("Range")
                if header and server.honour_range:
                    start = int(header.removeprefix("bytes=").rstrip("-"))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                self.wfile.write(body[start:])

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add(self, path: str, body: bytes) -> str:
        self.files[path] = body
        return self.url + path


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    s = _Server()
    thread = threading.Thread(target=s.httpd.serve_forever, daemon=True)
    thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
def archive(server: _Server) -> tuple[DownloadInfo, bytes]:
    body = rain12_zip()
    server.requests.clear()
    server.honour_range = True
    url = server.add("/li_cvpr16_rain.zip", body)
    return replace(DATASETS["Rain12"], urls=(url,), sha256=hashlib.sha256(body).hexdigest()), body


def quiet(_m: str) -> None:
    pass


def test_download_verifies_and_extracts(archive: tuple[DownloadInfo, bytes], server: _Server, tmp_path: Path) -> None:
    info, body = archive
    target = download(info, tmp_path, progress=False, log=quiet)
    assert target == tmp_path / "Rain12"
    assert (tmp_path / "li_cvpr16_rain.zip").read_bytes() == body
    assert not (tmp_path / "li_cvpr16_rain.zip.part").exists()
    assert [p.name for p in find_pairs(target / "rain12")] == ["001", "002"]
    assert server.requests[-1]["User-Agent"] == f"sapnet/{sapnet.__version__}"
    # Again: not downloaded (no request) nor extracted a second time.
    requests = len(server.requests)
    messages: list[str] = []
    assert download(info, tmp_path, progress=False, log=messages.append) == target
    assert len(server.requests) == requests
    assert any("not extracting again" in m for m in messages)


def test_download_resumes_a_partial_file(archive: tuple[DownloadInfo, bytes], server: _Server, tmp_path: Path) -> None:
    info, body = archive
    (tmp_path / "li_cvpr16_rain.zip.part").write_bytes(body[:100])
    download(info, tmp_path, progress=False, log=quiet)
    assert server.requests[-1].get("Range") == "bytes=100-"
    assert (tmp_path / "li_cvpr16_rain.zip").read_bytes() == body


def test_download_restarts_when_the_server_ignores_range(
    archive: tuple[DownloadInfo, bytes], server: _Server, tmp_path: Path
) -> None:
    info, body = archive
    server.honour_range = False
    (tmp_path / "li_cvpr16_rain.zip.part").write_bytes(b"stale bytes from another file")
    download(info, tmp_path, progress=False, log=quiet)
    assert (tmp_path / "li_cvpr16_rain.zip").read_bytes() == body


def test_checksum_mismatch_is_an_error(archive: tuple[DownloadInfo, bytes], tmp_path: Path) -> None:
    info, _ = archive
    bad = replace(info, sha256="0" * 64)
    with pytest.raises(ChecksumError, match="does not match the published"):
        download(bad, tmp_path, progress=False, log=quiet)
    assert not (tmp_path / "li_cvpr16_rain.zip").exists()  # a bad fresh download is not kept
    assert not (tmp_path / "Rain12").exists()


def test_unpublished_checksum_is_recorded_with_a_warning(archive: tuple[DownloadInfo, bytes], tmp_path: Path) -> None:
    info, body = archive
    unknown = replace(info, sha256=None)
    with pytest.warns(DownloadWarning, match="no published checksum"):
        download(unknown, tmp_path, progress=False, log=quiet)
    record = tmp_path / "li_cvpr16_rain.zip.sha256"
    assert record.read_text().split() == [hashlib.sha256(body).hexdigest(), "li_cvpr16_rain.zip"]
    # The recorded hash guards the kept archive afterwards.
    (tmp_path / "li_cvpr16_rain.zip").write_bytes(body[:-1] + b"x")
    with pytest.raises(ChecksumError, match="recorded"):
        download(unknown, tmp_path, progress=False, log=quiet)


def test_tar_archives_and_unsafe_members(server: _Server, tmp_path: Path) -> None:
    def tar(names: list[str]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as t:
            for name in names:
                data = png_bytes(len(name))
                member = tarfile.TarInfo(name)
                member.size = len(data)
                t.addfile(member, io.BytesIO(data))
        return buf.getvalue()

    good = DownloadInfo(
        name="T", paper="", page="", target="T", layout="", contents="", filename="t.tar.gz",
        urls=(server.add("/t.tar.gz", tar(["rain/1.png", "clean/1.png"])),),
    )  # fmt: skip
    with pytest.warns(DownloadWarning):
        target = download(good, tmp_path / "a", progress=False, log=quiet)
    assert [p.name for p in find_pairs(target)] == ["1"]
    evil = replace(good, urls=(server.add("/evil.tar.gz", tar(["../../escape.png"])),), filename="evil.tar.gz")
    with pytest.warns(DownloadWarning), pytest.raises(DownloadError, match="outside"):
        download(evil, tmp_path / "b", progress=False, log=quiet)
    assert not list(tmp_path.rglob("escape.png"))


def test_offline_fails_fast_with_the_manual_way(tmp_path: Path) -> None:
    info = replace(DATASETS["Rain12"], urls=(UNREACHABLE,))
    start = time.perf_counter()
    with pytest.raises(DownloadError) as excinfo:
        download(info, tmp_path, timeout=5, progress=False, log=quiet)
    assert time.perf_counter() - start < 5
    message = str(excinfo.value)
    assert UNREACHABLE in message and str(tmp_path / "Rain12") in message and "_GT" in message
    assert "yu-li.github.io" in message


def test_http_error_is_reported(server: _Server, tmp_path: Path) -> None:
    info = replace(DATASETS["Rain12"], urls=(server.url + "/missing.zip",))
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(info, tmp_path, progress=False, log=quiet)


def test_manual_sets_fail_at_once_with_instructions(tmp_path: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(ManualDownloadError) as excinfo:
        download("rain100h", tmp_path, log=quiet)
    assert time.perf_counter() - start < 1
    message = str(excinfo.value)
    assert "pan.baidu.com" in message and str(tmp_path / "Rain100H") in message and "rain-NNN" in message
    assert not list(tmp_path.iterdir())


def test_registry() -> None:
    expected = {"Rain12", "Rain100L", "Rain100H", "RainTrainH", "RainTrainL", "Rain1400", "Rain800", "SPA-Data"}
    assert expected | {"SIRR_real"} == set(DATASETS)
    assert get_download("DDN").name == "Rain1400" and get_download("spa_data").name == "SPA-Data"
    with pytest.raises(KeyError, match="Rain100L"):
        get_download("Rain9000")
    for info in DATASETS.values():
        assert info.manual != bool(info.urls), info.name
        assert info.sha256 is None or len(info.sha256) == 64
        assert all(u.startswith(("http://", "https://")) for u in (info.page, *info.urls, *info.mirrors))


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["download", "--list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in DATASETS) and "manual" in listing
    assert main(["download"]) == 2
    assert main(["download", "Rain9000"]) == 2
    assert "unknown data set" in capsys.readouterr().err
    assert main(["download", "Rain100L", "--dest", str(tmp_path)]) == 1
    assert str(tmp_path / "Rain100L") in capsys.readouterr().err
    monkeypatch.setitem(DATASETS, "Rain12", replace(DATASETS["Rain12"], urls=(UNREACHABLE,)))
    assert main(["download", "rain12", "--dest", str(tmp_path), "--timeout", "5"]) == 1
    assert UNREACHABLE in capsys.readouterr().err
