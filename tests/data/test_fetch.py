"""Tests of pseudocell.data.fetch against a local HTTP server (no external network)."""
from __future__ import annotations

import functools
import hashlib
import http.server
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import BRIGHTFIELD as SHARED
from conftest import require_data
from pseudocell.data import fetch
from pseudocell.errors import DataUnavailableError

CONTENT = {
    "001cells.png": b"\x89PNG fake image one" * 50,
    "001dots.png": b"\x89PNG fake dots one" * 30,
    "002cells.png": b"\x89PNG fake image two" * 70,
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Server:
    """A running local file server and the paths it was asked for."""

    url: str
    root: Path
    requests: list[str] = field(default_factory=list)


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves ``directory``, records request paths, lies about length on /truncated.png."""

    def __init__(self, *args, requests: list[str], **kwargs) -> None:
        self._requests = requests
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self._requests.append(self.path)
        if self.path.endswith("/truncated.png"):
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"only ten b")
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep proxy settings of the environment away from the loopback server."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "served"
    root.mkdir()
    for name, data in CONTENT.items():
        (root / name).write_bytes(data)
    requests: list[str] = []
    handler = functools.partial(_Handler, directory=str(root), requests=requests)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/"
        yield Server(url=url, root=root, requests=requests)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _files() -> dict[str, str]:
    return {name: _sha(data) for name, data in CONTENT.items()}


def _cache_folder(cache: Path) -> Path:
    return cache / f"dwaithe-brightfield-cells-{fetch.BRIGHTFIELD_COMMIT[:8]}"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".part")


def test_download_verifies_and_writes_files(server: Server, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "cache"
    with caplog.at_level(logging.INFO, logger=fetch.__name__):
        folder = fetch.download_brightfield(cache, base_url=server.url, files=_files(), timeout=5)
    assert folder == _cache_folder(cache)
    for name, data in CONTENT.items():
        assert (folder / name).read_bytes() == data
    assert _leftovers(folder) == []
    assert sorted(server.requests) == sorted(f"/{name}" for name in CONTENT)
    assert "file 1/3 001cells.png" in caplog.text
    assert "file 3/3 002cells.png" in caplog.text


def test_base_url_without_trailing_slash(server: Server, tmp_path: Path) -> None:
    folder = fetch.download_brightfield(tmp_path / "c", base_url=server.url.rstrip("/"),
                                        files=_files(), timeout=5)
    assert sorted(p.name for p in folder.iterdir()) == sorted(CONTENT)


def test_second_call_does_not_redownload(server: Server, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    fetch.download_brightfield(cache, base_url=server.url, files=_files(), timeout=5)
    assert len(server.requests) == len(CONTENT)
    folder = fetch.download_brightfield(cache, base_url=server.url, files=_files(), timeout=5)
    assert len(server.requests) == len(CONTENT)
    assert (folder / "001dots.png").read_bytes() == CONTENT["001dots.png"]


def test_corrupt_cached_file_is_replaced(server: Server, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    folder = fetch.download_brightfield(cache, base_url=server.url, files=_files(), timeout=5)
    (folder / "001dots.png").write_bytes(b"corrupted")
    server.requests.clear()
    fetch.download_brightfield(cache, base_url=server.url, files=_files(), timeout=5)
    assert server.requests == ["/001dots.png"]
    assert (folder / "001dots.png").read_bytes() == CONTENT["001dots.png"]


def test_checksum_mismatch_raises_and_leaves_no_file(server: Server, tmp_path: Path) -> None:
    (server.root / "bad.png").write_bytes(b"tampered content")
    expected = _sha(b"original content")
    cache = tmp_path / "cache"
    with pytest.raises(DataUnavailableError) as info:
        fetch.download_brightfield(
            cache, base_url=server.url, files={"bad.png": expected}, timeout=5
        )
    message = str(info.value)
    assert "bad.png" in message
    assert expected in message
    assert _sha(b"tampered content") in message
    folder = _cache_folder(cache)
    assert not (folder / "bad.png").exists()
    assert _leftovers(folder) == []


def test_mismatch_keeps_earlier_verified_files(server: Server, tmp_path: Path) -> None:
    (server.root / "zz_bad.png").write_bytes(b"tampered")
    files = {"001cells.png": _sha(CONTENT["001cells.png"]), "zz_bad.png": _sha(b"other")}
    with pytest.raises(DataUnavailableError, match="zz_bad.png"):
        fetch.download_brightfield(tmp_path / "cache", base_url=server.url, files=files, timeout=5)
    folder = _cache_folder(tmp_path / "cache")
    assert sorted(p.name for p in folder.iterdir()) == ["001cells.png"]


def test_closed_port_raises_with_url(tmp_path: Path) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    base = f"http://127.0.0.1:{port}/"
    with pytest.raises(DataUnavailableError) as info:
        fetch.download_brightfield(tmp_path / "cache", base_url=base, files=_files(), timeout=5)
    message = str(info.value)
    assert f"{base}001cells.png" in message
    assert "PSEUDOCELL_DATA_DIR" in message
    assert "network access" in message
    assert not (_cache_folder(tmp_path / "cache") / "001cells.png").exists()


def test_http_404_raises(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError) as info:
        fetch.download_brightfield(tmp_path / "cache", base_url=server.url,
                                   files={"missing.png": _sha(b"x")}, timeout=5)
    message = str(info.value)
    assert "404" in message
    assert f"{server.url}missing.png" in message
    folder = _cache_folder(tmp_path / "cache")
    assert not (folder / "missing.png").exists()
    assert _leftovers(folder) == []


def test_truncated_transfer_raises_and_leaves_no_file(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError, match="truncated.png"):
        fetch.download_brightfield(tmp_path / "cache", base_url=server.url,
                                   files={"truncated.png": _sha(b"x" * 1000)}, timeout=5)
    folder = _cache_folder(tmp_path / "cache")
    assert not (folder / "truncated.png").exists()
    assert _leftovers(folder) == []


def test_rejects_path_like_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="plain file name"):
        fetch.download_brightfield(tmp_path / "cache", base_url="http://127.0.0.1:1/",
                                   files={"../evil.png": _sha(b"x")})


def test_sha_table_has_100_sorted_entries() -> None:
    table = fetch.BRIGHTFIELD_SHA256
    assert len(table) == 100
    assert list(table) == sorted(table)
    expected = {f"{i:03d}{kind}.png" for i in range(1, 51) for kind in ("cells", "dots")}
    assert set(table) == expected
    assert all(len(sha) == 64 and set(sha) <= set("0123456789abcdef") for sha in table.values())
    assert fetch.BRIGHTFIELD_COMMIT in fetch.BRIGHTFIELD_BASE_URL


def test_sha_table_matches_shared_files() -> None:
    require_data(SHARED)
    for name, sha in fetch.BRIGHTFIELD_SHA256.items():
        assert _sha((SHARED / name).read_bytes()) == sha, name


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PSEUDOCELL_CACHE", str(tmp_path / "pc"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fetch.default_cache_dir() == tmp_path / "pc"
    monkeypatch.delenv("PSEUDOCELL_CACHE")
    assert fetch.default_cache_dir() == tmp_path / "xdg" / "pseudocell"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert fetch.default_cache_dir() == Path.home() / ".cache" / "pseudocell"


def _fake_shared(root: Path, names: list[str]) -> Path:
    folder = root / "dwaithe-brightfield-cells"
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


def test_locate_uses_data_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = _fake_shared(tmp_path / "data", list(fetch.BRIGHTFIELD_SHA256))
    monkeypatch.setenv("PSEUDOCELL_DATA_DIR", str(tmp_path / "data"))
    assert fetch.find_shared_brightfield() == folder
    assert fetch.locate_brightfield(download=False, cache_dir=tmp_path / "cache") == folder
    assert not (tmp_path / "cache").exists()


def test_incomplete_data_dir_is_ignored(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    names = list(fetch.BRIGHTFIELD_SHA256)[:-1]
    folder = _fake_shared(tmp_path / "data", names)
    monkeypatch.setenv("PSEUDOCELL_DATA_DIR", str(tmp_path / "data"))
    assert fetch.find_shared_brightfield() != folder


def test_locate_without_download_or_cache_raises(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.setattr(fetch, "find_shared_brightfield", lambda: None)
    with pytest.raises(DataUnavailableError, match="PSEUDOCELL_DATA_DIR"):
        fetch.locate_brightfield(download=False, cache_dir=tmp_path / "cache")


def test_locate_downloads_from_mirror(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Full flow against a loopback mirror of the real files: download, then cache hit."""
    monkeypatch.setattr(fetch, "find_shared_brightfield", lambda: None)
    requests: list[str] = []
    handler = functools.partial(_Handler, directory=str(SHARED), requests=requests)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}/"
        cache = tmp_path / "cache"
        folder = fetch.locate_brightfield(cache_dir=cache, base_url=base)
        assert len(requests) == 100
        assert fetch.locate_brightfield(download=False, cache_dir=cache) == folder
        assert len(requests) == 100
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
