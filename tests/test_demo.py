"""The README's main-job command: a synthetic shot end to end on the embedded farm, read back
with OpenEXR's own ``exrheader``."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tests.harness import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_demo_runs_a_shot_on_the_embedded_farm(tmp_path: Path) -> None:
    exrheader = shutil.which("exrheader")
    if exrheader is None:
        if IN_CI:
            pytest.fail("exrheader is missing: scripts/install.sh installs Debian's openexr")
        pytest.skip("exrheader (Debian openexr) is not installed")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "demo",
            "--dir",
            str(tmp_path),
            "--frames",
            "6",
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "succeeded" in result.stdout

    frames = sorted((tmp_path / "renders" / "demo010" / "roto" / "v001").glob("demo010_roto_v001.*.exr"))
    assert [f.name.split(".")[1] for f in frames] == [str(n) for n in range(1001, 1007)]
    manifest = (tmp_path / "renders" / "demo010" / "roto" / "v001" / "demo010_roto_v001.json").read_text()
    layer_names = re.findall(r'"name": "([a-z]+_\d\d)"', manifest)
    assert layer_names

    for frame in frames:
        header = subprocess.run([exrheader, str(frame)], capture_output=True, text=True, check=True).stdout
        channels = set(re.findall(r"^\s+(\S+), 16-bit floating-point", header, re.MULTILINE))
        assert channels == {"A"} | {f"{name}.A" for name in layer_names}
        assert "compression (type compression): zip" in header
        assert "dataWindow (type box2i): (0 0) - (639 359)" in header  # the plate's 640×360
    assert not (tmp_path / ".mattefarm" / "broker" / "messages").exists() or not any(
        (tmp_path / ".mattefarm" / "broker" / "messages").iterdir()
    )
