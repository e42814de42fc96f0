"""The operations behind every CLI verb and every RPC, on the library.

One function per operation, returning the library's objects. The CLI calls
them in-process (``client.LocalBackend``); the daemon calls the same ones in
its own threads (``server``) and sends the result as a message
(``convert``). Nothing here prints: notes go to a ``report`` callback.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from cedana_gpu.errors import CedanaError, JobError, StoreError
from cedana_gpu.jobs import lifecycle, processes, statedir
from cedana_gpu.jobs.store import FINAL_STATES, PENDING, Checkpoint, Job, JobStore

Report = Callable[[str], None]
Writer = Callable[[bytes], None]
INFO_TIMEOUT = 10.0
FOLLOW_POLL = 0.05


class PolicyError(CedanaError):
    """A periodic checkpoint policy cannot be set."""


@dataclass
class RunSpec:
    cmd: list[str]
    gpu: bool = False
    driver: str = "none"
    jid: str | None = None
    engine: str = ""
    persistent_mounts: list[str] = field(default_factory=list)
    env: dict[str, str] | None = None
    cwd: str | None = None
    every: float = 0.0
    keep: int = 0
    stdin: bool = False
    """``exec -i``: the job reads input sent through attach, not /dev/null."""


@dataclass
class DumpSpec:
    jid: str | None = None
    pid: int | None = None
    directory: Path | None = None
    compression: str = "none"
    streams: int = 1
    leave_running: bool = False
    signing_key: Path | None = None
    gpu_storage: str = "auto"


@dataclass
class RestoreSpec:
    jid: str | None = None
    path: Path | None = None
    new_jid: str | None = None
    driver: str | None = None
    signing_key: Path | None = None
    allow_unsigned: bool = False
    gpu_map: list[str] = field(default_factory=list)


@dataclass
class Events:
    """What an operation tells its caller while it runs."""

    report: Report
    on_phase: Callable[[str], None] | None = None
    on_bytes: Callable[[str, int, int], None] | None = None
    """Told (phase, bytes done, total) of a GPU job's long phases, as its controller counts."""
    progress: bool | None = False
    """Draw progress bars on stderr (None: when stderr is a terminal)."""


POLL_PROGRESS = 0.2


@contextlib.contextmanager
def controller_progress(socket: Path, events: Events) -> Iterator[None]:
    """While the body runs, pass the controller's byte counts (its ``progress`` op)
    on to ``events.on_bytes``; nothing without a listener."""
    tell = events.on_bytes
    if tell is None:
        yield
        return
    from cedana_gpu.controller import control

    stop = threading.Event()

    def poll() -> None:
        last: tuple[str, int, int] | None = None
        while not stop.wait(POLL_PROGRESS):
            try:
                snap = control.request(socket, {"op": "progress"}, timeout=2)
            except control.ControlError:
                continue  # not there yet (a restore's controller), or busy
            now = (str(snap.get("phase") or ""), int(snap.get("done") or 0),
                   int(snap.get("total") or 0))  # fmt: skip
            if now[0] and now != last:
                tell(*now)
                last = now

    t = threading.Thread(target=poll, name="progress", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(timeout=5)


def open_store() -> tuple[Path, JobStore]:
    return lifecycle.open_store()


# ---- jobs ----------------------------------------------------------------------


def run(spec: RunSpec) -> lifecycle.StartedJob:
    """Start a job and return once it runs (``cedana exec``)."""
    if spec.every < 0 or spec.keep < 0:
        raise PolicyError("--checkpoint-every and --keep cannot be negative")
    started = lifecycle.start_job(
        spec.cmd,
        gpu=spec.gpu,
        driver=spec.driver,
        jid=spec.jid,
        env=spec.env,
        cwd=spec.cwd,
        persistent_mounts=spec.persistent_mounts,
        engine=spec.engine or "auto",
        stdin=spec.stdin,
    )
    if spec.every > 0:
        started.store.set_policy(started.job.jid, spec.every, spec.keep)
    return started


def list_jobs(store: JobStore) -> list[Job]:
    return [lifecycle.refresh(store, j) for j in store.list()]


@dataclass
class JobDetail:
    """``cedana job inspect``: the record, its status, its policy, the controller's live info."""

    job: Job
    status: str
    policy: tuple[float, int] | None = None
    live: dict[str, Any] | None = None
    live_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc = dict(self.job.to_json(), status=self.status, live=self.live)
        doc["policy"] = {"every": self.policy[0], "keep": self.policy[1]} if self.policy else None
        if self.live_error is not None:
            doc["live_error"] = self.live_error
        return doc


def get_job(store: JobStore, state: Path, jid: str, *, live: bool) -> JobDetail:
    from cedana_gpu.controller import control

    job = lifecycle.refresh(store, store.require(jid))
    detail = JobDetail(job, lifecycle.describe(job), store.policies().get(jid))
    if live and job.active:
        try:
            answer = control.control_request(
                job.jid, {"op": "info"}, timeout=INFO_TIMEOUT, state=state
            )
            answer.pop("ok", None)
            detail.live = answer
        except control.ControlError as e:
            detail.live_error = str(e)
    return detail


def kill(store: JobStore, jid: str) -> Job:
    return lifecycle.kill_job(store, jid)


def delete_job(store: JobStore, state: Path, jid: str, *, checkpoints: bool) -> list[str]:
    """Remove an ended job's record and its directory (logs); with ``checkpoints``
    its checkpoints too. The ids of the checkpoints removed."""
    job = lifecycle.refresh(store, store.require(jid))
    if job.active:
        raise JobError(f"job {jid} is {lifecycle.describe(job)}: kill it first ('cedana job kill')")
    removed: list[str] = []
    if checkpoints:
        for ckpt in store.checkpoints(jid):
            delete_checkpoint(store, ckpt.id)
            removed.append(ckpt.id)
    store.set_policy(jid, 0, 0)
    store.delete(jid)
    shutil.rmtree(statedir.job_dir(state, jid), ignore_errors=True)
    return removed


def set_policy(store: JobStore, jid: str, every: float, keep: int) -> Job:
    if every < 0 or keep < 0:
        raise PolicyError("the interval and --keep cannot be negative")
    job = lifecycle.refresh(store, store.require(jid))
    if every > 0 and not job.active:
        raise PolicyError(f"job {jid} is {lifecycle.describe(job)}: only a running job is dumped")
    store.set_policy(jid, every, keep)
    return job


def follow_log(
    store: JobStore, jid: str, write: Callable[[bytes], None], *, offset: int = 0
) -> Job:
    """Send job ``jid``'s log from byte ``offset`` until the job has ended and
    its controller is gone; the job as it ended."""
    job = store.require(jid)
    log_path = Path(job.log_path or statedir.job_dir(store.path.parent, jid) / statedir.JOB_LOG)
    tail = lifecycle.LogTail(log_path, offset)
    while True:
        job = lifecycle.refresh(store, store.require(jid))
        done = job.state in FINAL_STATES and not processes.process_alive(job.controller_pid)
        got = tail.drain(write)
        if done:
            tail.drain(write)
            return job
        if not got:
            time.sleep(FOLLOW_POLL)


INPUT_CHUNK = 64 << 10


def read_input(stdin: BinaryIO) -> Iterator[bytes]:
    """``stdin``'s bytes as they come (a terminal's line by line), until end-of-file."""
    fd = stdin.fileno()
    while chunk := os.read(fd, INPUT_CHUNK):
        yield chunk


class JobInput:
    """Input for a job started with ``exec -i`` (``jobs.job_stdin``): its FIFO, written
    as chunks come, and closed (the job then sees end-of-file) on ``close``."""

    def __init__(self, state: Path, jid: str, gone: threading.Event | None = None) -> None:
        self.state = state
        self.jid = jid
        self.fd: int | None = None
        self.gone = gone
        """Set when the client that sends is gone: a write waiting on a full FIFO gives up."""

    def require(self) -> None:
        """StdinError unless the job was started with an input (``exec -i``)."""
        from cedana_gpu.jobs import job_stdin

        if not job_stdin.fifo_path(statedir.job_dir(self.state, self.jid)).exists():
            raise job_stdin.StdinError(job_stdin.no_input(self.jid))

    def send(self, data: bytes) -> None:
        from cedana_gpu.jobs import job_stdin

        if self.fd is None:
            self.fd = job_stdin.open_writer(statedir.job_dir(self.state, self.jid), self.jid)
        job_stdin.write_all(self.fd, data, self.jid, self.gone)

    def close(self) -> None:
        """Close the job's input: this writer, and the controller's keeper."""
        from cedana_gpu.controller import control
        from cedana_gpu.jobs import job_stdin

        self.release()
        try:
            control.control_request(
                self.jid, {"op": "close_stdin"}, timeout=INFO_TIMEOUT, state=self.state
            )
        except control.ControlError as e:
            raise job_stdin.StdinError(f"cannot close job {self.jid}'s input: {e}") from None

    def release(self) -> None:
        """Stop writing (the job keeps its input open: another client may attach)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# ---- checkpoint / restore ---------------------------------------------------------


def check_dump() -> None:
    """What a dump refuses before it touches the state directory (one line)."""
    from cedana_gpu.cr.dump import require_root

    require_root()


def check_restore(spec: RestoreSpec) -> None:
    """What a restore refuses before it touches the state directory (one line)."""
    from cedana_gpu.cr.dump import require_root

    if spec.jid is None and spec.path is None:
        raise JobError("name a job (restore job ID) or a checkpoint (--path P)")
    require_root()


def dump(store: JobStore, state: Path, spec: DumpSpec, events: Events) -> dict[str, Any]:
    """``cedana dump job|process``: the dump's document (``DumpResult.to_json()``)."""
    from cedana_gpu.cr.dump import find_job_by_pid

    check_dump()
    if spec.pid is not None:
        job = find_job_by_pid(store, spec.pid)
    else:
        if not spec.jid:
            raise JobError("name the job to dump")
        job = store.require(spec.jid)
    socket = Path(job.socket_path or statedir.job_dir(state, job.jid) / statedir.CONTROL_SOCKET)
    with controller_progress(socket, events) if job.gpu else contextlib.nullcontext():
        result = _dump(store, state, job, spec, events)
    return result.to_json()


def _dump(store: JobStore, state: Path, job: Job, spec: DumpSpec, events: Events) -> Any:
    from cedana_gpu.cr.dump import DumpOptions, dump_job

    return dump_job(
        store,
        state,
        job,
        DumpOptions(
            directory=spec.directory.absolute() if spec.directory else None,
            compression=spec.compression,
            streams=spec.streams,
            leave_running=spec.leave_running,
            signing_key=spec.signing_key,
            gpu_storage=spec.gpu_storage,
            progress=events.progress,
            on_phase=events.on_phase,
            report=events.report,
        ),
    )


def restore(
    store: JobStore, state: Path, spec: RestoreSpec, events: Events
) -> tuple[dict[str, Any], lifecycle.StartedJob]:
    """``cedana restore job``: the restore's document and the started job."""
    from cedana_gpu.cr.restore import restore_job

    check_restore(spec)
    new_jid = spec.new_jid or lifecycle.new_job_id()
    socket = statedir.job_dir(state, new_jid) / statedir.CONTROL_SOCKET
    with controller_progress(socket, events):
        result = restore_job(
            store,
            state,
            jid=spec.jid,
            path=spec.path,
            new_jid=new_jid,
            driver=spec.driver,
            signing_key=spec.signing_key,
            allow_unsigned=spec.allow_unsigned,
            gpu_map=list(spec.gpu_map),
            progress=events.progress,
            on_phase=events.on_phase,
            report=events.report,
        )
    return result.to_json(), result.started


# ---- checkpoints -------------------------------------------------------------------


def list_checkpoints(
    store: JobStore, state: Path, jid: str | None, report: Report
) -> list[Checkpoint]:
    from cedana_gpu.cr import recovery

    if jid:
        store.require(jid)
    recovery.recover(store, state, jid or None, report)
    return store.checkpoints(jid or None)


@dataclass
class CheckpointDetail:
    """``cedana checkpoint inspect``: the record, and the manifest of a directory checkpoint."""

    checkpoint: Checkpoint
    manifest: dict[str, Any] | None = None
    manifest_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"checkpoint": self.checkpoint.to_json(), "manifest": self.manifest}
        if self.manifest_error is not None:
            doc["manifest_error"] = self.manifest_error
        return doc


def get_checkpoint(store: JobStore, cid: str) -> CheckpointDetail:
    from cedana_gpu.checkpoint import CheckpointError, load_manifest

    detail = CheckpointDetail(require_checkpoint(store, cid))
    path = Path(detail.checkpoint.path)
    if path.is_dir():
        try:
            detail.manifest = load_manifest(path).to_json()
        except CheckpointError as e:
            detail.manifest_error = str(e)
    elif path.exists():
        detail.manifest_error = "an archive: its manifest is inside (restore checks it)"
    else:
        detail.manifest_error = f"{path} does not exist any more"
    return detail


def require_checkpoint(store: JobStore, cid: str) -> Checkpoint:
    ckpt = store.get_checkpoint(cid, status=None)
    if ckpt is None:
        raise StoreError(f"no checkpoint {cid!r} (see 'cedana checkpoint list')")
    if ckpt.status == PENDING:
        raise StoreError(f"checkpoint {cid} is being written by a dump: wait until it ends")
    return ckpt


def delete_checkpoint(store: JobStore, cid: str) -> Checkpoint:
    """Remove a checkpoint's files, then its record."""
    ckpt = require_checkpoint(store, cid)
    path = Path(ckpt.path)
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as e:
        raise StoreError(f"cannot remove checkpoint {cid} ({path}): {e.strerror or e}") from None
    store.delete_checkpoint(cid)
    return ckpt


def prune(store: JobStore, jid: str | None, keep: int) -> list[Checkpoint]:
    """Delete all but the newest ``keep`` checkpoints of the job (of each job)."""
    if jid:
        store.require(jid)
    by_job: dict[str, list[Checkpoint]] = {}
    for ckpt in store.checkpoints(jid or None):
        by_job.setdefault(ckpt.jid, []).append(ckpt)
    deleted: list[Checkpoint] = []
    for found in by_job.values():  # oldest first
        for ckpt in found[: max(len(found) - keep, 0)]:
            with contextlib.suppress(StoreError):
                deleted.append(delete_checkpoint(store, ckpt.id))
    return deleted


def env_list(env: Mapping[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in env.items()]


def env_dict(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if sep:
            out[key] = value
    return out
