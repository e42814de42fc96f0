"""What interrupted dumps and restores leave is settled by the next operation (cr.recovery).

The store and the disk must not disagree: a checkpoint renamed into place
is listed even if its dump died before recording it; anything else an
interrupted dump or restore left is removed; nothing a live dump or restore
owns is touched. On a store and directories alone: the end-to-end kills are
in tests/test_cr_durability.py and tests/test_fault_matrix.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cedana_gpu.cr import recovery
from cedana_gpu.jobs import processes, statedir
from cedana_gpu.jobs.store import COMMITTED, PENDING, Checkpoint, Job, JobStore


def dead_identity() -> str:
    """The identity of a process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = processes.process_identity(proc.pid)
    proc.wait()
    assert identity is not None and not processes.identity_alive(identity)
    return identity


def pending(store: JobStore, cid: str, final: Path, owner: str | None) -> None:
    store.add_checkpoint(
        Checkpoint(
            id=cid,
            jid="j1",
            path=str(final),
            size=0,
            compression="none",
            streams=1,
            leave_running=False,
            status=PENDING,
            owner=owner,
        )
    )


def setup(tmp_path: Path) -> tuple[Path, JobStore, Path]:
    state = tmp_path / "state"
    state.mkdir()
    store = JobStore(statedir.store_path(state))
    store.create(Job(jid="j1", cmd=["x"]))
    ckdir = statedir.checkpoints_dir(state, "j1")
    ckdir.mkdir(parents=True)
    return state, store, ckdir


def test_a_checkpoint_renamed_into_place_is_listed(tmp_path: Path) -> None:
    state, store, ckdir = setup(tmp_path)
    final = ckdir / "c1"
    (final / "criu").mkdir(parents=True)
    (final / "manifest.json").write_text("{}")
    pending(store, "c1", final, dead_identity())
    assert store.checkpoints("j1") == []
    lines: list[str] = []
    recovery.recover(store, state, "j1", lines.append)
    [ckpt] = store.checkpoints("j1")
    assert ckpt.id == "c1" and ckpt.status == COMMITTED and ckpt.size == 2
    assert lines == [
        "checkpoint c1 of job j1 was complete when its dump was interrupted: it is listed now"
    ]


def test_an_unfinished_dump_leaves_nothing(tmp_path: Path) -> None:
    state, store, ckdir = setup(tmp_path)
    partial = ckdir / ".c2.partial"
    (partial / "criu").mkdir(parents=True)
    (partial / "criu" / "pages-1.img").write_bytes(b"x" * 1000)
    archive = ckdir / ".c2.tar.partial"
    archive.write_bytes(b"y")
    pending(store, "c2", ckdir / "c2.tar", dead_identity())
    lines: list[str] = []
    recovery.recover(store, state, "j1", lines.append)
    assert not partial.exists() and not archive.exists()
    assert store.get_checkpoint("c2", status=None) is None
    assert len(lines) == 1 and "interrupted dump of job j1 left no checkpoint" in lines[0]


def test_a_live_dump_is_left_alone(tmp_path: Path) -> None:
    state, store, ckdir = setup(tmp_path)
    partial = ckdir / ".c3.partial"
    partial.mkdir()
    pending(store, "c3", ckdir / "c3", processes.process_identity())
    lines: list[str] = []
    recovery.recover(store, state, "j1", lines.append)
    assert partial.exists() and lines == []
    row = store.get_checkpoint("c3", status=None)
    assert row is not None and row.status == PENDING


def test_stray_partials_in_the_jobs_directory_go(tmp_path: Path) -> None:
    """A leftover with no row (an older cedana's) in the job's own directory."""
    state, store, ckdir = setup(tmp_path)
    (ckdir / ".old.partial").mkdir()
    (ckdir / ".old.tar.partial").write_bytes(b"")
    (ckdir / "keep").mkdir()
    recovery.recover(store, state, "j1", lambda _line: None)
    assert sorted(p.name for p in ckdir.iterdir()) == ["keep"]


def test_restore_scratch_of_a_dead_restore_goes(tmp_path: Path) -> None:
    state, store, _ = setup(tmp_path)
    root = statedir.restore_tmp_dir(state)
    root.mkdir(parents=True)
    dead = root / (dead_identity().replace(":", ".") + ".abc123")
    (dead / "criu").mkdir(parents=True)
    live = root / recovery.scratch_name("def456")
    live.mkdir()
    legacy = root / "0123456789ab"  # unnamed: from before owners were recorded
    legacy.mkdir()
    lines: list[str] = []
    recovery.recover(store, state, None, lines.append)
    assert not dead.exists() and not legacy.exists() and live.exists()
    assert len(lines) == 2


def test_process_identity_tells_reused_pids_apart() -> None:
    me = processes.process_identity()
    assert me is not None and processes.identity_alive(me)
    pid, start = me.split(":")
    assert not processes.identity_alive(f"{pid}:{int(start) + 1}")
    assert not processes.identity_alive(None) and not processes.identity_alive("garbage")
