"""The job store: one SQLite file, ``<state>/jobs.db``.

Embedded, no server. The CLI and every job's controller open it at the same
time: WAL mode lets readers run beside one writer, and a busy timeout makes a
writer wait for another instead of failing. Every write is one short
transaction.

The schema carries a version (table ``schema_version``); ``MIGRATIONS`` brings
an older file up to date when it is opened, so later issues (checkpoints) add
tables and columns without breaking existing stores.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from cedana_gpu import errors

STARTING, RUNNING, EXITED, KILLED, FAILED = "starting", "running", "exited", "killed", "failed"
CHECKPOINTED = "checkpointed"
"""The job was dumped (without --leave-running) and ended; its checkpoint remains."""
PENDING, COMMITTED = "pending", "committed"
"""A checkpoint's row: being written by its owner, or complete (the only ones listed)."""
STATES = (STARTING, RUNNING, EXITED, KILLED, FAILED, CHECKPOINTED)
ACTIVE_STATES = (STARTING, RUNNING)
"""States in which the job may still have processes and a controller."""
FINAL_STATES = (EXITED, KILLED, FAILED, CHECKPOINTED)

BUSY_TIMEOUT_MS = 30_000

# MIGRATIONS[i] takes a store from schema version i to i + 1. Append, never edit.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE jobs (
            jid TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            exit_code INTEGER,
            signal INTEGER,
            pid INTEGER,
            pid_namespace INTEGER NOT NULL DEFAULT 0,
            controller_pid INTEGER,
            gpu INTEGER NOT NULL DEFAULT 0,
            driver TEXT,
            cmd TEXT NOT NULL,
            cwd TEXT,
            log_path TEXT,
            socket_path TEXT,
            error TEXT,
            generation INTEGER NOT NULL DEFAULT 1,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )
        """,
        "CREATE INDEX jobs_state ON jobs (state)",
    ),
    (
        # Checkpoint/restore: where the job's segment lives and what it is
        # called (a restored job keeps the name it had at dump), its
        # persistent mounts, and the checkpoint a restored job came from.
        "ALTER TABLE jobs ADD COLUMN shm_dir TEXT",
        "ALTER TABLE jobs ADD COLUMN segment TEXT",
        "ALTER TABLE jobs ADD COLUMN persistent_mounts TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE jobs ADD COLUMN restored_from TEXT",
        """
        CREATE TABLE checkpoints (
            id TEXT PRIMARY KEY,
            jid TEXT NOT NULL,
            path TEXT NOT NULL,
            size INTEGER NOT NULL,
            created REAL NOT NULL,
            compression TEXT NOT NULL,
            streams INTEGER NOT NULL,
            leave_running INTEGER NOT NULL,
            generation INTEGER NOT NULL DEFAULT 1,
            phases TEXT NOT NULL DEFAULT '{}'
        )
        """,
        "CREATE INDEX checkpoints_jid ON checkpoints (jid, created)",
    ),
    (
        # Durable commit (issue 8): a dump records its checkpoint as
        # ``pending`` (with the dumping process as owner) before it writes
        # anything, and ``committed`` once the checkpoint is renamed into
        # place and synced. A pending row whose owner died is what a crash
        # left: the next operation finishes it (the checkpoint is on disk) or
        # removes its leftovers (``cr.recovery``).
        "ALTER TABLE checkpoints ADD COLUMN status TEXT NOT NULL DEFAULT 'committed'",
        "ALTER TABLE checkpoints ADD COLUMN owner TEXT",
    ),
    (
        # GPU engines (issue 9): the engine a GPU job runs under (``intercept``
        # or ``driver``; ``cedana_gpu.engines``); NULL for a job without GPU
        # and for rows from before engines (all intercepted).
        "ALTER TABLE jobs ADD COLUMN engine TEXT",
    ),
    (
        # The daemon (issue 10): a job's periodic checkpoint policy, dumped
        # leave-running every ``every`` seconds, keeping the newest ``keep``.
        # A table of its own, so the daemon finds the policies again when it
        # restarts and jobs without one carry nothing.
        """
        CREATE TABLE checkpoint_policies (
            jid TEXT PRIMARY KEY,
            every REAL NOT NULL,
            keep INTEGER NOT NULL DEFAULT 0
        )
        """,
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


StoreError = errors.StoreError
"""The job store cannot be used (printed as one line); ``cedana_gpu.errors.StoreError``."""


class DuplicateJob(StoreError):
    """A job with this id exists already."""


class NoSuchJob(StoreError):
    """No job with this id."""


@dataclass
class Job:
    """One row of ``jobs``.

    ``pid`` is the job's root process as the host sees it: the init of the
    job's PID namespace when it has one (``pid_namespace``), else the job's
    session leader. ``generation`` counts the controllers that served the job
    (1, then +1 per restore).
    """

    jid: str
    cmd: list[str]
    state: str = STARTING
    exit_code: int | None = None
    signal: int | None = None
    pid: int | None = None
    pid_namespace: bool = False
    controller_pid: int | None = None
    gpu: bool = False
    driver: str | None = None
    cwd: str | None = None
    log_path: str | None = None
    socket_path: str | None = None
    error: str | None = None
    generation: int = 1
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    shm_dir: str | None = None
    """Directory of the segment and pinned files as the host sees it
    (``/dev/shm/cedana-gpu.d/<jid>`` for a job with a mount namespace; else
    ``/dev/shm``); None for a job without GPU."""
    segment: str | None = None
    """File name of the segment in ``shm_dir`` (``cedana-gpu.<jid at first run>``)."""
    persistent_mounts: list[str] = field(default_factory=list)
    restored_from: str | None = None
    """Id of the checkpoint this job was restored from."""
    engine: str | None = None
    """The GPU engine (``intercept``, ``driver``); None without GPU (or an old row:
    see ``gpu_engine``)."""

    @property
    def gpu_engine(self) -> str | None:
        """The job's GPU engine; rows from before engines were intercepted."""
        if not self.gpu:
            return None
        return self.engine or "intercept"

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["engine"] = self.gpu_engine
        return d

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        values = {k: row[k] for k in row.keys() if k in _COLUMNS}  # noqa: SIM118 - sqlite3.Row
        values["cmd"] = json.loads(values["cmd"])
        if "persistent_mounts" in values:
            values["persistent_mounts"] = json.loads(values["persistent_mounts"] or "[]")
        values["gpu"] = bool(values["gpu"])
        values["pid_namespace"] = bool(values["pid_namespace"])
        return cls(**values)


_COLUMNS = frozenset(f.name for f in fields(Job))


def _to_sql(name: str, value: Any) -> Any:
    if name in ("cmd", "persistent_mounts"):
        return json.dumps(list(value))
    if isinstance(value, bool):
        return int(value)
    return value


class JobStore:
    """The job store at ``path``. Safe to share between threads of one process."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            # Create the file ourselves so it is private from the first byte;
            # SQLite gives its -wal and -shm files the same mode. Only when it
            # is missing: closing a descriptor of a database drops every POSIX
            # lock this process holds on it, also those of another connection
            # of this process (which then reads pages another process is
            # rewriting: "database disk image is malformed").
            if not self.path.exists():
                with contextlib.suppress(FileExistsError):
                    os.close(
                        os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                    )
            self._conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            self._conn.row_factory = sqlite3.Row
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # FULL: a committed transaction is on disk when it returns (WAL
            # is synced at each commit). NORMAL would lose the last ones on a
            # power loss, e.g. the record of a checkpoint whose job was then
            # killed. Writes are few and small, so the cost is negligible.
            self._conn.execute("PRAGMA synchronous = FULL")
            self._initialise()
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the job store {self.path}: {e}") from None
        except OSError as e:
            raise StoreError(f"cannot open the job store {self.path}: {e.strerror}") from None

    def _initialise(self) -> None:
        """WAL mode and the current schema, when several processes open a new
        store at once.

        Switching to WAL and the first write can answer "database is locked"
        at once, without waiting out the busy timeout, while another process
        does the same (SQLite does not wait where waiting could deadlock), so
        those steps are retried until the busy timeout has passed.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        delay = 0.001
        while True:
            try:
                mode = self._conn.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() != "wal":
                    self._conn.execute("PRAGMA journal_mode = WAL")
                self._migrate()
                return
            except sqlite3.OperationalError as e:
                busy = "locked" in str(e) or "busy" in str(e)
                if not busy or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- schema ---------------------------------------------------------------

    def _version(self) -> int:
        exists = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone()
        if not exists:
            return 0
        row = self._conn.execute("SELECT version FROM schema_version").fetchone()
        return int(row[0]) if row else 0

    def _migrate(self) -> None:
        if self._version() == SCHEMA_VERSION:
            return
        # BEGIN IMMEDIATE takes the write lock first, so two processes opening a
        # new store at once migrate it once, one after the other.
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
            version = self._version()
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the job store {self.path} has schema version {version}, newer than this "
                    f"cedana's {SCHEMA_VERSION}: upgrade cedana or use another CEDANA_STATE_DIR"
                )
            for statements in MIGRATIONS[version:]:
                for sql in statements:
                    self._conn.execute(sql)
            self._conn.execute("DELETE FROM schema_version")
            self._conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def schema_version(self) -> int:
        with self._locked():
            return self._version()

    # ---- rows -----------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as e:
                raise StoreError(f"job store {self.path}: {e}") from None

    def create(self, job: Job) -> Job:
        """Insert ``job``; DuplicateJob if its id is taken."""
        values = {f.name: _to_sql(f.name, getattr(job, f.name)) for f in fields(Job)}
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self._locked() as conn:
            try:
                conn.execute(f"INSERT INTO jobs ({names}) VALUES ({marks})", tuple(values.values()))
            except sqlite3.IntegrityError:
                raise DuplicateJob(f"a job with id {job.jid!r} exists already") from None
        return job

    def get(self, jid: str) -> Job | None:
        with self._locked() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE jid = ?", (jid,)).fetchone()
        return Job.from_row(row) if row else None

    def require(self, jid: str) -> Job:
        job = self.get(jid)
        if job is None:
            raise NoSuchJob(f"no job {jid!r} (see 'cedana ps')")
        return job

    def list(self, states: Sequence[str] | None = None) -> list[Job]:
        sql = "SELECT * FROM jobs"
        args: tuple[str, ...] = ()
        if states:
            sql += f" WHERE state IN ({', '.join('?' for _ in states)})"
            args = tuple(states)
        with self._locked() as conn:
            rows = conn.execute(sql + " ORDER BY created_at, jid", args).fetchall()
        return [Job.from_row(r) for r in rows]

    def update(self, jid: str, *, only_if: Sequence[str] | None = None, **values: Any) -> bool:
        """Set columns of job ``jid``; with ``only_if``, only while its state is one of those.

        Returns whether a row changed.
        """
        unknown = set(values) - (_COLUMNS - {"jid", "created_at"})
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        values["updated_at"] = time.time()
        sets = ", ".join(f"{k} = ?" for k in values)
        args: list[Any] = [_to_sql(k, v) for k, v in values.items()]
        sql = f"UPDATE jobs SET {sets} WHERE jid = ?"
        args.append(jid)
        if only_if:
            sql += f" AND state IN ({', '.join('?' for _ in only_if)})"
            args.extend(only_if)
        with self._locked() as conn:
            return conn.execute(sql, args).rowcount > 0

    def finish(
        self,
        jid: str,
        state: str,
        *,
        exit_code: int | None = None,
        signal: int | None = None,
        error: str | None = None,
    ) -> bool:
        """Record the end of a job that is still active. Returns whether it was."""
        if state not in FINAL_STATES:
            raise ValueError(f"{state!r} is not a final state")
        return self.update(
            jid,
            only_if=ACTIVE_STATES,
            state=state,
            exit_code=exit_code,
            signal=signal,
            error=error,
        )

    def delete(self, jid: str) -> bool:
        with self._locked() as conn:
            return conn.execute("DELETE FROM jobs WHERE jid = ?", (jid,)).rowcount > 0

    # ---- checkpoints ------------------------------------------------------------

    def add_checkpoint(self, ckpt: Checkpoint) -> Checkpoint:
        values = ckpt.to_sql()
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self._locked() as conn:
            try:
                conn.execute(
                    f"INSERT INTO checkpoints ({names}) VALUES ({marks})", tuple(values.values())
                )
            except sqlite3.IntegrityError:
                raise StoreError(f"a checkpoint with id {ckpt.id!r} exists already") from None
        return ckpt

    def checkpoints(
        self, jid: str | None = None, *, status: str = COMMITTED
    ) -> builtins.list[Checkpoint]:
        """A job's checkpoints (all jobs' without ``jid``) in ``status``, oldest first."""
        sql = "SELECT * FROM checkpoints WHERE status = ?"
        args: tuple[str, ...] = (status,)
        if jid is not None:
            sql += " AND jid = ?"
            args += (jid,)
        with self._locked() as conn:
            rows = conn.execute(sql + " ORDER BY created, id", args).fetchall()
        return [Checkpoint.from_row(r) for r in rows]

    def get_checkpoint(self, cid: str, *, status: str | None = COMMITTED) -> Checkpoint | None:
        """The checkpoint ``cid`` in ``status`` (None: in any)."""
        with self._locked() as conn:
            row = conn.execute("SELECT * FROM checkpoints WHERE id = ?", (cid,)).fetchone()
        if row is None:
            return None
        ckpt = Checkpoint.from_row(row)
        return ckpt if status is None or ckpt.status == status else None

    def commit_checkpoint(self, cid: str, *, size: int, phases: dict[str, float]) -> bool:
        """Mark a pending checkpoint complete (it is listed from now on)."""
        with self._locked() as conn:
            return (
                conn.execute(
                    "UPDATE checkpoints SET status = ?, size = ?, phases = ?, owner = NULL "
                    "WHERE id = ? AND status = ?",
                    (COMMITTED, size, json.dumps(phases), cid, PENDING),
                ).rowcount
                > 0
            )

    def latest_checkpoint(self, jid: str) -> Checkpoint | None:
        found = self.checkpoints(jid)
        return found[-1] if found else None

    def set_checkpoint_phases(self, cid: str, phases: dict[str, float]) -> None:
        with self._locked() as conn:
            conn.execute(
                "UPDATE checkpoints SET phases = ? WHERE id = ?", (json.dumps(phases), cid)
            )

    def delete_checkpoint(self, cid: str) -> bool:
        with self._locked() as conn:
            return conn.execute("DELETE FROM checkpoints WHERE id = ?", (cid,)).rowcount > 0

    # ---- periodic checkpoint policies (the daemon) ---------------------------------

    def set_policy(self, jid: str, every: float, keep: int) -> None:
        """Dump ``jid`` every ``every`` seconds keeping ``keep``; ``every`` 0 clears it."""
        with self._locked() as conn:
            if every <= 0:
                conn.execute("DELETE FROM checkpoint_policies WHERE jid = ?", (jid,))
            else:
                conn.execute(
                    "INSERT INTO checkpoint_policies (jid, every, keep) VALUES (?, ?, ?) "
                    "ON CONFLICT (jid) DO UPDATE SET every = excluded.every, keep = excluded.keep",
                    (jid, every, keep),
                )

    def policies(self) -> dict[str, tuple[float, int]]:
        """Every job's policy: jid -> (every, keep)."""
        with self._locked() as conn:
            rows = conn.execute("SELECT jid, every, keep FROM checkpoint_policies").fetchall()
        return {r["jid"]: (float(r["every"]), int(r["keep"])) for r in rows}


@dataclass
class Checkpoint:
    """One row of ``checkpoints``: a complete checkpoint of job ``jid``."""

    id: str
    jid: str
    path: str
    size: int
    compression: str
    streams: int
    leave_running: bool
    generation: int = 1
    phases: dict[str, float] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    status: str = COMMITTED
    owner: str | None = None
    """While pending: the dumping process (``processes.process_identity``)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def to_sql(self) -> dict[str, Any]:
        values = asdict(self)
        values["phases"] = json.dumps(self.phases)
        values["leave_running"] = int(self.leave_running)
        return values

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Checkpoint:
        values = {k: row[k] for k in row.keys()}  # noqa: SIM118 - sqlite3.Row
        values["phases"] = json.loads(values["phases"] or "{}")
        values["leave_running"] = bool(values["leave_running"])
        return cls(**values)
