"""The next free version folder: above what the farm recorded and what is on disk, never shared,
and found without listing a shot's folder on every submit."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from services.farm import versions as versions_module
from services.farm.versions import VersionFolders


def test_versions_go_above_the_record_and_the_folders_on_disk(tmp_path: Path) -> None:
    folders = VersionFolders()
    assert folders.make(tmp_path, 0)[0] == 1
    assert folders.make(tmp_path, 4)[0] == 5  # the store remembers v004 (its folder was removed)
    (tmp_path / "v012").mkdir()  # an artist's own folder: the farm must not go below it
    assert folders.make(tmp_path, 5)[0] == 13
    (tmp_path / "v2000").mkdir()
    (tmp_path / "notes").mkdir()
    assert folders.make(tmp_path, 13)[0] == 2001


def test_concurrent_submissions_never_share_a_version(tmp_path: Path) -> None:
    folders, made = VersionFolders(), []
    lock = threading.Lock()

    def submit() -> None:
        for _ in range(25):
            version, _ = folders.make(tmp_path, 0)
            with lock:
                made.append(version)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(made) == list(range(1, 201))


@pytest.fixture
def listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every listing of a folder the version rule makes, in order."""
    if os.stat(tmp_path).st_nlink < 2:
        pytest.skip("this filesystem does not count subfolders in a folder's links")
    listings: list[object] = []
    real = os.scandir

    def scandir(path: Path) -> object:
        listings.append(path)
        return real(path)

    monkeypatch.setattr(versions_module.os, "scandir", scandir)
    return listings


def test_the_folder_is_listed_only_when_something_else_changed_it(tmp_path: Path, listed: list[object]) -> None:
    folders = VersionFolders()
    for _ in range(20):
        folders.make(tmp_path, 0)
    assert len(listed) == 1  # the first submit lists; its own mkdirs keep the cache true
    (tmp_path / "v050").mkdir()  # another process or tool
    assert folders.make(tmp_path, 0)[0] == 51 and len(listed) == 2


def test_two_api_processes_taking_turns_check_the_new_folders_by_name(tmp_path: Path, listed: list[object]) -> None:
    first, second = VersionFolders(), VersionFolders()  # each API process keeps its own
    made = [folders.make(tmp_path, 0)[0] for _ in range(15) for folders in (first, second)]
    assert made == list(range(1, 31))
    assert len(listed) == 2  # one listing each; after that, the other's folders are checked by name
    (tmp_path / "v040").mkdir()  # a gap above: not the next names, so the folder is listed
    assert first.make(tmp_path, 0)[0] == 41 and len(listed) == 3
    (tmp_path / "v041").rmdir()  # a removal: listed again, and the highest left counts
    assert second.make(tmp_path, 0)[0] == 41 and len(listed) == 4
