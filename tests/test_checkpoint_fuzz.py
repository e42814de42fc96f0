"""Mutated checkpoints against the checks a restore makes before it starts anything.

Over 10,000 mutated copies of small real checkpoints (tests/checkpoint_fuzz.py
says how they are made and mutated) go through what a restore does: the
check phase (``check_checkpoint``), every region read back into a stand-in
device (``read_regions``), the state document loaded (``load_state``). The
invariant, for every case: it is refused with a ``CheckpointError`` of one
line, or accepted with the same device bytes, state document, listed files
and job as the original; never a traceback, never a hang (a case that takes
``HANG_SECONDS`` fails), never a wrong result.

The one exception is counted, not asserted: *forged* edits (the manifest
edited and its ``manifest_checksum`` recomputed) of the ``MAY_PASS`` kinds
make a checkpoint that is different but consistent in itself (two regions'
addresses swapped, a CRIU image changed with its record, the job's command
changed, a file dropped with its record, the self-checksum removed as in an
older manifest): only a signature tells those from the original
(``test_a_forged_swap_of_two_regions_passes`` shows one). They must still be
refused or accepted without a traceback, and every other forged edit
(layout, checksums, types, shards) must be caught.

A failure names each bad case as ``<base>/<family>/<seed>``;
``checkpoint_fuzz.replay(name)`` runs that case again. The counts of the
run are printed at the end of the session ("checkpoint fuzz: ...").

The other tests pin what the fuzzing found, one regression test per defect,
and the two checks added with it (the manifest's checksum over itself, the
state document read against its schema before the restore starts).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import checkpoint_fuzz as fz
import pytest

from cedana_gpu.checkpoint import (
    CHECKSUM_ALGORITHM,
    CheckpointError,
    CorruptCheckpoint,
    check_checkpoint,
    load_manifest,
    load_state,
    open_checkpoint,
    pack,
)
from cedana_gpu.checkpoint.manifest import MANIFEST_CHECKSUM, manifest_digest

CASES_PER_TEST = 330
"""8 bases x 4 families x 330 = 10,560 cases, in 32 tests xdist spreads over its workers."""

MANIFEST, STATE = fz.MANIFEST, fz.STATE


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, fz.Base]:
    work = tmp_path_factory.mktemp("fuzz-bases")
    return {v.name: fz.build_base(v, work) for v in fz.VARIANTS}


@pytest.fixture
def case_dir(tmp_path: Path) -> Iterator[Path]:
    """Where the cases are written: a tmpfs where there is one.

    Each case writes and deletes a tree of some twenty small files; on a disk
    file system the journal's directory updates (1-2 ms per rmdir on an ext4
    VM disk) would be most of the test's time, on tmpfs they are nothing.
    """
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    d = Path(tempfile.mkdtemp(prefix="cedana-gpu-fuzz-", dir=shm))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("family", fz.FAMILIES)
@pytest.mark.parametrize("variant", [v.name for v in fz.VARIANTS])
def test_mutated_checkpoints(
    bases: dict[str, fz.Base],
    variant: str,
    family: str,
    case_dir: Path,
    record_property: Callable[[str, object], None],
) -> None:
    """330 cases of one family on one base: refused in one line, or accepted identical
    (or, forged, of a kind only a signature catches); nothing else."""
    tally = fz.run_cases(bases[variant], family, range(CASES_PER_TEST), case_dir)
    record_property("checkpoint_fuzz", tally.counts())
    print(f"{variant}/{family}: {tally.line()}")
    assert tally.total == CASES_PER_TEST
    assert not tally.failures, (
        f"{variant}/{family}: {tally.line()}; {len(tally.failures)} bad cases "
        "(checkpoint_fuzz.replay(name) runs one again):\n" + "\n".join(tally.failures[:20])
    )


# --- the harness itself ----------------------------------------------------------------


def test_hang_guard_fails_a_case_that_does_not_return() -> None:
    with (
        pytest.raises(fz.CaseHung, match=re.escape("stuck/case/1: no answer after 0.05 s")),
        fz.hang_guard("stuck/case/1", 0.05),
    ):
        time.sleep(30)


def test_repack_unpacks_like_pack(bases: dict[str, fz.Base], tmp_path: Path) -> None:
    """The in-memory re-pack the cases use makes the archive ``pack`` makes of a tree."""
    for name in ("tar-tar", "tar-lz4", "tar-gzip"):
        base = bases[name]
        tree = dict(base.tree)
        tree["criu/core-1.img"] = b"changed" * 100
        tree["criu/pages-9.img"] = b"added"
        tree["gpu/img-5"] = b"added too"
        del tree["criu/pstree.img"]
        tree[MANIFEST] = tree[MANIFEST].replace(b'"created": ', b'"created":  ')
        src = tmp_path / f"src-{name}"
        fz.write_tree(tree, src)
        packed = pack(src, tmp_path / f"{name}.tar", base.variant.compression)
        mine = tmp_path / f"{name}-repacked.tar"
        mine.write_bytes(fz.repack(base, tree))
        for tar in (packed, mine):
            scratch = open_checkpoint(tar, tmp_path / f"scratch-{tar.name}")
            assert fz.read_tree(scratch) == tree, tar.name


# --- the manifest's checksum over itself ---------------------------------------------


def swapped_64_byte_regions(doc: dict[str, Any]) -> None:
    a, b = [r for r in doc["regions"] if r["size"] == 64][:2]
    a["addr"], b["addr"] = b["addr"], a["addr"]


def test_manifest_checksum_is_sha256_of_the_canonical_manifest(bases: dict[str, fz.Base]) -> None:
    for base in bases.values():
        doc = json.loads(base.tree[MANIFEST])
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", doc[MANIFEST_CHECKSUM])
        # The format's definition, computed in the test on its own, and the package's.
        assert doc[MANIFEST_CHECKSUM] == fz.spec_digest(doc) == manifest_digest(doc)


def test_an_edited_manifest_is_refused(bases: dict[str, fz.Base], tmp_path: Path) -> None:
    """Two regions' addresses swapped: every region and file checksum still holds."""
    base = bases["dir-none"]
    ck = tmp_path / "ck"
    fz.write_tree(base.tree, ck)
    doc = json.loads(base.tree[MANIFEST])
    swapped_64_byte_regions(doc)
    (ck / MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(CorruptCheckpoint) as e:
        check_checkpoint(ck, tmp_path / "scratch", fz.checksum, algorithm=CHECKSUM_ALGORITHM)
    assert str(e.value) == (
        f"{ck / MANIFEST}: the manifest does not match its manifest_checksum: "
        "the checkpoint is corrupt or was edited"
    )


def test_a_manifest_without_its_checksum_is_read(bases: dict[str, fz.Base], tmp_path: Path) -> None:
    """Checkpoints written before the member existed restore as before."""
    base = bases["dir-lz4"]
    tree = dict(base.tree)
    doc = json.loads(tree[MANIFEST])
    del doc[MANIFEST_CHECKSUM]
    tree[MANIFEST] = json.dumps(doc, indent=1).encode()
    fz.write_tree(tree, tmp_path / "ck")
    assert fz.restore_checks(base, tmp_path / "ck", tmp_path / "scratch") == base.expected


def test_a_forged_swap_of_two_regions_passes(bases: dict[str, fz.Base], tmp_path: Path) -> None:
    """The limit of a checksum kept inside the checkpoint: whoever recomputes it can
    move a region's bytes to another address (checksums cover bytes, not where
    they go), and the restore has nothing to tell. A signature would."""
    base = bases["dir-none"]
    tree = dict(base.tree)
    doc = json.loads(tree[MANIFEST])
    swapped_64_byte_regions(doc)
    doc[MANIFEST_CHECKSUM] = fz.spec_digest(doc)
    tree[MANIFEST] = json.dumps(doc).encode()
    fz.write_tree(tree, tmp_path / "ck")
    got = fz.restore_checks(base, tmp_path / "ck", tmp_path / "scratch")
    assert got.device != base.expected.device
    assert (got.state, got.files, got.job) == (
        base.expected.state,
        base.expected.files,
        base.expected.job,
    )


def test_a_lone_surrogate_in_the_command_line_is_written_and_read(tmp_path: Path) -> None:
    """A non-UTF-8 argument (Python decodes argv with surrogateescape) must not
    make the manifest's checksum unwritable: it hashes the surrogate as it is."""
    from cedana_gpu.checkpoint import JobInfo, Manifest, save_manifest

    m = Manifest(
        job=JobInfo(id="j", cmd=["x", "caf\udce9"], segment_name="", segment_size=0, generation=1),
        va_base=0,
        va_size=0,
        compression="none",
        streams=1,
    )
    save_manifest(m, tmp_path)
    assert load_manifest(tmp_path).job.cmd == ["x", "caf\udce9"]


# --- the state document, read before the restore starts ----------------------------------


def forged(tree: dict[str, bytes], edit: Callable[[Any], object] | None = None) -> dict[str, bytes]:
    """``tree`` with its manifest made to match: file records, ``edit``, self-checksum."""
    tree = dict(tree)
    doc = json.loads(tree[MANIFEST])
    for f in doc["files"]:
        fz.rerecord(doc, tree, f["path"])
    if edit is not None:
        edit(doc)
    doc[MANIFEST_CHECKSUM] = fz.spec_digest(doc)
    tree[MANIFEST] = json.dumps(doc).encode()
    return tree


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda d: d.pop("segment"), id="member-missing"),
        pytest.param(lambda d: d["allocations"][0].__setitem__(2, 7), id="chunk-not-listed"),
        pytest.param(lambda d: d["functions"][0].__setitem__("nparams", 2), id="nparams"),
        pytest.param(lambda d: d.__setitem__("version", 0), id="version-0"),
    ],
)
def test_check_checkpoint_refuses_a_state_document_its_schema_refuses(
    bases: dict[str, fz.Base], tmp_path: Path, edit: Callable[[Any], object]
) -> None:
    """Intact as a file (its record matches) but not a GPU state: refused in the
    check phase, before a controller is started, in one line naming the file."""
    base = bases["dir-none"]
    state = json.loads(base.tree[STATE])
    edit(state)
    fz.write_tree(forged(base.tree | {STATE: json.dumps(state).encode()}), tmp_path / "ck")
    with pytest.raises(CorruptCheckpoint) as e:
        check_checkpoint(
            tmp_path / "ck", tmp_path / "scratch", fz.checksum, algorithm=CHECKSUM_ALGORITHM
        )
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'ck' / STATE}: ") and "\n" not in msg


def test_a_checkpoint_without_a_state_document_is_checked_as_before(
    bases: dict[str, fz.Base], tmp_path: Path
) -> None:
    """A job that ran without the GPU has no gpu/state.json."""
    tree = dict(bases["dir-none"].tree)
    del tree[STATE]

    def edit(doc: dict[str, Any]) -> None:
        doc["files"] = [f for f in doc["files"] if f["path"] != STATE]

    fz.write_tree(forged(tree, edit), tmp_path / "ck")
    check_checkpoint(tmp_path / "ck", tmp_path / "s", fz.checksum, algorithm=CHECKSUM_ALGORITHM)


# --- regressions: what the fuzzing found ------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("1" + "0" * 5000, id="integer-of-5000-digits"),
        pytest.param(
            '{"format_version": 1, "va_base": 1' + "0" * 5000 + "}", id="member-5000-digits"
        ),
        pytest.param("[" * 100_000 + "]" * 100_000, id="nested-100000-deep"),
        pytest.param(
            '{"format_version": 1, "x": ' + "[" * 5000 + "]" * 5000 + "}", id="member-nested"
        ),
    ],
)
def test_json_beyond_json_loads_is_refused_in_one_line(
    bases: dict[str, fz.Base], tmp_path: Path, text: str
) -> None:
    """Regression: valid JSON that json.loads refuses with a plain ValueError (an
    integer past sys.get_int_max_str_digits()) or a RecursionError (deep nesting),
    not a JSONDecodeError, came out of load_manifest, load_state and the archive's
    first look at its manifest as a traceback."""
    (tmp_path / MANIFEST).write_text(text)
    with pytest.raises(CorruptCheckpoint, match="far beyond any manifest's") as e:
        load_manifest(tmp_path)
    assert "\n" not in str(e.value)
    (tmp_path / "state.json").write_text(text)
    with pytest.raises(CorruptCheckpoint, match="far beyond any GPU state's") as e:
        load_state(tmp_path / "state.json")
    assert "\n" not in str(e.value)
    base = bases["tar-lz4"]
    (tmp_path / "ck.tar").write_bytes(fz.repack(base, base.tree | {MANIFEST: text.encode()}))
    with pytest.raises(CorruptCheckpoint, match="the manifest in the archive is garbled"):
        open_checkpoint(tmp_path / "ck.tar", tmp_path / "scratch")


def test_a_huge_streams_count_is_refused_without_allocating_for_it(
    bases: dict[str, fz.Base], tmp_path: Path
) -> None:
    """Regression: ``verify_layout`` built a list of runs per stream before its
    first check, so ``streams: 10**12`` in a manifest (forged, or one without
    its self-checksum) took all memory. The schema now bounds ``streams``
    (1024), and ``verify_layout`` itself looks for the shards first."""
    from cedana_gpu.checkpoint import load_manifest, verify_layout

    base = bases["dir-none"]
    fz.write_tree(forged(base.tree, lambda d: d.__setitem__("streams", 10**12)), tmp_path / "ck")
    with fz.batch_guard(1), pytest.raises(CorruptCheckpoint) as e:  # bounded memory if it regresses
        check_checkpoint(tmp_path / "ck", tmp_path / "s", fz.checksum, algorithm=CHECKSUM_ALGORITHM)
    assert "'streams' is 1000000000000, more than 1024" in str(e.value)
    fz.write_tree(base.tree, tmp_path / "ok")
    manifest = load_manifest(tmp_path / "ok")
    manifest.streams = 10**12  # past the schema: the layout check alone
    with fz.batch_guard(1), pytest.raises(CorruptCheckpoint) as e:
        verify_layout(tmp_path / "ok", manifest)
    assert str(e.value).endswith("shard gpu/img-2 is missing: the checkpoint is incomplete")


@pytest.mark.parametrize("path", ["criu/a\x00b.img", "criu/\ud800.img", "\x00"])
def test_a_file_record_that_cannot_name_a_file_is_refused(
    bases: dict[str, fz.Base], tmp_path: Path, path: str
) -> None:
    """Regression: a file record's path with a NUL or a lone surrogate reached
    os.stat, which raised ValueError / UnicodeEncodeError: a traceback."""
    edit = lambda d: d["files"][0].__setitem__("path", path)  # noqa: E731
    fz.write_tree(forged(bases["dir-none"].tree, edit), tmp_path / "ck")
    with pytest.raises(CorruptCheckpoint, match="the manifest lists a bad file name") as e:
        check_checkpoint(tmp_path / "ck", tmp_path / "s", fz.checksum, algorithm=CHECKSUM_ALGORITHM)
    assert "\n" not in str(e.value)


def archive_of(members: list[tuple[str, bytes | None]]) -> bytes:
    """A tar of (name, data) members; data None: a directory."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            if data is None:
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            else:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return out.getvalue()


@pytest.mark.parametrize(
    "members",
    [
        pytest.param([("gpu", b"x"), ("gpu/img-0", b"y")], id="file-then-under-it"),
        pytest.param([("criu/core-1.img", None), ("criu/core-1.img", b"y")], id="dir-then-file"),
        pytest.param([("criu/x.img/", None), ("criu/x.img.lz4", b"")], id="decompressed-name"),
    ],
)
def test_an_archive_member_that_is_a_file_and_a_directory_is_refused(
    bases: dict[str, fz.Base], tmp_path: Path, members: list[tuple[str, bytes | None]]
) -> None:
    """Regression: a damaged header that renames or retypes a member (tar's header
    checksum is a plain sum: two flipped bits can cancel) unpacked half-way and
    ended in IsADirectoryError / NotADirectoryError: a traceback."""
    manifest = bases["tar-lz4"].tree[MANIFEST]
    tar = tmp_path / "ck.tar"
    tar.write_bytes(archive_of([(MANIFEST, manifest), *members]))
    with pytest.raises(CorruptCheckpoint, match="is both a file and a directory") as e:
        open_checkpoint(tar, tmp_path / "scratch")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "scratch").exists()


def test_an_unpack_the_file_system_refuses_is_one_line(
    bases: dict[str, fz.Base], tmp_path: Path
) -> None:
    """Regression: any OSError while unpacking (here a name longer than a file
    system allows) came out of open_checkpoint as a traceback."""
    manifest = bases["tar-tar"].tree[MANIFEST]
    tar = tmp_path / "ck.tar"
    tar.write_bytes(archive_of([(MANIFEST, manifest), ("criu/" + "n" * 300, b"x")]))
    with pytest.raises(CheckpointError, match=r"cannot unpack .*: File name too long") as e:
        open_checkpoint(tar, tmp_path / "scratch")
    assert "\n" not in str(e.value)
