"""The CLI's side: every verb's operation, in-process or through the daemon.

(``remote.RemoteBackend`` is the daemon's side of ``Backend``; this module is
imported at every CLI start, so it stays small.)

``backend(cfg, no_server=...)`` picks one: the daemon when its socket answers
(and it serves this state directory), else the operations in this process.
Both return the library's objects, so each verb formats its result once,
whatever produced it:

    b = backend(config.load())
    doc = b.dump(DumpSpec(jid="train1"), events)   # a DumpResult.to_json() either way

Errors are ``CedanaError``s either way: the daemon sends its one line as
the status details and ``wire.RemoteError`` carries it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from cedana_gpu.config import Config
from cedana_gpu.daemon import ops
from cedana_gpu.daemon.ops import DumpSpec, Events, RestoreSpec, RunSpec
from cedana_gpu.jobs import lifecycle, statedir
from cedana_gpu.jobs.store import Checkpoint, Job

if TYPE_CHECKING:  # only when they are used: every CLI start imports this module
    from cedana_gpu.daemon.health import Result


class Backend(Protocol):
    """The operations of the CLI's verbs. ``where`` says who runs them."""

    where: str

    def run(self, spec: RunSpec) -> Job: ...
    def attach(self, jid: str, out: BinaryIO, stdin: BinaryIO | None = None) -> Job: ...
    def jobs(self) -> list[Job]: ...
    def get(self, jid: str) -> ops.JobDetail: ...
    def kill(self, jid: str) -> Job: ...
    def delete(self, jid: str, *, checkpoints: bool) -> list[str]: ...
    def dump(self, spec: DumpSpec, events: Events) -> dict[str, Any]: ...
    def restore(self, spec: RestoreSpec, events: Events) -> dict[str, Any]: ...
    def checkpoints(self, jid: str | None, report: ops.Report) -> list[Checkpoint]: ...
    def get_checkpoint(self, cid: str) -> ops.CheckpointDetail: ...
    def delete_checkpoint(self, cid: str) -> Checkpoint: ...
    def prune(self, jid: str | None, keep: int) -> list[Checkpoint]: ...
    def set_policy(self, jid: str, every: float, keep: int) -> Job: ...
    def freeze(self, jid: str, *, frozen: bool) -> None: ...
    def health(self) -> list[Result]: ...


class LocalBackend:
    """The operations in this process (``--no-server``, or no daemon)."""

    where = "in-process"

    def __init__(self) -> None:
        self._started: dict[str, lifecycle.StartedJob] = {}

    @contextlib.contextmanager
    def _store(self) -> Iterator[tuple[Path, Any]]:
        state, store = ops.open_store()
        with store:
            yield state, store

    def run(self, spec: RunSpec) -> Job:
        if spec.every > 0:
            raise ops.PolicyError(
                "periodic checkpoints (--checkpoint-every) need the daemon: start it with "
                "'cedana daemon start'"
            )
        started = ops.run(spec)
        self._started[started.job.jid] = started
        return started.job

    def attach(self, jid: str, out: BinaryIO, stdin: BinaryIO | None = None) -> Job:
        started = self._started.get(jid)
        if started is not None:
            if stdin is not None:
                _forward_input(ops.JobInput(started.state, jid), stdin)
            return lifecycle.follow(started, out)
        with self._store() as (state, store):
            if stdin is not None:
                _forward_input(ops.JobInput(state, jid), stdin)
            return ops.follow_log(store, jid, _writer(out))

    def jobs(self) -> list[Job]:
        with self._store() as (_state, store):
            return ops.list_jobs(store)

    def get(self, jid: str) -> ops.JobDetail:
        with self._store() as (state, store):
            return ops.get_job(store, state, jid, live=True)

    def kill(self, jid: str) -> Job:
        with self._store() as (_state, store):
            return ops.kill(store, jid)

    def delete(self, jid: str, *, checkpoints: bool) -> list[str]:
        with self._store() as (state, store):
            return ops.delete_job(store, state, jid, checkpoints=checkpoints)

    def dump(self, spec: DumpSpec, events: Events) -> dict[str, Any]:
        ops.check_dump()
        with self._store() as (state, store):
            return ops.dump(store, state, spec, events)

    def restore(self, spec: RestoreSpec, events: Events) -> dict[str, Any]:
        ops.check_restore(spec)
        state, store = ops.open_store()  # stays open: attach follows the restored job
        doc, started = ops.restore(store, state, spec, events)
        self._started[started.job.jid] = started
        return doc

    def checkpoints(self, jid: str | None, report: ops.Report) -> list[Checkpoint]:
        with self._store() as (state, store):
            return ops.list_checkpoints(store, state, jid, report)

    def get_checkpoint(self, cid: str) -> ops.CheckpointDetail:
        with self._store() as (_state, store):
            return ops.get_checkpoint(store, cid)

    def delete_checkpoint(self, cid: str) -> Checkpoint:
        with self._store() as (_state, store):
            return ops.delete_checkpoint(store, cid)

    def prune(self, jid: str | None, keep: int) -> list[Checkpoint]:
        with self._store() as (_state, store):
            return ops.prune(store, jid, keep)

    def set_policy(self, jid: str, every: float, keep: int) -> Job:
        raise ops.PolicyError(
            "periodic checkpoints need the daemon: start it with 'cedana daemon start'"
        )

    def freeze(self, jid: str, *, frozen: bool) -> None:
        # A freeze lasts as long as the connection that asked for it: only a
        # process that stays (the daemon) can hold one.
        raise ops.PolicyError(
            "freezing a job needs the daemon (it holds the job frozen): start it with "
            "'cedana daemon start'"
        )

    def health(self) -> list[Result]:
        from cedana_gpu.daemon.health import run_checks

        return run_checks()


def _forward_input(given: ops.JobInput, stdin: BinaryIO) -> None:
    """Our stdin to the job's, in a thread; at our end-of-file the job's input closes."""
    import sys
    import threading

    from cedana_gpu.errors import CedanaError

    def pump() -> None:
        try:
            for chunk in ops.read_input(stdin):
                given.send(chunk)
            given.close()
        except CedanaError as e:
            print(f"cedana: {e}", file=sys.stderr)
        finally:
            given.release()

    threading.Thread(target=pump, name="input", daemon=True).start()


def _writer(out: BinaryIO) -> ops.Writer:
    def write(data: bytes) -> None:
        out.write(data)
        out.flush()

    return write


def same_state(info: Any) -> bool:
    """Whether the daemon serves the state directory this process would use."""
    ours = statedir.default_state_dir()
    try:
        return Path(info.state_dir).resolve() == ours.resolve()
    except OSError:
        return False


def backend(cfg: Config, *, no_server: bool = False) -> Backend:
    """The daemon when it answers and serves our state directory; else in-process."""
    if no_server:
        return LocalBackend()
    if cfg["protocol"] == "unix" and not os.path.exists(str(cfg["address"])):
        return LocalBackend()  # no socket, no daemon (and no gRPC to import)
    from cedana_gpu.daemon.remote import connect

    remote = connect(cfg)
    if remote is None:
        return LocalBackend()
    if cfg["protocol"] == "unix" and not same_state(remote.info):
        # A daemon of another state directory (another CEDANA_STATE_DIR, a
        # test's own): its jobs are not ours.
        remote.close()
        return LocalBackend()
    return remote
