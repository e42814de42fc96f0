"""``cedana daemon start``: the API of ``proto/daemon.proto``, served over gRPC.

The daemon owns every operation it runs. A dump or restore runs in a thread
of the daemon (``Operation``), not in the RPC's handler: the handler only
waits for it and relays its events, so a client that disconnects or is
killed stops nothing, and the operation completes, or fails and is undone by
its pipeline, as it would in the CLI. Dumps of different jobs run at once;
a second dump of a job that is being dumped is refused in one line.

Jobs' controllers are started detached (their own session), so they outlive
the daemon; a daemon that starts again settles the store with what really
runs (``reconcile``) and takes up the periodic checkpoint policies again.

Listening: a unix socket, mode 0600 (created under umask 0177, so it is never
reachable by others, not even for an instant), or TCP when configured, only
with a token (``auth.token``) that every call must send as
``authorization: Bearer <token>`` (a call without it is refused, saying so),
or with TLS that requires client certificates (``tls.client_ca``), or both.
TLS (``tls.cert``, ``tls.key``: ``daemon.tls``) encrypts the connection; alone
it does not say who the client is, so it does not replace the token.
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import hmac
import itertools
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

import cedana_gpu
from cedana_gpu.config import Config
from cedana_gpu.daemon import convert, health, ops, tls
from cedana_gpu.daemon.pool import ControllerPool
from cedana_gpu.daemon.proto import daemon_pb2 as pb
from cedana_gpu.daemon.proto import daemon_pb2_grpc as pb_grpc
from cedana_gpu.daemon.wire import ERROR_KEY, TOKEN_KEY
from cedana_gpu.errors import CedanaError, SetupError
from cedana_gpu.gpu_info import default_driver_kind
from cedana_gpu.jobs import lifecycle, statedir
from cedana_gpu.jobs.store import JobStore

log = logging.getLogger("cedana.daemon")

MAX_WORKERS = 64
"""RPCs served at once (each attach and each waiting dump holds one)."""
SHUTDOWN_GRACE = 5.0
ATTACH_CHUNK = 64 << 10
FREEZE_DEFAULT_MS = 30_000


class DaemonError(SetupError):
    """The daemon cannot start (its socket, its configuration)."""


class Busy(CedanaError):
    """Another operation holds the job."""


class _ClientGone(Exception):
    """The client of an attach went away."""


_CODES: dict[str, grpc.StatusCode] = {
    "NoSuchJob": grpc.StatusCode.NOT_FOUND,
    "DuplicateJob": grpc.StatusCode.ALREADY_EXISTS,
    "Busy": grpc.StatusCode.FAILED_PRECONDITION,
}


def _abort(context: grpc.ServicerContext, e: CedanaError) -> None:
    text = str(e)
    line = text.splitlines()[0] if text else type(e).__name__
    context.set_trailing_metadata(((ERROR_KEY, type(e).__name__),))
    context.abort(_CODES.get(type(e).__name__, grpc.StatusCode.FAILED_PRECONDITION), line)


@dataclass(eq=False)
class Operation:
    """One dump or restore, run by the daemon in a thread of its own."""

    name: str
    work: Callable[[ops.Events], Any]
    events: queue.Queue[tuple[str, Any]] = field(default_factory=queue.Queue)
    result: Any = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def start(self, on_end: Callable[[Operation], None]) -> None:
        def body() -> None:
            events = ops.Events(
                report=lambda line: self._emit("log", line),
                on_phase=lambda phase: self._emit("phase", phase),
                on_bytes=lambda phase, done, total: self._emit("bytes", (phase, done, total)),
                progress=False,
            )
            try:
                self.result = self.work(events)
            except BaseException as e:  # handed to whoever waits, and logged
                self.error = e
                if not isinstance(e, CedanaError):
                    log.exception("%s failed", self.name)
                else:
                    log.info("%s failed: %s", self.name, e)
            finally:
                self.done.set()
                self.events.put(("end", None))
                on_end(self)

        threading.Thread(target=body, name=self.name, daemon=True).start()

    def _emit(self, kind: str, value: Any) -> None:
        if kind == "log":
            log.info("%s: %s", self.name, value)
        self.events.put((kind, value))


class Daemon:
    """The daemon's state: its configuration, state directory and running operations."""

    def __init__(self, cfg: Config, state: Path) -> None:
        self.cfg = cfg
        self.state = state
        self.started = time.time()
        self._lock = threading.Lock()
        self._busy: dict[str, str] = {}
        """jid -> what holds it (a dump)."""
        self._operations: set[Operation] = set()
        self._controllers: dict[str, Any] = {}
        """jid -> Popen of the controllers this daemon started (reaped here)."""
        self._frozen: dict[str, Any] = {}
        """jid -> the control connection holding the job frozen (Freeze .. Unfreeze)."""
        self.stopping = threading.Event()
        self.pool: ControllerPool | None = None
        from cedana_gpu.daemon.periodic import Scheduler

        self.scheduler = Scheduler(self)

    @contextlib.contextmanager
    def store(self) -> Iterator[JobStore]:
        _state, store = lifecycle.open_store(self.state)
        with store:
            yield store

    # ---- operations --------------------------------------------------------------

    @contextlib.contextmanager
    def holding(self, jid: str, what: str) -> Iterator[None]:
        with self._lock:
            if jid in self._busy:
                raise Busy(f"job {jid} is busy ({self._busy[jid]} in the daemon): try again later")
            self._busy[jid] = what
        try:
            yield
        finally:
            with self._lock:
                self._busy.pop(jid, None)

    def is_busy(self, jid: str) -> bool:
        with self._lock:
            return jid in self._busy

    def launch(self, name: str, work: Callable[[ops.Events], Any]) -> Operation:
        op = Operation(name, work)
        with self._lock:
            self._operations.add(op)

        def ended(o: Operation) -> None:
            with self._lock:
                self._operations.discard(o)

        op.start(ended)
        return op

    def wait_operations(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                running = list(self._operations)
            if not running:
                return True
            for op in running:
                left = None if deadline is None else max(deadline - time.monotonic(), 0)
                op.done.wait(left)
            if deadline is not None and time.monotonic() >= deadline:
                with self._lock:
                    return not self._operations

    def dump(self, spec: ops.DumpSpec, events: ops.Events) -> dict[str, Any]:
        with self.store() as store:
            jid = spec.jid
            if spec.pid:
                from cedana_gpu.cr.dump import find_job_by_pid

                jid = find_job_by_pid(store, spec.pid).jid
                spec = dataclasses.replace(spec, jid=jid, pid=None)
            with self.holding(jid or "", "a dump"):
                return ops.dump(store, self.state, spec, events)

    def adopt(self, started: lifecycle.StartedJob) -> None:
        """Keep the controller this daemon started, to reap it when it exits."""
        with self._lock:
            self._controllers[started.job.jid] = started.controller

    def reap(self) -> None:
        with self._lock:
            for jid, proc in list(self._controllers.items()):
                if proc.poll() is not None:
                    del self._controllers[jid]

    def freeze(self, jid: str, timeout_ms: int) -> None:
        from cedana_gpu.controller import control

        with self.store() as store:
            job = lifecycle.refresh(store, store.require(jid))
        if not job.active or not job.gpu or not job.socket_path:
            raise Busy(f"job {jid} is not a running GPU job ({lifecycle.describe(job)})")
        with self._lock:
            if jid in self._frozen:
                return
        try:
            client = control.ControlClient(Path(job.socket_path))
        except control.ControlError as e:
            raise Busy(f"cannot freeze job {jid}: {e}") from None
        try:
            client.call({"op": "freeze", "timeout_ms": timeout_ms}, timeout=timeout_ms / 1000 + 30)
        except control.ControlError as e:
            client.close()
            raise Busy(f"cannot freeze job {jid}: {e}") from None
        with self._lock:
            self._frozen[jid] = client

    def unfreeze(self, jid: str) -> None:
        from cedana_gpu.controller import control

        with self._lock:
            client = self._frozen.pop(jid, None)
        if client is None:
            raise Busy(f"job {jid} is not frozen by this daemon")
        # The controller also unfreezes when the freezing connection closes.
        with contextlib.suppress(control.ControlError):
            client.call({"op": "unfreeze"}, timeout=30)
        client.close()

    # ---- the warm controller pool -------------------------------------------------

    def start_pool(self) -> None:
        """``gpu.pool_size`` standby controllers of the default driver (``CEDANA_GPU_DRIVER``,
        else system); a driver asked for later gets its own standbys from then on."""
        size = int(self.cfg["gpu.pool_size"])
        if not size:
            return
        try:
            kind = default_driver_kind()
        except CedanaError as e:
            log.warning("controller pool: %s; no standby controllers", e)
            return
        self.pool = ControllerPool(size, self.state, [kind])
        self.pool.start()
        lifecycle.use_controller_pool(self.pool)
        log.info("controller pool: keeping %d %s controller(s) warm", size, kind)

    def stop_pool(self) -> None:
        if self.pool is not None:
            lifecycle.use_controller_pool(None)
            self.pool.close()

    # ---- start-up ----------------------------------------------------------------

    def reconcile(self) -> None:
        """Settle the store with what really runs (a restarted daemon)."""
        from cedana_gpu.cr import recovery

        with self.store() as store:
            recovery.recover(store, self.state, None, lambda line: log.info("%s", line))
            running = 0
            for job in store.list():
                job = lifecycle.refresh(store, job)
                if job.active:
                    running += 1
                    log.info("found job %s running (pid %s)", job.jid, job.pid)
            policies = store.policies()
        for jid, (every, keep) in policies.items():
            self.scheduler.set(jid, every, keep)
        log.info("%d job(s) running, %d periodic policies", running, len(policies))


class Servicer(pb_grpc.DaemonServicer):
    """Each RPC: its request to the operation's arguments, the result to a message."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon

    @contextlib.contextmanager
    def _errors(self, context: grpc.ServicerContext) -> Iterator[None]:
        try:
            yield
        except CedanaError as e:
            _abort(context, e)

    # ---- jobs --------------------------------------------------------------------

    def Run(self, request: pb.RunReq, context: grpc.ServicerContext) -> pb.RunResp:
        with self._errors(context):
            env = ops.env_dict(request.env) if request.env else dict(os.environ)
            shm = self.d.cfg["gpu.shm_size"]
            if shm and "CEDANA_GPU_STAGING_BYTES" not in env:
                env["CEDANA_GPU_STAGING_BYTES"] = str(shm)
            spec = ops.RunSpec(
                cmd=list(request.cmd),
                gpu=request.gpu,
                driver=request.gpu_driver or (default_driver_kind() if request.gpu else "none"),
                jid=request.jid or None,
                engine=request.gpu_engine or self.d.cfg["gpu.engine"],
                persistent_mounts=list(request.persistent_mounts),
                env=env,
                cwd=request.cwd or None,
                every=request.policy.every,
                keep=request.policy.keep,
                stdin=request.stdin,
            )
            started = ops.run(spec)
            self.d.adopt(started)
            if spec.every > 0:
                self.d.scheduler.set(started.job.jid, spec.every, spec.keep)
            policy = (spec.every, spec.keep) if spec.every > 0 else None
            job = started.job
            msg = convert.job_to_pb(job, status=lifecycle.describe(job), policy=policy)
            return pb.RunResp(job=msg)
        raise AssertionError("unreachable")

    def Get(self, request: pb.GetReq, context: grpc.ServicerContext) -> pb.GetResp:
        with self._errors(context), self.d.store() as store:
            detail = ops.get_job(store, self.d.state, request.jid, live=request.live)
            return convert.detail_to_pb(detail)
        raise AssertionError("unreachable")

    def List(self, request: pb.ListReq, context: grpc.ServicerContext) -> pb.ListResp:
        with self._errors(context), self.d.store() as store:
            jobs = ops.list_jobs(store)
            policies = store.policies()
            wanted = set(request.jids)
            return pb.ListResp(
                jobs=[
                    convert.job_to_pb(j, status=lifecycle.describe(j), policy=policies.get(j.jid))
                    for j in jobs
                    if not wanted or j.jid in wanted
                ]
            )
        raise AssertionError("unreachable")

    def Kill(self, request: pb.KillReq, context: grpc.ServicerContext) -> pb.KillResp:
        with self._errors(context), self.d.store() as store:
            job = ops.kill(store, request.jid)
            self.d.scheduler.set(job.jid, 0, 0)
            return pb.KillResp(job=convert.job_to_pb(job, status=lifecycle.describe(job)))
        raise AssertionError("unreachable")

    def Delete(self, request: pb.DeleteReq, context: grpc.ServicerContext) -> pb.DeleteResp:
        with self._errors(context), self.d.store() as store:
            with self.d.holding(request.jid, "a delete"):
                removed = ops.delete_job(
                    store, self.d.state, request.jid, checkpoints=request.checkpoints
                )
            self.d.scheduler.set(request.jid, 0, 0)
            return pb.DeleteResp(jid=request.jid, deleted_checkpoints=removed)
        raise AssertionError("unreachable")

    def Attach(
        self, request_iterator: Iterator[pb.AttachReq], context: grpc.ServicerContext
    ) -> Iterator[pb.AttachResp]:
        with self._errors(context):
            first = next(request_iterator, None)
            if first is None:
                raise ops.JobError("attach: send the job's id first")
            out: queue.Queue[bytes | CedanaError | None] = queue.Queue(maxsize=64)
            ended: list[Any] = []
            gone = threading.Event()
            # Also when the client is cancelled or killed while this generator
            # waits for output: gRPC calls back, the generator may not run again.
            context.add_callback(gone.set)

            def put(item: bytes | CedanaError | None) -> None:
                # A client that went away stops reading: the follower stops too.
                while not gone.is_set():
                    with contextlib.suppress(queue.Full):
                        out.put(item, timeout=0.5)
                        return
                raise _ClientGone

            def follow() -> None:
                try:
                    with self.d.store() as store:
                        ended.append(
                            ops.follow_log(store, first.jid, put, offset=max(first.offset, 0))
                        )
                except CedanaError as e:
                    ended.append(e)
                except _ClientGone:
                    return
                with contextlib.suppress(_ClientGone):
                    put(None)

            with self.d.store() as store:
                store.require(first.jid)  # a missing job is refused before streaming
            if first.stdin or first.close_stdin:
                ops.JobInput(self.d.state, first.jid).require()

            def feed() -> None:
                # The client's input, the first message's included, to the job's FIFO.
                given = ops.JobInput(self.d.state, first.jid, gone)
                try:
                    for req in itertools.chain([first], request_iterator):
                        if req.stdin:
                            given.send(req.stdin)
                        if req.close_stdin:
                            given.close()
                except CedanaError as e:
                    with contextlib.suppress(_ClientGone):
                        put(e)  # the stream ends with it
                except Exception:  # the client went away (cancelled): nothing to feed
                    return
                finally:
                    given.release()

            threading.Thread(target=follow, name=f"attach-{first.jid}", daemon=True).start()
            threading.Thread(target=feed, name=f"input-{first.jid}", daemon=True).start()
            try:
                while True:
                    try:
                        chunk = out.get(timeout=0.5)
                    except queue.Empty:
                        if gone.is_set():  # cancelled: nobody reads what follows
                            return
                        continue
                    if isinstance(chunk, CedanaError):
                        raise chunk
                    if chunk is None:
                        break
                    for i in range(0, len(chunk), ATTACH_CHUNK):
                        yield pb.AttachResp(output=chunk[i : i + ATTACH_CHUNK])
            finally:
                gone.set()
            result = ended[0] if ended else ops.JobError(f"lost job {first.jid}'s log")
            if isinstance(result, CedanaError):
                raise result
            yield pb.AttachResp(ended=convert.job_to_pb(result, status=lifecycle.describe(result)))

    def Freeze(self, request: pb.FreezeReq, context: grpc.ServicerContext) -> pb.FreezeResp:
        with self._errors(context):
            self.d.freeze(request.jid, request.timeout_ms or FREEZE_DEFAULT_MS)
            return pb.FreezeResp()
        raise AssertionError("unreachable")

    def Unfreeze(self, request: pb.UnfreezeReq, context: grpc.ServicerContext) -> pb.UnfreezeResp:
        with self._errors(context):
            self.d.unfreeze(request.jid)
            return pb.UnfreezeResp()
        raise AssertionError("unreachable")

    # ---- checkpoint / restore ------------------------------------------------------

    def _dump_op(self, request: pb.DumpReq) -> Operation:
        spec = ops.DumpSpec(
            jid=request.jid or None,
            pid=request.pid or None,
            directory=Path(request.dir) if request.dir else None,
            compression=request.compression or self.d.cfg["checkpoint.compression"],
            streams=request.stream or self.d.cfg["checkpoint.stream"],
            leave_running=request.leave_running,
            signing_key=Path(request.signing_key) if request.signing_key else None,
            gpu_storage=request.gpu_storage or self.d.cfg["gpu.storage"],
        )
        name = f"dump-{request.jid or request.pid}"
        return self.d.launch(name, lambda events: self.d.dump(spec, events))

    def _restore_op(self, request: pb.RestoreReq) -> Operation:
        spec = ops.RestoreSpec(
            jid=request.jid or None,
            path=Path(request.path) if request.path else None,
            new_jid=request.new_jid or None,
            driver=request.gpu_driver or None,
            signing_key=Path(request.signing_key) if request.signing_key else None,
            allow_unsigned=request.allow_unsigned,
            gpu_map=list(request.gpu_map),
        )

        def work(events: ops.Events) -> dict[str, Any]:
            with self.d.store() as store:
                doc, started = ops.restore(store, self.d.state, spec, events)
            self.d.adopt(started)
            return doc

        return self.d.launch(f"restore-{request.jid or request.path}", work)

    def _wait(self, op: Operation, context: grpc.ServicerContext) -> Any:
        op.done.wait()
        if isinstance(op.error, CedanaError):
            _abort(context, op.error)
        if op.error is not None:
            context.abort(
                grpc.StatusCode.INTERNAL, f"{op.name} failed: {op.error!r} (see the daemon's log)"
            )
        return op.result

    def _relay(
        self,
        op: Operation,
        context: grpc.ServicerContext,
        event_type: Any,
        result: Callable[[Any], Any],
    ) -> Iterator[Any]:
        while True:
            kind, value = op.events.get()
            if kind == "log":
                yield event_type(log=value)
            elif kind == "phase":
                yield event_type(progress=pb.Progress(phase=value))
            elif kind == "bytes":
                phase, done, total = value
                yield event_type(progress=pb.Progress(phase=phase, done=done, total=total))
            elif kind == "end":
                break
        yield event_type(result=result(self._wait(op, context)))

    def Dump(self, request: pb.DumpReq, context: grpc.ServicerContext) -> pb.DumpResp:
        return convert.dump_to_pb(self._wait(self._dump_op(request), context))

    def DumpWithProgress(
        self, request: pb.DumpReq, context: grpc.ServicerContext
    ) -> Iterator[pb.DumpEvent]:
        yield from self._relay(self._dump_op(request), context, pb.DumpEvent, convert.dump_to_pb)

    def Restore(self, request: pb.RestoreReq, context: grpc.ServicerContext) -> pb.RestoreResp:
        return convert.restore_to_pb(self._wait(self._restore_op(request), context))

    def RestoreWithProgress(
        self, request: pb.RestoreReq, context: grpc.ServicerContext
    ) -> Iterator[pb.RestoreEvent]:
        yield from self._relay(
            self._restore_op(request), context, pb.RestoreEvent, convert.restore_to_pb
        )

    # ---- checkpoints ---------------------------------------------------------------

    def GetCheckpoint(
        self, request: pb.GetCheckpointReq, context: grpc.ServicerContext
    ) -> pb.GetCheckpointResp:
        with self._errors(context), self.d.store() as store:
            return convert.checkpoint_detail_to_pb(ops.get_checkpoint(store, request.id))
        raise AssertionError("unreachable")

    def ListCheckpoints(
        self, request: pb.ListCheckpointsReq, context: grpc.ServicerContext
    ) -> pb.ListCheckpointsResp:
        with self._errors(context), self.d.store() as store:
            found = ops.list_checkpoints(
                store, self.d.state, request.jid or None, lambda line: log.info("%s", line)
            )
            return pb.ListCheckpointsResp(checkpoints=[convert.checkpoint_to_pb(c) for c in found])
        raise AssertionError("unreachable")

    def DeleteCheckpoint(
        self, request: pb.DeleteCheckpointReq, context: grpc.ServicerContext
    ) -> pb.DeleteCheckpointResp:
        with self._errors(context), self.d.store() as store:
            ckpt = ops.delete_checkpoint(store, request.id)
            return pb.DeleteCheckpointResp(checkpoint=convert.checkpoint_to_pb(ckpt))
        raise AssertionError("unreachable")

    def PruneCheckpoints(
        self, request: pb.PruneCheckpointsReq, context: grpc.ServicerContext
    ) -> pb.PruneCheckpointsResp:
        with self._errors(context), self.d.store() as store:
            deleted = ops.prune(store, request.jid or None, request.keep)
            return pb.PruneCheckpointsResp(deleted=[convert.checkpoint_to_pb(c) for c in deleted])
        raise AssertionError("unreachable")

    def SetCheckpointPolicy(
        self, request: pb.SetCheckpointPolicyReq, context: grpc.ServicerContext
    ) -> pb.SetCheckpointPolicyResp:
        with self._errors(context), self.d.store() as store:
            every, keep = request.policy.every, request.policy.keep
            job = ops.set_policy(store, request.jid, every, keep)
            self.d.scheduler.set(job.jid, every, keep)
            policy = (every, keep) if every > 0 else None
            return pb.SetCheckpointPolicyResp(
                job=convert.job_to_pb(job, status=lifecycle.describe(job), policy=policy)
            )
        raise AssertionError("unreachable")

    # ---- health ------------------------------------------------------------------

    def HealthCheck(
        self, request: pb.HealthCheckReq, context: grpc.ServicerContext
    ) -> pb.HealthCheckResp:
        info = pb.DaemonInfo(
            version=cedana_gpu.__version__,
            pid=os.getpid(),
            state_dir=str(self.d.state),
            address=str(self.d.cfg["address"]),
            started=self.d.started,
        )
        results = health.run_checks() if request.full else []
        if request.full and self.d.pool is not None:
            warm = self.d.pool.warm()
            full = all(n >= size for n, size in warm.values())
            results.append(
                health.Result(
                    "controller pool",
                    health.OK if full else health.WARN,
                    self.d.pool.describe().removeprefix("controller pool: "),
                    ""
                    if full
                    else "standby controllers are starting, or failing: see the daemon's log",
                )
            )
        return pb.HealthCheckResp(
            daemon=info,
            results=[pb.HealthResult(**r.to_json()) for r in results],
        )


class _TokenCheck(grpc.ServerInterceptor):
    """Every call must carry ``authorization: Bearer <auth.token>`` (TCP)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

        def deny(request: Any, context: grpc.ServicerContext) -> None:
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "no valid token: send 'authorization: Bearer <token>' (auth.token, "
                "CEDANA_AUTH_TOKEN)",
            )

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        sent = dict(details.invocation_metadata or ()).get(TOKEN_KEY, "")
        if hmac.compare_digest(str(sent).encode(), self._expected):
            return continuation(details)
        return self._deny


def _answers(target: str) -> bool:
    channel = grpc.insecure_channel(target)
    try:
        pb_grpc.DaemonStub(channel).HealthCheck(pb.HealthCheckReq(), timeout=2)
        return True
    except grpc.RpcError as e:
        return bool(e.code() == grpc.StatusCode.UNAUTHENTICATED)
    finally:
        channel.close()


def _bind(server: grpc.Server, cfg: Config) -> str:
    address = str(cfg["address"])
    if cfg["protocol"] == "tcp":
        credentials = tls.server_credentials(cfg) if tls.serves_tls(cfg) else None
        if not cfg["auth.token"] and not (credentials and cfg["tls.client_ca"]):
            raise DaemonError(
                "protocol tcp needs a token: set auth.token (or CEDANA_AUTH_TOKEN), or TLS "
                "with client certificates (tls.cert, tls.key, tls.client_ca); without them "
                "anyone who reaches the port could run jobs as this user"
            )
        try:
            if credentials is not None:
                port = server.add_secure_port(address, credentials)
            else:
                port = server.add_insecure_port(address)
        except RuntimeError as e:
            raise DaemonError(f"cannot listen on {address}: {e}") from None
        if port == 0:
            raise DaemonError(f"cannot listen on {address} (in use?)")
        return address
    sock = Path(address)
    if sock.exists() or sock.is_symlink():
        if _answers(f"unix:{sock}"):
            raise DaemonError(f"a daemon already answers at {sock}: stop it first")
        sock.unlink()  # left by a daemon that died
    try:
        sock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DaemonError(f"cannot create {sock.parent}: {e.strerror}") from None
    old = os.umask(0o177)
    try:
        port = server.add_insecure_port(f"unix:{sock}")
    except RuntimeError as e:
        raise DaemonError(f"cannot listen on {sock}: {e}") from None
    finally:
        os.umask(old)
    if port == 0:
        raise DaemonError(f"cannot listen on {sock}")
    return f"unix:{sock}"


def _setup_logging(cfg: Config, state: Path) -> Path:
    log_file = state / "daemon.log"
    root = logging.getLogger("cedana")
    root.setLevel(getattr(logging, str(cfg["log_level"]).upper()))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    for handler in (logging.StreamHandler(), logging.FileHandler(log_file)):
        handler.setFormatter(fmt)
        root.addHandler(handler)
    return log_file


def serve(cfg: Config, *, ready: Callable[[str], None] | None = None) -> int:
    """Run the daemon in the foreground until SIGTERM or SIGINT; its exit status."""
    state = statedir.state_dir()
    _setup_logging(cfg, state)
    daemon = Daemon(cfg, state)
    tcp_token = cfg["protocol"] == "tcp" and cfg["auth.token"]
    interceptors = [_TokenCheck(cfg["auth.token"])] if tcp_token else []
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="rpc"),
        interceptors=interceptors,
    )
    pb_grpc.add_DaemonServicer_to_server(Servicer(daemon), server)
    where = _bind(server, cfg)
    daemon.reconcile()
    daemon.start_pool()
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("stopping on %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # `kill -USR1` a daemon that does not stop (or seems stuck): every thread's
    # stack goes to its stderr, to see what it waits for.
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    server.start()
    if cfg["protocol"] == "unix":
        os.chmod(str(cfg["address"]), 0o600)
    daemon.scheduler.start()
    how = ""
    if tls.serves_tls(cfg):
        how = " with TLS" + (" (client certificates required)" if cfg["tls.client_ca"] else "")
    log.info("cedana daemon %s (pid %d) serving %s%s, state %s", cedana_gpu.__version__,
             os.getpid(), where, how, state)  # fmt: skip
    if ready is not None:
        ready(where)
    while not stop.wait(1.0):
        daemon.reap()
    daemon.stopping.set()
    daemon.scheduler.stop()
    server.stop(SHUTDOWN_GRACE)
    # Operations under way are the daemon's: they finish (or fail and undo) first.
    if not daemon.wait_operations():
        log.warning("operations still running at exit")
    daemon.stop_pool()
    if cfg["protocol"] == "unix":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(str(cfg["address"]))
    log.info("stopped")
    return 0
