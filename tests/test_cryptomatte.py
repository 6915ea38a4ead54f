"""Cryptomatte encoding against the spec's vectors, its invariants, and the writer's lossy guard."""

from __future__ import annotations

import re
from itertools import pairwise
from pathlib import Path

import cryptomatte_api
import numpy as np
import OpenEXR
import pytest

from workers.core.layers import LayerNamer
from workers.io import cryptomatte
from workers.io.exr import ExrWriteError, read_exr_channels, write_exr_atomic
from workers.pipeline.export import matte_channels

# (name, uint32 after fix-up, float32 id) from the spec and Psyop's cryptomatte_utilities_tests.py
VECTORS = [
    ("torus", 4053562365, -1.54943624832e30),
    ("hello", None, 6.0705627102400005616e-17),
    ("cube", None, -4.08461912519e15),
    ("sphere", None, 2.79018604383e15),
    ("plane", None, 3.66557617593e-11),
    ("mädchen", None, 6.2361298211599995797e25),
    ("равнина", 0x9623511E, -1.31926312124e-25),
]


@pytest.mark.parametrize(("name", "uint", "value"), VECTORS)
def test_spec_hash_vectors(name: str, uint: int | None, value: float) -> None:
    if uint is not None:
        assert cryptomatte.name_hash(name) == uint
    assert cryptomatte.name_id(name) == pytest.approx(value, rel=1e-9)


def test_manifest_hex_and_layer_keys() -> None:
    assert cryptomatte.manifest(["bunny", "default"]) == {"bunny": "13851a76", "default": "42c9679f"}
    assert cryptomatte.layer_key("CryptoObject") == "3ae39a5"
    assert cryptomatte.layer_key("crypto_asset") == "28322e9"
    assert cryptomatte.layer_key("crypto_object") == "f834d0a"
    assert cryptomatte.layer_key("crypto_material") == "bda530a"


@pytest.mark.parametrize(("name", "fixed"), [("obj45", 0x00F34D5C), ("obj520", 0x7F3B01ED)])
def test_exponent_fix_up_keeps_ids_normal_floats(name: str, fixed: int) -> None:
    # The raw hashes (0x00734d5c, 0x7fbb01ed) would be a denormal and a NaN.
    assert cryptomatte.name_hash(name) == fixed
    value = np.float32(cryptomatte.name_id(name))
    assert np.isfinite(value) and value != 0 and abs(value) >= np.finfo(np.float32).tiny


def _discs(n: int, size: int = 64, overlap: bool = True) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    mattes = []
    for i in range(n):
        cx = size * (0.3 + 0.4 * i / max(1, n - 1)) if overlap else size * (0.15 + 0.7 * i / max(1, n - 1))
        radius = size * (0.25 if overlap else 0.08)
        d = np.hypot(xx - cx, yy - size / 2)
        mattes.append(np.clip(radius - d + 0.5, 0, 1))  # soft, one-pixel edge
    return np.stack(mattes).astype(np.float32)


def test_encode_is_a_partition_with_ranks_in_coverage_order() -> None:
    names = [f"obj_{i:02d}" for i in range(8)]  # more objects than ranks
    mattes = _discs(8)
    channels = cryptomatte.encode(mattes, names)
    cov = [channels[f"CryptoObject0{r // 2}.{'GA'[r % 2]}"] for r in range(6)]
    total = np.sum(cov, axis=0)
    assert total.max() <= 1.0 + 1e-6 and min(c.min() for c in cov) >= 0.0
    assert all((a >= b).all() for a, b in pairwise(cov))
    expected = cryptomatte.normalised_coverage(mattes)
    for i, name in enumerate(names):
        decoded = cryptomatte.decode(channels, name)
        # Wherever at most 6 objects overlap, nothing is lost to the rank limit.
        few = (mattes > 0).sum(axis=0) <= 6
        np.testing.assert_allclose(decoded[few], expected[i][few], atol=1e-7)


def test_empty_frame_has_id_zero_everywhere() -> None:
    channels = cryptomatte.encode(np.zeros((2, 8, 8), np.float32), ["a_01", "b_01"])
    assert all((v == 0).all() for v in channels.values())
    assert set(channels) == set(cryptomatte.channel_names())


def _write_crypto(path: Path, mattes: np.ndarray, names: list[str], compression: str = "zip") -> None:
    halves = [m.astype(np.float16) for m in mattes]
    channels = matte_channels(names, halves, (mattes.shape[2], mattes.shape[1]), True)
    write_exr_atomic(path, channels, cryptomatte.header(names), compression)


def test_cryptomatte_api_reads_our_encoding(tmp_path: Path) -> None:
    names = ["person_01", "person_02", "car_01", "mädchen_01"]
    mattes = _discs(4)
    _write_crypto(tmp_path / "a.exr", mattes, names)
    loaded = cryptomatte_api.Cryptomatte.load(str(tmp_path / "a.exr"))
    assert len(loaded) == 1 and loaded[0].num_levels() == 6
    expected = cryptomatte.normalised_coverage(np.stack([m.astype(np.float16).astype(np.float32) for m in mattes]))
    for i, name in enumerate(names):
        assert np.abs(np.asarray(loaded[0].mask(name)) - expected[i]).max() <= 1e-6


@pytest.mark.parametrize("compression", ["pxr24", "b44", "b44a", "dwaa", "dwab", "htj2k32", "htj2k256", "zstd"])
def test_writer_refuses_compressions_that_break_cryptomatte(tmp_path: Path, compression: str) -> None:
    with pytest.raises(ExrWriteError, match=compression):
        _write_crypto(tmp_path / "a.exr", _discs(2), ["a_01", "b_01"], compression)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_lossy_compression_would_destroy_ids(tmp_path: Path) -> None:
    """Why the guard exists: the same channels saved with PXR24 decode to garbage."""
    names = ["a_01", "b_01"]
    mattes = _discs(2, overlap=False)
    _write_crypto(tmp_path / "zip.exr", mattes, names)
    channels, header = read_exr_channels(tmp_path / "zip.exr")
    with OpenEXR.File({**header, "compression": OpenEXR.PXR24_COMPRESSION}, dict(channels)) as exr:
        exr.write(str(tmp_path / "pxr24.exr"))
    good = cryptomatte_api.Cryptomatte.load(str(tmp_path / "zip.exr"))[0]
    bad = cryptomatte_api.Cryptomatte.load(str(tmp_path / "pxr24.exr"))[0]
    for i, name in enumerate(names):
        truth = mattes[i].astype(np.float16).astype(np.float32)
        assert np.abs(np.asarray(good.mask(name)) - truth).max() <= 1e-6
        assert np.abs(np.asarray(bad.mask(name)) - truth).max() == pytest.approx(1.0)


# --- layer names as Nuke sees them --------------------------------------------------------

NUKE_RESERVED = {"rgba", "mask", "forward", "backward", "deep", "disparityL", "disparityR", "depth", "other"}
NUKE_COMPONENTS = {"R": "red", "r": "red", "Red": "red", "RED": "red", "G": "green", "g": "green",
                   "Green": "green", "GREEN": "green", "B": "blue", "b": "blue", "Blue": "blue",
                   "BLUE": "blue", "A": "alpha", "a": "alpha", "Alpha": "alpha", "ALPHA": "alpha"}  # fmt: skip


def nuke_channel_name(exr_name: str) -> tuple[str, str]:
    """Foundry's ExrChannelNameToNuke rules: (layer, channel) as Nuke will show them."""
    parts = [re.sub(r"[^A-Za-z0-9]", "_", re.sub(r"^\d+", "", part)) for part in exr_name.split(".")]
    channel = NUKE_COMPONENTS.get(exr_name.split(".")[-1], parts[-1])
    if len(parts) == 1:
        return ("rgba", channel) if channel in ("red", "green", "blue", "alpha") else ("other", channel)
    layer = "_".join(parts[:-1])
    return ("rgba" if layer == "Ci" else layer), channel


ADVERSARIAL = ["01_a", "02_a", "a.b", "a_b", "mask", "rgba", "depth", "mädchen", "Ci", "car", "car", "person 2", "🙂"]


def test_layer_names_survive_nukes_channel_mapping() -> None:
    namer = LayerNamer()
    names = [namer.name(label) for label in ADVERSARIAL]
    assert all(re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", n) for n in names)
    mapped = [nuke_channel_name(f"{n}.A") for n in names]
    layers = [layer for layer, _ in mapped]
    assert len(set(layers)) == len(names)  # unique after mapping
    assert not set(layers) & NUKE_RESERVED and "other" not in layers
    assert all(channel == "alpha" for _, channel in mapped)
    crypto_layers = {nuke_channel_name(c)[0] for c in cryptomatte.channel_names()}
    assert crypto_layers == {"CryptoObject00", "CryptoObject01", "CryptoObject02"}
    assert not crypto_layers & set(layers)
