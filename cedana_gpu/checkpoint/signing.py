"""Signed checkpoints: HMAC-SHA256 over the manifest, SHA-256 of every file.

A checkpoint is code that root runs (CRIU restores it as root) and it
travels through shared storage when a job migrates, so a site can require
that only checkpoints its own cedana made are restored. With a key
configured (a file, named by ``--signing-key`` or ``CEDANA_CHECKPOINT_SIGNING_KEY``):

- a dump lists the SHA-256 of every file and every shard in the manifest (the
  CRC32C checksums guard against accidents only: a CRC can be forged at
  will) and signs the manifest: ``signature`` holds HMAC-SHA256(key,
  ``cedana-gpu-manifest`` NUL ``content_digest``), where ``content_digest``
  is the SHA-256 of the manifest's canonical JSON without its checksum and
  signature;
- a restore refuses a checkpoint whose signature does not verify, and an
  unsigned one unless told ``--allow-unsigned``; once the signature holds it
  checks every file's and shard's SHA-256 before anything starts.

HMAC needs no library beyond Python's own (``hmac``, ``hashlib``: OpenSSL),
and a shared secret fits a cluster whose nodes dump and restore each other's
jobs. Without a key nothing is signed or checked (a signed checkpoint then
restores like any other).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cedana_gpu.checkpoint.manifest import FileRecord, Manifest, content_digest
from cedana_gpu.errors import CheckpointError, CorruptCheckpoint

KEY_ENV = "CEDANA_CHECKPOINT_SIGNING_KEY"
"""Names the key file (the config file's ``checkpoint.signing_key``)."""

ALGORITHM = "hmac-sha256"
MIN_KEY_BYTES = 16
DOMAIN = b"cedana-gpu-manifest\0"
"""Prefixed to what is signed, so the key signs nothing else by accident."""
HASH_WORKERS = 4


@dataclass(frozen=True)
class SigningKey:
    secret: bytes
    path: Path

    @property
    def key_id(self) -> str:
        """Names the key without revealing it (first 16 hex digits of its SHA-256)."""
        return hashlib.sha256(self.secret).hexdigest()[:16]


def load_key(path: str | os.PathLike[str]) -> SigningKey:
    """Read a key file: at least 16 bytes, readable by its owner only."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            st = os.fstat(f.fileno())
            secret = f.read().strip()
    except OSError as e:
        raise CheckpointError(f"cannot read the signing key {p}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"the signing key {p} is not a regular file")
    if st.st_mode & 0o077:
        raise CheckpointError(
            f"the signing key {p} is readable by other users (mode "
            f"{stat.S_IMODE(st.st_mode):o}): chmod 600 it"
        )
    if len(secret) < MIN_KEY_BYTES:
        raise CheckpointError(
            f"the signing key {p} has {len(secret)} bytes, at least {MIN_KEY_BYTES} are needed "
            "(e.g. head -c 32 /dev/urandom | base64 > KEYFILE)"
        )
    return SigningKey(secret, p)


def configured_key(path: str | os.PathLike[str] | None = None) -> SigningKey | None:
    """The key named by ``path`` or else by ``CEDANA_CHECKPOINT_SIGNING_KEY``; None if neither."""
    name = path if path is not None else os.environ.get(KEY_ENV) or None
    return load_key(name) if name else None


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _map(fn: Callable[[Path], str], paths: Iterable[Path]) -> list[str]:
    # hashlib releases the GIL on large buffers: shards hash in parallel.
    with ThreadPoolExecutor(max_workers=HASH_WORKERS) as pool:
        return list(pool.map(fn, paths))


def sign(manifest: Manifest, directory: Path, shard_paths: list[str], key: SigningKey) -> None:
    """Add every file's and shard's SHA-256 to ``manifest`` and sign it.

    ``shard_paths``: the shard files, relative to ``directory``."""
    try:
        digests = _map(sha256_file, [directory / f.path for f in manifest.files])
        shard_digests = _map(sha256_file, [directory / p for p in shard_paths])
        shard_sizes = [os.stat(directory / p).st_size for p in shard_paths]
    except OSError as e:
        raise CheckpointError(f"cannot read {e.filename} to sign it: {e.strerror}") from None
    for rec, digest in zip(manifest.files, digests, strict=True):
        rec.sha256 = digest
    manifest.shards = [
        FileRecord(path, size, 0, digest)
        for path, size, digest in zip(shard_paths, shard_sizes, shard_digests, strict=True)
    ]
    manifest.signature = None
    doc = manifest.to_json()
    manifest.signature = {
        "algorithm": ALGORITHM,
        "key_id": key.key_id,
        "value": _mac(key, content_digest(doc)),
    }


def _mac(key: SigningKey, digest: bytes) -> str:
    return hmac.new(key.secret, DOMAIN + digest, hashlib.sha256).hexdigest()


def check(
    directory: Path, manifest: Manifest, key: SigningKey | None, *, allow_unsigned: bool
) -> str:
    """Enforce the signing policy on a loaded checkpoint; what was found, in words.

    ``manifest`` must come from ``load_manifest`` (its ``digest`` is that of
    the document as read). Raises ``CheckpointError`` (unsigned where a
    signature is required) or ``CorruptCheckpoint`` (a signature that does
    not verify, a file that does not match its signed digest)."""
    where = str(directory)
    sig = manifest.signature
    if key is None:
        return "signed (not verified: no signing key configured)" if sig else "unsigned"
    if sig is None:
        if allow_unsigned:
            return "unsigned (accepted: --allow-unsigned)"
        raise CheckpointError(
            f"{where} is not signed and a signing key is configured ({key.path}): "
            "refusing it (restore with --allow-unsigned to accept unsigned checkpoints)"
        )
    if sig.get("key_id") != key.key_id:
        raise CorruptCheckpoint(
            f"{where} is signed with another key (key id {sig.get('key_id')}, yours is "
            f"{key.key_id}): refusing it"
        )
    if not manifest.digest or not hmac.compare_digest(
        str(sig.get("value")), _mac(key, manifest.digest)
    ):
        raise CorruptCheckpoint(
            f"{where}: the signature does not verify: the manifest was changed after it was "
            "signed; refusing it"
        )
    _check_digests(directory, manifest)
    return f"signed, verified (key id {key.key_id})"


def _check_digests(directory: Path, manifest: Manifest) -> None:
    from cedana_gpu.checkpoint.archive import safe_name

    records = list(manifest.files) + list(manifest.shards)
    unlisted = any(r.sha256 is None for r in manifest.files)
    if unlisted or (not manifest.shards and manifest.regions):
        raise CorruptCheckpoint(
            f"{directory}: the signed manifest does not list a SHA-256 for every file: refusing it"
        )
    paths: list[Path] = []
    for rec in records:
        name = safe_name(rec.path)
        if name is None:
            raise CorruptCheckpoint(
                f"{directory}: the signed manifest lists a bad file name {rec.path!r}"
            )
        paths.append(directory / name)
    try:
        found = _map(sha256_file, paths)
    except OSError as e:
        raise CorruptCheckpoint(
            f"{directory}: cannot read {e.filename} ({e.strerror}): the checkpoint is incomplete"
        ) from None
    for rec, digest in zip(records, found, strict=True):
        if digest != rec.sha256:
            raise CorruptCheckpoint(
                f"{directory}: {rec.path} does not match its signed SHA-256: refusing it"
            )
