"""`mattefarm models download` against a loopback HTTP server: good, corrupt and interrupted
downloads, resume with Range, digests from the server, and the CLI end to end."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from farm_config.model_registry import HF, MODELS, ModelFile
from workers.models.checksums import ChecksumError, read_record, verify_recorded
from workers.models.download import TRUST_ON_FIRST_USE_BYTES, DownloadError, download_file


def payload(path: str, size: int = 300_000) -> bytes:
    seed = hashlib.sha256(path.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


class Server:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None]] = []
        self.cut_once: set[str] = set()  # paths whose first response stops half-way
        self.corrupt: set[str] = set()
        handler = self._handler()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append((self.path, self.headers.get("Range")))
                small = self.path.endswith((".json", ".txt"))
                big_unverified = "unverified" in self.path
                body = payload(
                    self.path, 1000 if small else (TRUST_ON_FIRST_USE_BYTES + 10 if big_unverified else 300_000)
                )
                digest = hashlib.sha256(body).hexdigest()
                if self.path in server.corrupt:
                    body = body[:-1] + bytes([body[-1] ^ 0xFF])
                start = 0
                if rng := self.headers.get("Range"):
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                self.send_response(206 if start else 200)
                if not small and not big_unverified:
                    self.send_header("X-Linked-Etag", f'"{digest}"')
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if self.path in server.cut_once:
                    server.cut_once.discard(self.path)
                    self.wfile.write(body[start : len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        return Handler


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def model_file(name: str, sha256: str | None = None) -> ModelFile:
    return ModelFile(name, f"{HF}/org/repo/resolve/main/{name}", sha256)


def test_a_good_download_is_verified_by_the_server_digest(server: Server, tmp_path: Path) -> None:
    result = download_file(model_file("ckpt/good.pt"), tmp_path, mirror=server.url)
    assert result.verified_by == "server" and not result.skipped
    assert (tmp_path / "ckpt/good.pt").read_bytes() == payload("/org/repo/resolve/main/ckpt/good.pt")
    assert read_record(tmp_path)["ckpt/good.pt"] == result.sha256
    again = download_file(model_file("ckpt/good.pt"), tmp_path, mirror=server.url)
    assert again.skipped and len(server.requests) == 1


def test_a_pinned_digest_wins_and_a_mismatch_is_refused(server: Server, tmp_path: Path) -> None:
    with pytest.raises(ChecksumError, match="does not match"):
        download_file(model_file("pinned.pt", sha256="0" * 64), tmp_path, mirror=server.url)
    assert not (tmp_path / "pinned.pt").exists() and not (tmp_path / "pinned.pt.part").exists()


def test_a_corrupt_file_is_removed_and_never_installed(server: Server, tmp_path: Path) -> None:
    server.corrupt.add("/org/repo/resolve/main/bad.pt")
    with pytest.raises(ChecksumError, match="run again"):
        download_file(model_file("bad.pt"), tmp_path, mirror=server.url)
    assert not list(tmp_path.glob("bad.pt*")) and "bad.pt" not in read_record(tmp_path)


def test_an_interrupted_download_resumes_with_a_range_request(server: Server, tmp_path: Path) -> None:
    path = "/org/repo/resolve/main/flaky.pt"
    server.cut_once.add(path)
    with pytest.raises(DownloadError) as interrupted:
        download_file(model_file("flaky.pt"), tmp_path, mirror=server.url)
    assert interrupted.value.resumable
    part = tmp_path / "flaky.pt.part"
    assert 0 < part.stat().st_size < 300_000 and not (tmp_path / "flaky.pt").exists()
    result = download_file(model_file("flaky.pt"), tmp_path, mirror=server.url)
    assert result.verified_by == "server"
    assert (tmp_path / "flaky.pt").read_bytes() == payload(path)
    assert server.requests[-1] == (path, f"bytes={150_000}-")


def test_small_text_files_are_recorded_large_unverifiable_ones_refused(server: Server, tmp_path: Path) -> None:
    result = download_file(model_file("bert/config.json"), tmp_path, mirror=server.url)
    assert result.verified_by == "first-download"
    with pytest.raises(ChecksumError, match="refusing a large unverified file"):
        download_file(model_file("unverified.bin"), tmp_path, mirror=server.url)


def test_an_unreachable_host_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="run again to resume"):
        download_file(model_file("x.pt"), tmp_path, mirror="http://127.0.0.1:9")


def test_the_cli_fetches_a_worker_set_and_loading_checks_the_record(server: Server, tmp_path: Path) -> None:
    server.cut_once.add("/facebook/sam2.1-hiera-tiny/resolve/main/sam2.1_hiera_tiny.pt")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "models",
            "download",
            "--sam2-size",
            "tiny",
            "--mirror",
            server.url,
            "--models-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    expected = [
        f.name for key in ("sam2.1-tiny", "groundingdino-swint", "bert-base-uncased") for f in MODELS[key].files
    ]
    assert sorted(read_record(tmp_path)) == sorted(expected)
    assert verify_recorded(tmp_path, "sam2/sam2.1_hiera_tiny.pt") == read_record(tmp_path)["sam2/sam2.1_hiera_tiny.pt"]
    (tmp_path / "sam2/sam2.1_hiera_tiny.pt").write_bytes(b"tampered")
    with pytest.raises(ChecksumError, match="does not match its recorded sha256"):
        verify_recorded(tmp_path, "sam2/sam2.1_hiera_tiny.pt")
