"""``RemoteBackend``: the operations of ``client.Backend`` through the daemon's API.

Each call is an RPC of ``proto/daemon.proto``; its answer is turned back
into the library's objects (``convert``), so the CLI prints the same as
in-process. An error the daemon answered with becomes a ``RemoteError``
carrying its one line.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any, BinaryIO

from cedana_gpu.config import Config
from cedana_gpu.daemon import ops
from cedana_gpu.daemon.health import Result
from cedana_gpu.daemon.ops import DumpSpec, Events, RestoreSpec, RunSpec
from cedana_gpu.daemon.wire import ERROR_KEY, TOKEN_KEY, RemoteError
from cedana_gpu.errors import CedanaError
from cedana_gpu.jobs.store import Checkpoint, Job

PROBE_TIMEOUT = 2.0


def target(cfg: Config) -> str:
    """The gRPC target of the configured daemon."""
    address = str(cfg["address"])
    return f"unix:{address}" if cfg["protocol"] == "unix" else address


class RemoteBackend:
    """The operations through the daemon's API (``proto/daemon.proto``)."""

    where = "daemon"

    def __init__(self, cfg: Config, channel: Any, info: Any) -> None:
        from cedana_gpu.daemon.proto import daemon_pb2 as pb
        from cedana_gpu.daemon.proto import daemon_pb2_grpc as pb_grpc

        self.pb = pb
        self.cfg = cfg
        self.channel = channel
        self.stub = pb_grpc.DaemonStub(channel)
        self.info = info
        token = cfg["auth.token"]
        self.metadata = ((TOKEN_KEY, f"Bearer {token}"),) if token else ()

    def close(self) -> None:
        self.channel.close()

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        import grpc

        try:
            yield
        except grpc.RpcError as e:
            raise _remote_error(e, what, self.cfg) from None

    def _call(self, name: str, request: Any, what: str) -> Any:
        with self._errors(what):
            return getattr(self.stub, name)(request, metadata=self.metadata)

    def run(self, spec: RunSpec) -> Job:
        from cedana_gpu.daemon.convert import job_from_pb

        req = self.pb.RunReq(
            cmd=spec.cmd,
            jid=spec.jid or "",
            gpu=spec.gpu,
            gpu_driver=spec.driver if spec.gpu else "",
            gpu_engine=spec.engine,
            persistent_mounts=spec.persistent_mounts,
            env=ops.env_list(spec.env if spec.env is not None else os.environ),
            cwd=spec.cwd or os.getcwd(),
            policy=self.pb.CheckpointPolicy(every=spec.every, keep=spec.keep),
            stdin=spec.stdin,
        )
        return job_from_pb(self._call("Run", req, "run the job").job)

    def attach(self, jid: str, out: BinaryIO, stdin: BinaryIO | None = None) -> Job:
        from cedana_gpu.daemon.convert import job_from_pb

        received = 0

        def requests(first: Any, given: BinaryIO | None) -> Iterator[Any]:
            yield first
            if given is not None:  # our input, then end-of-file for the job
                for chunk in ops.read_input(given):
                    yield self.pb.AttachReq(stdin=chunk)
                yield self.pb.AttachReq(close_stdin=True)

        def stream(given: BinaryIO | None = None) -> Job:
            nonlocal received
            req = self.pb.AttachReq(jid=jid, offset=received)
            with self._errors(f"follow job {jid}"):
                for msg in self.stub.Attach(requests(req, given), metadata=self.metadata):
                    if msg.HasField("ended"):
                        return job_from_pb(msg.ended)
                    out.write(msg.output)
                    out.flush()
                    received += len(msg.output)
            raise RemoteError(f"the daemon stopped following job {jid} before it ended")

        try:
            return stream(stdin)
        except KeyboardInterrupt:
            # As in-process: Ctrl-C kills the job, and its end is still followed.
            with contextlib.suppress(CedanaError):
                self.kill(jid)
            with contextlib.suppress(CedanaError):
                stream()
            raise

    def jobs(self) -> list[Job]:
        from cedana_gpu.daemon.convert import job_from_pb

        return [job_from_pb(j) for j in self._call("List", self.pb.ListReq(), "list jobs").jobs]

    def get(self, jid: str) -> ops.JobDetail:
        from cedana_gpu.daemon.convert import detail_from_pb

        return detail_from_pb(self._call("Get", self.pb.GetReq(jid=jid, live=True), f"get {jid}"))

    def kill(self, jid: str) -> Job:
        from cedana_gpu.daemon.convert import job_from_pb

        return job_from_pb(self._call("Kill", self.pb.KillReq(jid=jid), f"kill job {jid}").job)

    def delete(self, jid: str, *, checkpoints: bool) -> list[str]:
        req = self.pb.DeleteReq(jid=jid, checkpoints=checkpoints)
        return list(self._call("Delete", req, f"delete job {jid}").deleted_checkpoints)

    def _progress(self, method: str, req: Any, events: Events, what: str) -> Any:
        bars = _Bars(sys.stderr.isatty() if events.progress is None else events.progress)
        try:
            with self._errors(what), bars:
                for event in getattr(self.stub, method)(req, metadata=self.metadata):
                    kind = event.WhichOneof("event")
                    if kind == "log":
                        events.report(event.log)
                    elif kind == "progress":
                        p = event.progress
                        if p.total or p.done:
                            bars.update(p.phase, p.done, p.total)
                            if events.on_bytes is not None:
                                events.on_bytes(p.phase, p.done, p.total)
                        elif events.on_phase is not None:
                            events.on_phase(p.phase)
                    elif kind == "result":
                        return event.result
        except KeyboardInterrupt:
            print(
                f"cedana: the daemon goes on to {what} (it owns the operation; see 'cedana ps')",
                file=sys.stderr,
            )
            raise
        raise RemoteError(f"the daemon ended the stream without a result ({what})")

    def dump(self, spec: DumpSpec, events: Events) -> dict[str, Any]:
        from cedana_gpu.daemon.convert import dump_from_pb

        req = self.pb.DumpReq(
            jid=spec.jid or "",
            pid=spec.pid or 0,
            dir=str(spec.directory.absolute()) if spec.directory else "",
            compression=spec.compression,
            stream=spec.streams,
            leave_running=spec.leave_running,
            signing_key=str(spec.signing_key.absolute()) if spec.signing_key else "",
            gpu_storage=spec.gpu_storage,
        )
        what = f"dump job {spec.jid}" if spec.jid else f"dump process {spec.pid}"
        return dump_from_pb(self._progress("DumpWithProgress", req, events, what))

    def restore(self, spec: RestoreSpec, events: Events) -> dict[str, Any]:
        from cedana_gpu.daemon.convert import restore_from_pb

        req = self.pb.RestoreReq(
            jid=spec.jid or "",
            path=str(spec.path.absolute()) if spec.path else "",
            new_jid=spec.new_jid or "",
            gpu_driver=spec.driver or "",
            signing_key=str(spec.signing_key.absolute()) if spec.signing_key else "",
            allow_unsigned=spec.allow_unsigned,
            gpu_map=spec.gpu_map,
        )
        what = f"restore job {spec.jid}" if spec.jid else f"restore {spec.path}"
        return restore_from_pb(self._progress("RestoreWithProgress", req, events, what))

    def checkpoints(self, jid: str | None, report: ops.Report) -> list[Checkpoint]:
        from cedana_gpu.daemon.convert import checkpoint_from_pb

        req = self.pb.ListCheckpointsReq(jid=jid or "")
        resp = self._call("ListCheckpoints", req, "list checkpoints")
        return [checkpoint_from_pb(c) for c in resp.checkpoints]

    def get_checkpoint(self, cid: str) -> ops.CheckpointDetail:
        from cedana_gpu.daemon.convert import checkpoint_detail_from_pb

        req = self.pb.GetCheckpointReq(id=cid)
        return checkpoint_detail_from_pb(self._call("GetCheckpoint", req, f"get {cid}"))

    def delete_checkpoint(self, cid: str) -> Checkpoint:
        from cedana_gpu.daemon.convert import checkpoint_from_pb

        req = self.pb.DeleteCheckpointReq(id=cid)
        return checkpoint_from_pb(self._call("DeleteCheckpoint", req, f"delete {cid}").checkpoint)

    def prune(self, jid: str | None, keep: int) -> list[Checkpoint]:
        from cedana_gpu.daemon.convert import checkpoint_from_pb

        req = self.pb.PruneCheckpointsReq(jid=jid or "", keep=keep)
        resp = self._call("PruneCheckpoints", req, "prune checkpoints")
        return [checkpoint_from_pb(c) for c in resp.deleted]

    def set_policy(self, jid: str, every: float, keep: int) -> Job:
        from cedana_gpu.daemon.convert import job_from_pb

        req = self.pb.SetCheckpointPolicyReq(
            jid=jid, policy=self.pb.CheckpointPolicy(every=every, keep=keep)
        )
        return job_from_pb(self._call("SetCheckpointPolicy", req, f"set job {jid}'s policy").job)

    def freeze(self, jid: str, *, frozen: bool) -> None:
        if frozen:
            self._call("Freeze", self.pb.FreezeReq(jid=jid), f"freeze job {jid}")
        else:
            self._call("Unfreeze", self.pb.UnfreezeReq(jid=jid), f"unfreeze job {jid}")

    def health(self) -> list[Result]:
        resp = self._call("HealthCheck", self.pb.HealthCheckReq(full=True), "check the node")
        return [Result(r.name, r.status, r.detail, r.hint) for r in resp.results]


class _Bars:
    """The daemon's byte counts drawn as the in-process dump draws them (a terminal only)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bars: dict[str, Any] = {}

    def update(self, phase: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from cedana_gpu.checkpoint.progress import Progress

        bar = self.bars.get(phase)
        if bar is None:
            for other in self.bars.values():
                other.close()
            bar = self.bars[phase] = Progress(phase, total, enabled=True)
        if done > bar.done:
            bar.add(done - bar.done)

    def __enter__(self) -> _Bars:
        return self

    def __exit__(self, *exc: object) -> None:
        for bar in self.bars.values():
            bar.close()


def _remote_error(e: Any, what: str, cfg: Config) -> RemoteError:
    import grpc

    code = e.code() if hasattr(e, "code") else None
    details = e.details() if hasattr(e, "details") else None
    metadata = dict(e.trailing_metadata() or ()) if hasattr(e, "trailing_metadata") else {}
    if ERROR_KEY in metadata and details:
        return RemoteError(details)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return RemoteError(f"the daemon at {cfg['address']} refused us: {details}")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return RemoteError(
            f"lost the daemon at {cfg['address']} while trying to {what}: see 'cedana ps' "
            "for what became of it"
        )
    return RemoteError(f"the daemon could not {what}: {details or code} (see its log)")


def connect(cfg: Config, *, timeout: float = PROBE_TIMEOUT) -> RemoteBackend | None:
    """The daemon the configuration names, if it answers; None otherwise."""
    # gRPC's core logs a failed handshake on stderr; the CLI says it in one line.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    import grpc

    from cedana_gpu.daemon import tls
    from cedana_gpu.daemon.proto import daemon_pb2 as pb
    from cedana_gpu.daemon.proto import daemon_pb2_grpc as pb_grpc

    channel = tls.channel(cfg, target(cfg))
    token = cfg["auth.token"]
    metadata = ((TOKEN_KEY, f"Bearer {token}"),) if token else ()
    try:
        info = pb_grpc.DaemonStub(channel).HealthCheck(
            pb.HealthCheckReq(full=False), timeout=timeout, metadata=metadata
        )
    except grpc.RpcError as e:
        channel.close()
        if e.code() == grpc.StatusCode.UNAUTHENTICATED:
            raise RemoteError(f"the daemon at {cfg['address']} refused us: {e.details()}") from None
        if cfg["protocol"] == "tcp" and e.code() == grpc.StatusCode.UNAVAILABLE:
            why = tls.explain_unavailable(cfg, e.details() or "")
            if why is not None:
                raise RemoteError(why) from None
        return None
    return RemoteBackend(cfg, channel, info.daemon)
