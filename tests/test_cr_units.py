"""Pieces of checkpoint/restore that need neither root, CRIU nor the native build."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from cedana_gpu.controller import control
from cedana_gpu.jobs import lifecycle, processes
from cedana_gpu.jobs.store import (
    CHECKPOINTED,
    FINAL_STATES,
    MIGRATIONS,
    SCHEMA_VERSION,
    Checkpoint,
    Job,
    JobStore,
)


def test_store_migrates_and_lists_checkpoints(tmp_path: Path) -> None:
    """A store made before checkpoints existed (schema 1) gains them when opened."""
    path = tmp_path / "jobs.db"
    conn = sqlite3.connect(path)
    for sql in MIGRATIONS[0]:
        conn.execute(sql)
    conn.execute("CREATE TABLE schema_version (version INTEGER)")
    conn.execute("INSERT INTO schema_version VALUES (1)")
    conn.execute(
        "INSERT INTO jobs (jid, state, cmd, created_at, updated_at) "
        "VALUES ('old', 'exited', '[\"true\"]', 1, 1)"
    )
    conn.commit()
    conn.close()
    with JobStore(path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        old = store.require("old")
        assert old.persistent_mounts == [] and old.shm_dir is None and old.segment is None
        store.create(Job(jid="j1", cmd=["true"], persistent_mounts=["/a"], segment="s"))
        assert store.require("j1").persistent_mounts == ["/a"]
        for i in range(2):
            store.add_checkpoint(
                Checkpoint(
                    id=f"c{i}", jid="j1", path=f"/p{i}", size=10, compression="none",
                    streams=1, leave_running=bool(i), phases={"total": 0.5}, created=100.0 + i,
                )
            )  # fmt: skip
        assert [c.id for c in store.checkpoints("j1")] == ["c0", "c1"]
        latest = store.latest_checkpoint("j1")
        assert latest is not None and latest.leave_running and latest.phases == {"total": 0.5}
        assert store.latest_checkpoint("other") is None
        assert store.get_checkpoint("c0") is not None
        # A dumped job's end is final.
        assert CHECKPOINTED in FINAL_STATES
        store.update("j1", state="running")
        assert store.finish("j1", CHECKPOINTED)
        assert store.require("j1").state == CHECKPOINTED


def test_control_client_keeps_one_connection_and_disconnect_is_seen(tmp_path: Path) -> None:
    seen: list[int] = []
    gone: list[int] = []
    done = threading.Event()

    def op(_req: dict) -> dict:  # type: ignore[type-arg]
        seen.append(threading.get_ident())
        return {"n": len(seen)}

    def on_disconnect() -> None:
        gone.append(threading.get_ident())
        done.set()

    server = control.ControlServer(tmp_path / "c.sock", {"op": op}, on_disconnect=on_disconnect)
    server.start()
    try:
        with control.ControlClient(tmp_path / "c.sock") as client:
            assert client.call({"op": "op"})["n"] == 1
            assert client.call({"op": "op"}, timeout=None)["n"] == 2
            with pytest.raises(control.ControlError, match="unknown op"):
                client.call({"op": "nope"})
        assert done.wait(10)
        # Both requests and the disconnect were served by one thread: the connection's.
        assert len(set(seen)) == 1 and gone == seen[:1]
        with pytest.raises(control.ControlError, match="closed"):
            client.call({"op": "op"})
    finally:
        server.close()


def test_control_client_drops_the_answer_of_a_request_cut_short(tmp_path: Path) -> None:
    """After a wait that timed out (or was interrupted), the late answer is not
    taken for the next request's: a dump interrupted during dump_gpu must get
    its unfreeze answered, not dump_gpu's."""
    release = threading.Event()

    def slow(_req: dict) -> dict:  # type: ignore[type-arg]
        release.wait(10)
        return {"op": "slow"}

    def fast(_req: dict) -> dict:  # type: ignore[type-arg]
        return {"op": "fast"}

    server = control.ControlServer(tmp_path / "c.sock", {"slow": slow, "fast": fast})
    server.start()
    try:
        with control.ControlClient(tmp_path / "c.sock") as client:
            with pytest.raises(control.ControlError, match="did not answer"):
                client.call({"op": "slow"}, timeout=0.2)
            release.set()
            assert client.call({"op": "fast"})["op"] == "fast"
            assert client.call({"op": "fast"})["op"] == "fast"
    finally:
        server.close()


def test_persistent_mount_checks(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("")
    for bad, why in (
        ("rel", "absolute"),
        ("/", "cannot be /"),
        ("/dev/shm/x", "/dev/shm"),
        ("/proc/x", "system"),
        (str(f), "not a directory"),
    ):
        with pytest.raises(lifecycle.JobError, match=why):
            lifecycle.check_persistent_mounts([bad])
    if os.geteuid() == 0:
        d = str(tmp_path / "d")
        assert lifecycle.check_persistent_mounts([d, d + "/", ""]) == [d]
    else:
        with pytest.raises(lifecycle.JobError, match="need root"):
            lifecycle.check_persistent_mounts([str(tmp_path / "d")])


def test_dump_helpers() -> None:
    from cedana_gpu.cr import dump

    cid = dump.checkpoint_id("job1")
    assert cid.startswith("job1-") and len(cid.split("-")) == 4
    assert processes.tree_pids(os.getpid())[0] == os.getpid()
    processes.continue_tree(2**22 + 12345)  # no such process: nothing to do
    assert dump.log_file_keys(os.getpid(), None) == []


def test_job_shm_dir_is_used_when_it_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cedana_gpu.controller import shm_layout

    monkeypatch.setattr(shm_layout, "JOB_SHM_DIRS", tmp_path)
    assert shm_layout.segment_path("jx") == shm_layout.SHM_DIR / "cedana-gpu.jx"
    (tmp_path / "jx").mkdir()
    (tmp_path / "jx" / "cedana-gpu.jx.pin.3").write_text("")
    assert shm_layout.segment_path("jx") == tmp_path / "jx" / "cedana-gpu.jx"
    assert shm_layout.pin_paths("jx") == [tmp_path / "jx" / "cedana-gpu.jx.pin.3"]
    job = Job(jid="jx", cmd=["x"], shm_dir=str(tmp_path / "jx"), segment="cedana-gpu.old")
    assert lifecycle.segment_file(job) == tmp_path / "jx" / "cedana-gpu.old"


def _janitor_paths(tmp_path: Path) -> list[Path]:
    partial = tmp_path / ".c.partial"
    (partial / "criu").mkdir(parents=True)
    (partial / "criu" / "core.img").write_bytes(b"x")
    final = tmp_path / "c"
    final.mkdir()
    return [partial, tmp_path / ".c.tar.partial", final]


def test_a_janitor_not_told_to_keep_removes_what_the_dump_left(tmp_path: Path) -> None:
    """The dump died (or failed, its undos done): its pipe closes, its leftovers go."""
    from cedana_gpu.cr.janitor import Janitor

    paths = _janitor_paths(tmp_path)
    Janitor(paths).close()
    deadline = time.monotonic() + 60  # bounds a hang, measures nothing
    while any(p.exists() for p in paths):
        assert time.monotonic() < deadline, [p for p in paths if p.exists()]
        time.sleep(0.01)


def test_a_janitor_told_to_keep_leaves_everything(tmp_path: Path) -> None:
    from cedana_gpu.cr.janitor import Janitor

    paths = _janitor_paths(tmp_path)
    janitor = Janitor(paths)
    janitor.keep()
    janitor._proc.wait(timeout=60)
    assert janitor._proc.returncode == 0
    assert paths[0].exists() and paths[2].exists()
