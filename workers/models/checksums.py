"""sha256 records for the models directory (``checksums.json``)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from workers.io.atomic import write_json_atomic

log = logging.getLogger(__name__)
RECORD = "checksums.json"


class ChecksumError(RuntimeError):
    pass


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_record(models_dir: Path) -> dict[str, str]:
    path = models_dir / RECORD
    return json.loads(path.read_text()) if path.exists() else {}


def write_record(models_dir: Path, name: str, digest: str) -> None:
    record = read_record(models_dir) | {name: digest}
    write_json_atomic(models_dir / RECORD, record, sort_keys=True)


def verify_recorded(models_dir: Path, name: str) -> str:
    """The file's sha256, checked against the record made when it was downloaded."""
    path = models_dir / name
    if not path.exists():
        raise ChecksumError(f"{path} is missing; run `mattefarm models download`")
    digest = sha256_file(path)
    expected = read_record(models_dir).get(name)
    if expected is None:
        log.warning("%s has no recorded sha256 (not fetched by `mattefarm models download`)", name)
    elif digest != expected:
        raise ChecksumError(
            f"{path} does not match its recorded sha256 (corrupt or replaced); delete it and run "
            "`mattefarm models download` again"
        )
    return digest
