"""The job store (SQLite) and the state directory."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cedana_gpu.jobs import statedir
from cedana_gpu.jobs.store import (
    EXITED,
    FAILED,
    KILLED,
    RUNNING,
    SCHEMA_VERSION,
    STARTING,
    DuplicateJob,
    Job,
    JobStore,
    NoSuchJob,
    StoreError,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    s = JobStore(tmp_path / "jobs.db")
    yield s
    s.close()


# ---- state directory -----------------------------------------------------------


def test_state_dir_env_overrides_everything(tmp_path: Path) -> None:
    env = {"CEDANA_STATE_DIR": str(tmp_path / "s"), "XDG_STATE_HOME": "/x", "HOME": "/h"}
    assert statedir.default_state_dir(uid=0, env=env) == tmp_path / "s"
    assert statedir.default_state_dir(uid=1000, env=env) == tmp_path / "s"


def test_state_dir_defaults() -> None:
    assert statedir.default_state_dir(uid=0, env={}) == Path("/var/lib/cedana-gpu")
    user = {"XDG_STATE_HOME": "/xdg/state", "HOME": "/home/u"}
    assert statedir.default_state_dir(uid=1000, env=user) == Path("/xdg/state/cedana-gpu")
    no_xdg = {"HOME": "/home/u"}
    assert statedir.default_state_dir(uid=1000, env=no_xdg) == Path(
        "/home/u/.local/state/cedana-gpu"
    )
    # The XDG spec ignores relative paths.
    relative = {"XDG_STATE_HOME": "rel", "HOME": "/home/u"}
    assert statedir.default_state_dir(uid=1000, env=relative) == Path(
        "/home/u/.local/state/cedana-gpu"
    )


def test_state_dir_is_created_private(tmp_path: Path) -> None:
    d = statedir.ensure_private_dir(tmp_path / "a" / "state")
    assert d.is_dir()
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    os.chmod(d, 0o755)
    statedir.ensure_private_dir(d)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700


def test_state_dir_unusable_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(statedir.StateDirError, match="CEDANA_STATE_DIR"):
        statedir.ensure_private_dir(blocker / "state")


@pytest.mark.parametrize("jid", ["a", "job-1", "A.b_c-9", "x" * 63, "0abc"])
def test_valid_job_ids(jid: str) -> None:
    assert statedir.check_job_id(jid) == jid


@pytest.mark.parametrize("jid", ["", "x" * 64, "-a", ".a", "a/b", "a b", "é", "a\n"])
def test_invalid_job_ids(jid: str) -> None:
    with pytest.raises(ValueError, match="invalid job id"):
        statedir.check_job_id(jid)


# ---- store ---------------------------------------------------------------------


def test_store_file_is_private_and_in_wal_mode(tmp_path: Path, store: JobStore) -> None:
    assert stat.S_IMODE((tmp_path / "jobs.db").stat().st_mode) == 0o600
    with sqlite3.connect(tmp_path / "jobs.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.schema_version() == SCHEMA_VERSION


def test_create_get_list_update(store: JobStore) -> None:
    job = store.create(Job(jid="j1", cmd=["python", "-c", "print(1)"], gpu=True, driver="fake"))
    got = store.get("j1")
    assert got is not None
    assert got.cmd == ["python", "-c", "print(1)"]
    assert got.gpu is True and got.driver == "fake" and got.state == STARTING
    assert got.generation == 1
    assert got.created_at == pytest.approx(job.created_at)

    assert store.update("j1", state=RUNNING, pid=1234, pid_namespace=True, controller_pid=99)
    got = store.require("j1")
    assert (got.state, got.pid, got.pid_namespace, got.controller_pid) == (RUNNING, 1234, True, 99)
    assert got.updated_at >= got.created_at

    store.create(Job(jid="j2", cmd=["true"]))
    assert [j.jid for j in store.list()] == ["j1", "j2"]
    assert [j.jid for j in store.list(states=[RUNNING])] == ["j1"]
    assert store.get("nope") is None
    with pytest.raises(NoSuchJob, match="no job 'nope'"):
        store.require("nope")


def test_duplicate_job_id_is_refused(store: JobStore) -> None:
    store.create(Job(jid="dup", cmd=["true"]))
    with pytest.raises(DuplicateJob, match="exists already"):
        store.create(Job(jid="dup", cmd=["false"]))
    assert store.require("dup").cmd == ["true"]


def test_finish_records_once(store: JobStore) -> None:
    store.create(Job(jid="f", cmd=["true"], state=RUNNING))
    assert store.finish("f", EXITED, exit_code=3)
    # A second, late report (e.g. a CLI reconciling) does not overwrite the first.
    assert not store.finish("f", KILLED, signal=9)
    job = store.require("f")
    assert (job.state, job.exit_code, job.signal) == (EXITED, 3, None)
    with pytest.raises(ValueError):
        store.finish("f", RUNNING)


def test_update_refuses_unknown_columns(store: JobStore) -> None:
    store.create(Job(jid="u", cmd=["true"]))
    with pytest.raises(ValueError):
        store.update("u", nonsense=1)
    with pytest.raises(ValueError):
        store.update("u", created=1.0)


def test_only_if_guards_state(store: JobStore) -> None:
    store.create(Job(jid="g", cmd=["true"], state=FAILED))
    assert not store.update("g", only_if=(STARTING,), state=RUNNING)
    assert store.require("g").state == FAILED


def test_migrates_an_empty_file_and_refuses_a_newer_one(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    sqlite3.connect(path).close()
    with JobStore(path) as s:
        assert s.schema_version() == SCHEMA_VERSION
        s.create(Job(jid="kept", cmd=["true"]))
    # Opening again keeps the data.
    with JobStore(path) as s:
        assert s.require("kept").cmd == ["true"]
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer"):
        JobStore(path)


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from cedana_gpu.jobs.store import Job, JobStore, RUNNING, EXITED
    path, name, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    store = JobStore(path)
    for i in range(n):
        jid = f"{name}-{i}"
        store.create(Job(jid=jid, cmd=["true"]))
        store.update(jid, state=RUNNING, pid=i + 1)
        store.list()
        store.finish(jid, EXITED, exit_code=i % 7)
    """
)


def test_many_processes_at_once(tmp_path: Path) -> None:
    """Several writers (controllers, CLIs) on one store: nothing lost, nothing fails."""
    path = tmp_path / "jobs.db"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), f"w{k}", "40"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(4)
    ]
    for w in writers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err
    with JobStore(path) as s:
        jobs = s.list()
    assert len(jobs) == 160
    assert all(j.state == EXITED for j in jobs)
    assert {j.jid: j.exit_code for j in jobs}["w3-13"] == 13 % 7
