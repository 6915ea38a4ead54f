"""Fetch model files with resume and sha256 verification.

Downloads go to ``<file>.part`` and are resumed with an HTTP Range request; a file is renamed
into place only after its digest matches the pinned one, or the one the server publishes
(``X-Linked-Etag`` on Hugging Face LFS files). Small text files with neither are recorded on
first download. A mirror URL can replace the registry's host for studios with their own cache.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from farm_config.model_registry import HF, ModelFile
from workers.models.checksums import ChecksumError, read_record, sha256_file, write_record

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
TRUST_ON_FIRST_USE_BYTES = 4 << 20

Progress = Callable[[int, int | None], None]  # (bytes so far, total or None)


class DownloadError(RuntimeError):
    """A download that did not finish; ``resumable`` says whether running again continues it."""

    def __init__(self, message: str, resumable: bool) -> None:
        super().__init__(message)
        self.resumable = resumable


@dataclass(frozen=True)
class DownloadResult:
    name: str
    path: Path
    sha256: str
    verified_by: str  # "pinned" | "server" | "recorded" | "first-download"
    skipped: bool = False


def mirrored(url: str, mirror: str | None) -> str:
    return mirror.rstrip("/") + url[len(HF) :] if mirror and url.startswith(HF) else url


def _published_sha256(responses: list[httpx.Response]) -> str | None:
    for response in responses:
        for header in ("x-linked-etag", "x-checksum-sha256"):
            value = response.headers.get(header, "").strip('"').lower()
            if _SHA256.match(value):
                return value
    return None


def download_file(
    file: ModelFile,
    models_dir: Path,
    *,
    mirror: str | None = None,
    progress: Progress | None = None,
    client: httpx.Client | None = None,
) -> DownloadResult:
    dest = models_dir / file.name
    recorded = read_record(models_dir).get(file.name)
    if dest.exists() and recorded and (file.sha256 in (None, recorded)):
        return DownloadResult(file.name, dest, recorded, "recorded", skipped=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    own_client = client is None
    client = client or httpx.Client(follow_redirects=True, timeout=httpx.Timeout(60.0, connect=15.0))
    url = mirrored(file.url, mirror)
    try:
        with client.stream("GET", url, headers=headers) as response:
            if response.status_code == 416:  # the .part is already whole
                published = _published_sha256([*response.history, response])
            else:
                if response.status_code == 200 and offset:
                    offset = 0  # the server ignored the Range: start again
                elif response.status_code not in (200, 206):
                    raise DownloadError(f"{url} answered HTTP {response.status_code}", resumable=False)
                published = _published_sha256([*response.history, response])
                length = response.headers.get("content-length")
                total = offset + int(length) if length else None
                with part.open("ab" if offset else "wb") as fh:
                    done = offset
                    for chunk in response.iter_bytes():  # as they arrive: a cut keeps every byte
                        fh.write(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, total)
                if total is not None and done < total:
                    raise DownloadError(f"{file.name}: connection closed at {done}/{total} bytes", True)
    except httpx.TransportError as exc:
        raise DownloadError(f"{file.name}: download interrupted ({exc}); run again to resume", True) from exc
    finally:
        if own_client:
            client.close()

    digest = sha256_file(part)
    expected, verified_by = file.sha256, "pinned"
    if expected is None and published:
        expected, verified_by = published, "server"
    if expected is None:
        if part.stat().st_size > TRUST_ON_FIRST_USE_BYTES:
            part.unlink()
            raise ChecksumError(f"{file.name}: no sha256 to check it against; refusing a large unverified file")
        verified_by = "first-download"
    elif digest != expected:
        part.unlink()
        raise ChecksumError(
            f"{file.name}: sha256 {digest[:12]}… does not match the expected {expected[:12]}…; "
            "the partial file was removed, run again to fetch it afresh"
        )
    os.replace(part, dest)
    write_record(models_dir, file.name, digest)
    return DownloadResult(file.name, dest, digest, verified_by)
