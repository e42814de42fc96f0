"""Signed checkpoints (checkpoint.signing): what a restore accepts and refuses.

On the format alone (no CRIU, no device): a checkpoint directory written as
a dump writes it, signed with one key, then checked as a restore checks it.
The end-to-end path (``cedana dump --signing-key``, ``restore``) is in
tests/test_cr_durability.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_checkpoint_format import BASE, FakeDevice, crc, dump

from cedana_gpu.checkpoint import (
    SHARD_DIR,
    load_manifest,
    save_manifest,
    shard_name,
    signing,
    verify_files,
)
from cedana_gpu.checkpoint.manifest import manifest_digest
from cedana_gpu.errors import CheckpointError, CorruptCheckpoint


def key_file(tmp_path: Path, name: str, secret: bytes = b"k" * 32, mode: int = 0o600) -> Path:
    p = tmp_path / name
    p.write_bytes(secret + b"\n")
    p.chmod(mode)
    return p


def signed_checkpoint(tmp_path: Path, key: signing.SigningKey, compression: str = "none") -> Path:
    dev = FakeDevice()
    regions = [(BASE + 0x1000, 5000), (BASE + 0x4000, 5000), (BASE + 0x9000, 300)]
    for a, s in regions:
        dev.fill(a, s)
    ck = tmp_path / "ck"
    m = dump(ck, dev, regions, compression, 2)
    shards = [f"{SHARD_DIR}/{shard_name(i, compression)}" for i in range(2)]
    signing.sign(m, ck, shards, key)
    save_manifest(m, ck)
    return ck


@pytest.fixture
def key(tmp_path: Path) -> signing.SigningKey:
    return signing.load_key(key_file(tmp_path, "key"))


def test_a_signed_checkpoint_verifies_with_its_key(tmp_path: Path, key: signing.SigningKey) -> None:
    ck = signed_checkpoint(tmp_path, key, "lz4")
    m = load_manifest(ck)
    assert m.signature is not None and m.signature["key_id"] == key.key_id
    assert all(f.sha256 for f in m.files) and len(m.shards) == 2
    assert "verified" in signing.check(ck, m, key, allow_unsigned=False)
    # Without a key nothing can be verified, and the restore says so.
    assert "not verified" in signing.check(ck, m, None, allow_unsigned=False)


def test_another_key_is_refused(tmp_path: Path, key: signing.SigningKey) -> None:
    ck = signed_checkpoint(tmp_path, key)
    other = signing.load_key(key_file(tmp_path, "other", b"o" * 32))
    with pytest.raises(CorruptCheckpoint, match="signed with another key"):
        signing.check(ck, load_manifest(ck), other, allow_unsigned=False)


def test_a_forged_manifest_is_refused(tmp_path: Path, key: signing.SigningKey) -> None:
    """Whoever edits the manifest can recompute its checksum, not its signature."""
    ck = signed_checkpoint(tmp_path, key)
    path = ck / "manifest.json"
    doc = json.loads(path.read_text())
    doc["job"]["cmd"] = ["sh", "-c", "evil"]
    doc["manifest_checksum"] = manifest_digest(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(CorruptCheckpoint, match="signature does not verify"):
        signing.check(ck, load_manifest(ck), key, allow_unsigned=False)


def test_a_file_with_a_forged_crc_is_refused(tmp_path: Path, key: signing.SigningKey) -> None:
    """A CRIU image replaced by one with the same size and CRC32C passes the
    unsigned checks (a CRC can be forged at will); its SHA-256 cannot."""
    ck = signed_checkpoint(tmp_path, key)
    m = load_manifest(ck)
    img = ck / "criu" / "pages-1.img"
    data = bytearray(img.read_bytes())
    data[10] ^= 0xFF
    img.write_bytes(bytes(data))
    # The forgery: the file's record (size, CRC) matches the new bytes, so
    # every unsigned check passes.
    for rec in m.files:
        if rec.path == "criu/pages-1.img":
            rec.checksum = crc(memoryview(data))
    verify_files(ck, m, crc)
    with pytest.raises(
        CorruptCheckpoint, match=r"criu/pages-1\.img does not match its signed SHA-256"
    ):
        signing.check(ck, m, key, allow_unsigned=False)


def test_a_changed_shard_is_refused(tmp_path: Path, key: signing.SigningKey) -> None:
    ck = signed_checkpoint(tmp_path, key)
    shard = ck / SHARD_DIR / shard_name(1, "none")
    data = bytearray(shard.read_bytes())
    data[0] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpoint, match="img-1 does not match its signed SHA-256"):
        signing.check(ck, load_manifest(ck), key, allow_unsigned=False)


def test_unsigned_is_refused_unless_allowed(tmp_path: Path, key: signing.SigningKey) -> None:
    dev = FakeDevice()
    dev.fill(BASE + 0x1000, 100)
    ck = tmp_path / "ck"
    dump(ck, dev, [(BASE + 0x1000, 100)], "none", 1)
    m = load_manifest(ck)
    with pytest.raises(CheckpointError, match="not signed and a signing key is configured"):
        signing.check(ck, m, key, allow_unsigned=False)
    assert "--allow-unsigned" in signing.check(ck, m, key, allow_unsigned=True)
    assert signing.check(ck, m, None, allow_unsigned=False) == "unsigned"


def test_a_signed_manifest_without_digests_is_refused(
    tmp_path: Path, key: signing.SigningKey
) -> None:
    """Dropping the SHA-256s (and re-signing is impossible) cannot downgrade to CRCs."""
    ck = signed_checkpoint(tmp_path, key)
    m = load_manifest(ck)
    m.files[0].sha256 = None
    with pytest.raises(CorruptCheckpoint, match="SHA-256 for every file"):
        signing.check(ck, m, key, allow_unsigned=False)


@pytest.mark.parametrize(
    ("secret", "mode", "message"),
    [
        (b"short", 0o600, "at least 16 are needed"),
        (b"k" * 32, 0o644, "readable by other users"),
    ],
)
def test_bad_keys_are_refused(tmp_path: Path, secret: bytes, mode: int, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        signing.load_key(key_file(tmp_path, "k", secret, mode))
    with pytest.raises(CheckpointError, match="cannot read the signing key"):
        signing.load_key(tmp_path / "missing")


def test_the_environment_names_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = key_file(tmp_path, "k")
    monkeypatch.setenv(signing.KEY_ENV, str(path))
    found = signing.configured_key()
    assert found is not None and found.path == path
    monkeypatch.delenv(signing.KEY_ENV)
    assert signing.configured_key() is None
    assert os.environ.get(signing.KEY_ENV) is None
