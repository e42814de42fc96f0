"""The controller process: one per job, in its own session, as the job's user.

Steps, each a method, so that later modes reuse them (a restore serves a
re-created segment and adopts a job CRIU brought back instead of starting one):

1. ``setup``: claim the job's row in the store, become a child subreaper,
   catch SIGTERM/SIGINT/SIGHUP, open the control socket.
2. ``load_driver``: the fake driver (by absolute path, ``RTLD_GLOBAL``, before
   anything imports cuda-bindings) or the system one; then the native
   dispatcher.
3. ``open_segment`` (cgc_open: segment, driver, device address range) and
   ``start_serving`` (cgc_start: state RUNNING).
4. ``start_job``: the job's process, in its own PID namespace (and, as
   root, its own mount namespace: /dev/shm is the per-job directory
   ``/dev/shm/cedana-gpu.d/<jid>/``, persistent mounts are tmpfs), with the
   interposer injected.
5. ``supervise``: wait for the job's end and record it.
6. ``teardown``: stop serving, remove the segment and pinned files, the
   per-job /dev/shm directory, the socket; exit.

Restore mode (``--restore <checkpoint dir>``, ``run_restore``) replaces 3-4:
open the segment with the checkpoint's geometry, address range and segment
name (generation + 1), re-create the pinned files, import the GPU state,
write every region back verifying its checksum, then ``criu restore -d``
(this process is a child subreaper: the restored job becomes its child),
``adopt_job``, and serve (``cgc_start``): the job's parked threads wake up.
These run as phases on ``cr.pipeline`` (``restore_phases_list``: restore_gpu,
criu_restore, whose undo kills the restored job, serve, record).

Checkpoint ops on the control socket: ``freeze``, ``dump_gpu`` (GPU state
into a checkpoint directory), ``dumped`` (CRIU is about to kill the job: its
end is recorded as ``checkpointed``) and ``unfreeze``. A client that goes
away while the job is frozen unfreezes it.

A driver of ``none`` runs a plain job: no driver, no dispatcher, no segment;
the same supervision (and CRIU alone for its checkpoints).

The driver engine (``--engine driver``; ``cedana_gpu.engines``): no
dispatcher and no segment either; ``load_driver`` loads the driver and does
``cuInit`` (the driver's checkpoint API needs it in the caller), refusing a
driver without the API; the job is started without the interposer, the
driver's own directory first on its library path (``jobspawn.driver_job_env``).
The same control ops then use the API on the job's pid (``cr.driver_api``):
``freeze`` locks (bounded by the freeze timeout; a busy job is unlocked and
runs on) and checkpoints, ``unfreeze`` restores and unlocks, ``dump_gpu``
writes ``gpu/devices.json`` (``cr.driver_state``). Its restore phases:
``restore_gpu`` places the checkpoint's GPUs (same UUIDs, ``--gpu-map``, or the
same model) and writes CRIU's page images back from the shards;
``criu_restore`` as above; ``serve`` has the driver restore the GPU state and
unlock the job. ``current_engine`` is where an ``auto`` job handed to the
driver by its interposer becomes a driver engine job.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from cedana_gpu import engines
from cedana_gpu.controller import jobspawn, shm_layout
from cedana_gpu.controller.control import ControlError, ControlServer
from cedana_gpu.cr.pipeline import Phase, Pipeline, fault_point
from cedana_gpu.errors import ControllerError
from cedana_gpu.jobs import job_stdin, processes, statedir
from cedana_gpu.jobs.store import (
    CHECKPOINTED,
    EXITED,
    FAILED,
    RUNNING,
    STARTING,
    Job,
    JobStore,
)

log = logging.getLogger("cedana_gpu.controller")

DRIVERS = ("fake", "system", "none")

RESTORE_TIMEOUT_S = 600.0
"""Bound on ``criu restore`` (a hang fails the restore instead of blocking it)."""

CRIU_RELEASE_TIMEOUT_S = 600
"""How long an orphaned CRIU may hold a job before the controller continues it anyway."""
DUMPED_GRACE_S = 10.0
"""How long after 'dumped' and the client's disconnect the job has to die
(CRIU killed it) before the controller concludes the dump did not happen."""
HELD_SHARDS = "held-shards"
"""Custom storage: links to the dump's shards, held open (``_hold_shards``)."""


class StartupError(ControllerError):
    """The job could not be started; the message is recorded in the store."""


@dataclass
class ControllerOptions:
    job_id: str
    state_dir: Path
    driver: str
    command: list[str]
    ring_slots: int = 0
    nchannels: int = 0
    staging_size: int = 0
    timeout_ms: int = 0
    pid_namespace: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    persistent_mounts: list[str] = field(default_factory=list)
    restore: Path | None = None
    """A checkpoint directory (validated, unpacked) to restore the job from."""
    freeze_timeout_ms: int = 0
    engine: str = engines.AUTO
    """``--gpu-engine``: auto, intercept or driver (a restore uses the checkpoint's)."""
    gpu_map: list[str] = field(default_factory=list)
    """Restore (driver engine): ``OLD=NEW`` GPU remappings."""
    stdin: bool = False
    """The job reads a FIFO its clients write (``jobs.job_stdin``), not /dev/null."""


class Controller:
    def __init__(self, options: ControllerOptions) -> None:
        self.opts = options
        self.jid = statedir.check_job_id(options.job_id)
        self.gpu = options.driver != "none"
        self.state_dir = statedir.ensure_private_dir(Path(options.state_dir))
        self.job_dir = statedir.job_dir(self.state_dir, self.jid)
        self.log_path = self.job_dir / statedir.JOB_LOG
        self.socket_path = self.job_dir / statedir.CONTROL_SOCKET
        self.store: JobStore | None = None
        self.server: ControlServer | None = None
        self.dispatcher: Any = None  # native.Dispatcher, imported with the driver
        self.job: jobspawn.JobProcess | None = None
        self.state = STARTING
        self.generation = 1
        self._stop = threading.Event()
        self._job_lock = threading.RLock()  # the signal handler takes it too
        self._user_umask = 0o022
        self._claimed = False
        self._stdin: job_stdin.Keeper | None = None
        # Checkpoint/restore.
        self.manifest: Any = None  # checkpoint.Manifest in restore mode
        self.persistent_mounts = list(options.persistent_mounts)
        self.mount_ns = False
        self.shm_dir: Path | None = None  # segment's directory as the host sees it
        self.segment = shm_layout.segment_name(self.jid)
        self._own_shm_dir = False
        self._ckpt_lock = threading.Lock()  # freeze .. unfreeze/dumped
        self._gpu_lock = threading.Lock()  # dispatcher reads/writes vs. close
        # The control connection (its serving thread) in a checkpoint sequence:
        # freeze (GPU jobs) or dumped (plain jobs) to unfreeze or the job's end.
        self._session: int | None = None
        self._frozen = False
        self._dumped = False
        self._ended = threading.Event()
        self.progress: Any = None  # gpu_state.Counter, made with the driver
        self.restore_phases: dict[str, float] = {}
        self._restore_t0 = 0.0
        # The GPU engine (cedana_gpu.engines); ``current_engine`` may switch it.
        self.engine: str | None = engines.initial_engine(options.engine) if self.gpu else None
        self.api_support: Any = None  # driver_api.Support, driver engine
        self._checkpointed = False  # driver engine: the driver holds the job CHECKPOINTED
        self._gpu_pairs: list[tuple[str, str]] | None = None  # driver engine restore
        self._storage = "host"  # driver engine: where this dump's GPU memory goes (--gpu-storage)
        self._custom: dict[str, Any] | None = None
        self._held_fds: list[int] = []  # custom storage: the dump's shards, held open
        """Driver engine, custom storage: where the job's GPU memory is (the shards'
        directory, records, layout, compression, streams) while it is CHECKPOINTED."""
        self._images: Path | None = None  # driver engine restore: CRIU's images, rebuilt
        self._segment_file: Path | None = None  # driver engine restore of a handed-off job

    # ---- 1. setup ---------------------------------------------------------------

    def setup(self) -> None:
        # Everything the controller creates is private; the job gets the umask
        # it was started with.
        self._user_umask = os.umask(0o077)
        self.job_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.store = JobStore(statedir.store_path(self.state_dir))
        if self.opts.restore is not None:
            self._load_checkpoint()
        self._choose_mounts()
        self._claim_row()
        try:
            jobspawn.set_child_subreaper()
        except OSError as e:
            log.warning("cannot become a child subreaper: %s", e.strerror)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        self._make_shm_dir()
        self.server = ControlServer(
            self.socket_path, self.control_handlers(), on_disconnect=self._on_disconnect
        )
        try:
            self.server.start()
        except OSError as e:
            raise StartupError(f"cannot open the control socket {self.socket_path}: {e}") from None

    def _load_checkpoint(self) -> None:
        from cedana_gpu.checkpoint.manifest import CheckpointError, load_manifest

        assert self.opts.restore is not None
        try:
            self.manifest = load_manifest(self.opts.restore)
        except CheckpointError as e:
            raise StartupError(str(e)) from None
        job = self.manifest.job
        self.opts.command = list(job.cmd)
        self.persistent_mounts = list(job.persistent_mounts)
        self.segment = job.segment_name
        self.generation = job.generation + 1
        if self.gpu:
            self.engine = engines.of_checkpoint(job.extra)

    def _choose_mounts(self) -> None:
        """Where the segment lives, and whether the job gets a mount namespace.

        Root jobs with a GPU or persistent mounts get one, with /dev/shm bound
        to a per-job directory; a restore does what the checkpoint did."""
        if self.manifest is not None:
            self.mount_ns = bool(self.manifest.job.extra.get("mount_namespace", False))
        else:
            self.mount_ns = (
                os.geteuid() == 0
                and self.opts.pid_namespace
                and (self.gpu or bool(self.persistent_mounts))
            )
        if self.persistent_mounts and not self.mount_ns:
            raise StartupError(
                "persistent mounts need root (the job gets a mount namespace of its own)"
            )
        if self.mount_ns:
            self.shm_dir = statedir.job_shm_dir(self.jid)
        elif self.gpu:
            self.shm_dir = shm_layout.SHM_DIR

    def _make_shm_dir(self) -> None:
        if not self.mount_ns or self.shm_dir is None:
            return
        try:
            statedir.JOB_SHM_DIRS.mkdir(mode=0o755, exist_ok=True)
            self.shm_dir.mkdir(mode=0o700)
        except FileExistsError:
            raise StartupError(
                f"{self.shm_dir} exists already: another controller serves job {self.jid}, "
                "or a dead one left it behind (remove it)"
            ) from None
        except OSError as e:
            raise StartupError(f"cannot create {self.shm_dir}: {e.strerror}") from None
        self._own_shm_dir = True

    def segment_path(self) -> Path:
        return (self.shm_dir or shm_layout.SHM_DIR) / self.segment

    def _claim_row(self) -> None:
        assert self.store is not None
        job = self.store.get(self.jid)
        if job is None:
            # Started by hand rather than by `cedana exec`: make the row here.
            self.store.create(
                Job(
                    jid=self.jid,
                    cmd=list(self.opts.command),
                    gpu=self.gpu,
                    driver=self.opts.driver,
                    cwd=os.getcwd(),
                    log_path=str(self.log_path),
                    socket_path=str(self.socket_path),
                    controller_pid=os.getpid(),
                    generation=self.generation,
                    **self._row_mounts(),
                )
            )
            self._claimed = True
            return
        if job.state != STARTING:
            raise StartupError(f"job {self.jid} exists already ({job.state}): use another job id")
        if job.controller_pid not in (None, os.getpid()) and processes.process_alive(
            job.controller_pid
        ):
            raise StartupError(
                f"job {self.jid} has a controller already (pid {job.controller_pid})"
            )
        self.store.update(
            self.jid,
            only_if=(STARTING,),
            controller_pid=os.getpid(),
            log_path=str(self.log_path),
            socket_path=str(self.socket_path),
            **self._row_mounts(),
        )
        self._claimed = True

    def _row_mounts(self) -> dict[str, Any]:
        return {
            "shm_dir": str(self.shm_dir) if self.shm_dir is not None else None,
            "segment": self.segment if self.engine == engines.INTERCEPT else None,
            "engine": self.engine,
            "persistent_mounts": list(self.persistent_mounts),
        }

    def control_handlers(self) -> dict[str, Any]:
        """The control socket's ops."""
        return {
            "info": self._op_info,
            "shutdown": self._op_shutdown,
            "freeze": self._op_freeze,
            "hold": self._op_hold,
            "unfreeze": self._op_unfreeze,
            "dump_gpu": self._op_dump_gpu,
            "dumped": self._op_dumped,
            "progress": self._op_progress,
            "engine": self._op_engine,
            "close_stdin": self._op_close_stdin,
        }

    def _op_close_stdin(self, _request: dict[str, Any]) -> dict[str, Any]:
        if self._stdin is None:
            raise ControlError(f"job {self.jid} reads /dev/null: it has no input to close")
        return {"closed": self._stdin.close()}

    def _open_stdin(self) -> None:
        try:
            self._stdin = job_stdin.Keeper(self.job_dir)
        except OSError as e:
            raise StartupError(f"cannot create job {self.jid}'s input FIFO: {e.strerror}") from None

    # ---- 2. driver --------------------------------------------------------------

    def load_driver(self) -> None:
        if not self.gpu:
            return
        # Import here: nothing may load cuda-bindings before the driver is chosen.
        from cedana_gpu import gpu_info
        from cedana_gpu.controller import native
        from cedana_gpu.cr import gpu_state

        self.progress = gpu_state.Counter()

        try:
            loaded = gpu_info.load_driver(self.opts.driver)  # type: ignore[arg-type]
        except (gpu_info.NoDriver, gpu_info.DriverError) as e:
            raise StartupError(str(e)) from None
        log.info("driver %s: %s", loaded.kind, loaded.cuda_path)
        if self.engine == engines.DRIVER:
            # No dispatcher: the job loads the driver itself. This process
            # only drives the checkpoint API, whose restore needs cuInit here.
            self._init_driver_api()
            return
        try:
            self.dispatcher = native.Dispatcher()
        except Exception as e:  # NativeNotBuilt, OSError: say what, in one line
            raise StartupError(str(e)) from None

    def _init_driver_api(self) -> None:
        """cuInit, and refuse a driver without the checkpoint API (one line)."""
        from cedana_gpu.cr import driver_api

        try:
            driver_api.init()
            self.api_support = driver_api.support()
            self.api_support.require_checkpoint()
        except driver_api.DriverApiError as e:
            raise StartupError(str(e)) from None
        log.info("driver checkpoint API: %s", self.api_support.describe())

    def current_engine(self) -> str | None:
        """The job's GPU engine now. THE place where ``--gpu-engine auto`` switches:
        a job started intercepted whose interposer handed it to the driver
        (``ENGINE_HANDOFF``; the dispatcher says so, ``_job_handed_off``) is
        checkpointed by the driver engine from then on, and its row says so."""
        if (
            self.engine == engines.INTERCEPT
            and self.opts.engine == engines.AUTO
            and self._job_handed_off()
        ):
            log.info("job %s was handed to the driver: driver engine from now on", self.jid)
            self._init_driver_api()
            self.engine = engines.DRIVER
            if self.store is not None:
                self.store.update(self.jid, engine=engines.DRIVER)
        return self.engine

    def _job_handed_off(self) -> bool:
        """Whether the interposer handed the job to the system driver in-process.

        The native dispatcher reports it (``Dispatcher.handed_off``, set by the
        interposer's ``ENGINE_HANDOFF`` op)."""
        if self.dispatcher is None:
            return False
        try:
            return bool(self.dispatcher.handed_off)
        except Exception:  # a closing dispatcher: the job is ending anyway
            return False

    def _op_engine(self, _request: dict[str, Any]) -> dict[str, Any]:
        try:
            return {"engine": self.current_engine()}
        except StartupError as e:
            raise ControlError(str(e)) from None

    # ---- 3. segment ---------------------------------------------------------------

    def open_segment(
        self,
        *,
        generation: int = 1,
        va_base: int = 0,
        va_size: int = 0,
        geometry: dict[str, int] | None = None,
    ) -> None:
        """Create and describe the segment (state STARTING): cgc_open.

        ``geometry`` (a restore) overrides the options' ring slots, channels
        and staging size: the job has the old segment mapped, of that size.
        An adopted standby's reserved range is taken when it is the one
        wanted (always for a new job; for a restore, when it is the
        checkpoint's), else given back first."""
        from cedana_gpu.controller import native, reservation

        if not self.gpu or self.engine == engines.DRIVER:
            reservation.release()  # no dispatcher here: its context would idle
            return
        held = reservation.take()
        reserved = held is not None and reservation.fits(held, va_base, va_size)
        if held is not None and not reserved:
            log.info(
                "the standby's device range 0x%x+0x%x is not the checkpoint's 0x%x+0x%x: "
                "reserving that instead",
                held.va_base, held.va_size, va_base, va_size,
            )  # fmt: skip
            native.release_reserved(held)
        elif held is not None:
            va_base, va_size = held.va_base, held.va_size
        geometry = geometry or {}
        self.generation = generation
        config = native.DispatcherConfig(
            job_id=self.jid,
            ring_slots=geometry.get("ring_slots", self.opts.ring_slots),
            nchannels=geometry.get("nchannels", self.opts.nchannels),
            staging_size=geometry.get("staging_size", self.opts.staging_size),
            va_base=va_base,
            va_size=va_size,
            generation=generation,
            timeout_ms=geometry.get("timeout_ms", self.opts.timeout_ms),
            uid=os.getuid(),
            gid=os.getgid(),
            shm_dir=str(self.shm_dir) if self.shm_dir is not None else None,
            segment_name=self.segment,
            va_reserved=reserved,
        )
        try:
            self.dispatcher.open(config)
        except native.NativeError as e:
            raise StartupError(f"cannot set up the GPU for job {self.jid}: {e}") from None
        info = self.dispatcher.info()
        log.info(
            "segment %s ready; device range 0x%x+0x%x%s",
            self.segment_path(),
            int(info.get("va_base", 0)),
            int(info.get("va_size", 0)),
            ", reserved on standby" if reserved else "",
        )

    def start_serving(self) -> None:
        """Serve the ring: state RUNNING (the driver engine has no ring)."""
        if not self.gpu or self.engine == engines.DRIVER:
            return
        from cedana_gpu.controller import native

        try:
            self.dispatcher.start()
        except native.NativeError as e:
            raise StartupError(f"cannot serve job {self.jid}: {e}") from None

    # ---- 4. the job -------------------------------------------------------------

    def job_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.opts.extra_env)
        if self.engine == engines.DRIVER:
            env = jobspawn.driver_job_env(env, self.opts.driver)
        elif self.gpu:
            from cedana_gpu.paths import native_dir

            env = jobspawn.gpu_job_env(
                env, native_dir(), self.jid, "/" + self.segment, self.opts.driver
            )
            env["CEDANA_GPU_HANDOFF_DRIVER"] = self.dispatcher.driver_path()
            # The interposer hands the job to the driver only under ``auto``.
            env[engines.ENGINE_ENV] = self.opts.engine
        return env

    def start_job(self) -> None:
        """Start the job's process and record it as running."""
        assert self.store is not None
        if self._stop.is_set():
            raise StartupError(f"job {self.jid} was stopped before it started")
        if self.opts.stdin:
            self._open_stdin()
        log_fd = os.open(
            self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
        )
        try:
            with self._job_lock:
                try:
                    try:
                        self.job = self._spawn(log_fd, self.opts.pid_namespace)
                    except jobspawn.NoPidNamespace as e:
                        hint = "" if os.geteuid() == 0 else ", which needs root"
                        note = (
                            f"cedana: job {self.jid} runs without a PID namespace of its own "
                            f"(cannot create one: {e.strerror}{hint})\n"
                        )
                        os.write(log_fd, note.encode())
                        log.warning("%s", note.strip())
                        self.job = self._spawn(log_fd, False)
                except jobspawn.MountError as e:
                    raise StartupError(f"cannot set up the mounts of job {self.jid}: {e}") from None
                except OSError as e:
                    raise StartupError(
                        f"cannot run {self.opts.command[0]}: {e.strerror or e}"
                    ) from None
        finally:
            os.close(log_fd)
        self._record_running()
        log.info(
            "job %s running: pid %d%s",
            self.jid,
            self.job.pid,
            " (init of its PID namespace)" if self.job.pid_namespace else "",
        )
        if self._stop.is_set():
            self.kill_job()

    def _spawn(self, log_fd: int, pid_namespace: bool) -> jobspawn.JobProcess:
        mounts = None
        if self.mount_ns and pid_namespace:
            mounts = jobspawn.MountSetup(
                shm_dir=self.shm_dir,
                persistent=tuple(self.persistent_mounts),
            )
        stdin_fd = self._stdin.job_end() if self._stdin is not None else None
        try:
            return jobspawn.spawn_job_process(
                self.opts.command,
                env=self.job_env(),
                log_fd=log_fd,
                pid_namespace=pid_namespace,
                umask=self._user_umask,
                mounts=mounts,
                stdin_fd=stdin_fd,
            )
        finally:
            if stdin_fd is not None:
                os.close(stdin_fd)

    def adopt_job(self, pid: int, *, pid_namespace: bool) -> None:
        """Supervise a job that is already running below this process (a restore)."""
        with self._job_lock:
            self.job = jobspawn.JobProcess(pid=pid, pid_namespace=pid_namespace)
        self.state = RUNNING

    def kill_job(self) -> None:
        with self._job_lock:
            if self.job is not None:
                log.info("killing job %s", self.jid)
                self.job.kill()

    def kill_restored(self) -> None:
        """Undo of criu_restore: the restored job, and whatever a CRIU that failed
        midway (killed, say) left of it: tasks it forked and never finished,
        stuck for good and, this process being their subreaper, its children now."""
        self.kill_job()
        for pid in processes.tree_pids(os.getpid())[1:]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    # ---- 5. supervision -----------------------------------------------------------

    def supervise(self) -> int:
        """Wait for the job to end, record how, and return its exit status (a shell's)."""
        assert self.store is not None and self.job is not None
        pid = self.job.pid
        while True:
            try:
                reaped, status = os.waitpid(-1, 0)
            except ChildProcessError:
                # Not our child (adopted job that is gone already): nothing to reap.
                log.warning(
                    "job %s: its process %d is not a child of the controller", self.jid, pid
                )
                self.store.finish(self.jid, FAILED, error="lost track of the job's process")
                self.state = FAILED
                return 1
            if reaped != pid:
                continue  # an orphan of the job, adopted as subreaper
            break
        if self.job.popen is not None:
            self.job.popen.returncode = os.waitstatus_to_exitcode(status)
        if not self.job.pid_namespace:
            # Without a namespace, the job's other processes do not die with
            # it; end its session as a namespace's end would.
            processes.signal_job(pid, False, signal.SIGKILL)
        state, code, sig = jobspawn.wait_status(status)
        self._ended.set()
        if self._dumped:
            # CRIU dumped the job and killed it: it lives on in its checkpoint.
            self.state = CHECKPOINTED
            self.store.finish(self.jid, CHECKPOINTED, exit_code=code, signal=sig)
            log.info("job %s checkpointed", self.jid)
            return 0
        self.state = state
        self.store.finish(self.jid, state, exit_code=code, signal=sig)
        if state == EXITED:
            log.info("job %s exited with status %d", self.jid, code)
            return int(code or 0)
        log.info("job %s killed by signal %d", self.jid, sig)
        return 128 + int(sig or 0)

    # ---- 6. teardown --------------------------------------------------------------

    def teardown(self) -> None:
        if self.dispatcher is not None:
            # A dump reading device memory finishes first.
            with self._gpu_lock:
                try:
                    self.dispatcher.close()
                except Exception as e:  # keep tearing down; say what failed
                    log.error("closing the dispatcher failed: %s", e)
        if self._own_shm_dir and self.shm_dir is not None:
            shutil.rmtree(self.shm_dir, ignore_errors=True)
        if self._images is not None:
            shutil.rmtree(self._images, ignore_errors=True)
        if self._segment_file is not None:
            with contextlib.suppress(OSError):
                self._segment_file.unlink()
        if self.server is not None:
            self.server.close()
        if self.store is not None:
            self.store.close()

    # ---- control ------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping job %s", signum, self.jid)
        self.request_stop()

    def request_stop(self) -> None:
        self._stop.set()
        self.kill_job()

    def _op_info(self, _request: dict[str, Any]) -> dict[str, Any]:
        job = self.job
        info: dict[str, Any] = {
            "job_id": self.jid,
            "state": self.state,
            "generation": self.generation,
            "driver": self.opts.driver,
            "gpu": self.gpu,
            "pids": {"controller": os.getpid(), "job": job.pid if job else None},
            "pid_namespace": bool(job and job.pid_namespace),
            "command": self.opts.command,
            "log_path": str(self.log_path),
        }
        info["shm_dir"] = str(self.shm_dir) if self.shm_dir is not None else None
        info["mount_namespace"] = self.mount_ns
        info["persistent_mounts"] = list(self.persistent_mounts)
        info["frozen"] = self._frozen
        info["stdin"] = self._stdin is not None and self._stdin.fd is not None
        try:
            info["engine"] = self.current_engine()
        except StartupError as e:
            raise ControlError(str(e)) from None
        if self.engine == engines.DRIVER:
            info["driver_api"] = self.api_support.to_json() if self.api_support else None
            # Frozen, the GPU memory is in the job's host memory: about what CRIU will dump.
            info["resident_bytes"] = processes.resident_bytes(job.pid) if job else 0
        if self.dispatcher is not None:  # intercepted (or handed off from there)
            info["segment"] = str(self.segment_path())
            try:
                info["dispatcher"] = self.dispatcher.info() if self.dispatcher else {}
            except Exception as e:  # the answer still carries the rest
                raise ControlError(f"info failed: {e}") from None
        return info

    def _op_shutdown(self, _request: dict[str, Any]) -> dict[str, Any]:
        self.request_stop()
        return {"stopping": True}

    # ---- checkpoint ops -------------------------------------------------------------

    def _require_gpu_running(self, what: str) -> None:
        if not self.gpu or (self.engine != engines.DRIVER and self.dispatcher is None):
            raise ControlError(f"job {self.jid} has no GPU: nothing to {what}")
        if self.state != RUNNING or self._ended.is_set():
            raise ControlError(f"job {self.jid} is not running ({self.state})")

    def _op_freeze(self, request: dict[str, Any]) -> dict[str, Any]:
        from cedana_gpu.controller import native

        self._require_gpu_running("freeze")
        timeout_ms = int(request.get("timeout_ms") or self.opts.freeze_timeout_ms or 30_000)
        if not self._ckpt_lock.acquire(blocking=False):
            raise ControlError(f"job {self.jid} is being checkpointed already")
        t0 = time.monotonic()
        try:
            engine = self.current_engine()
        except StartupError as e:
            self._ckpt_lock.release()
            raise ControlError(str(e)) from None
        if engine == engines.DRIVER:
            try:
                self._driver_freeze(timeout_ms, str(request.get("storage") or "auto"))
            except BaseException:
                self._ckpt_lock.release()
                raise
            self._session = threading.get_ident()
            self._frozen = True
            log.info("job %s locked by the driver (GPU storage %s)", self.jid, self._storage)
            return {
                "frozen": True,
                "seconds": time.monotonic() - t0,
                "engine": engine,
                "storage": self._storage,
            }
        try:
            self.dispatcher.freeze(timeout_ms)
        except native.NativeError as e:
            self._ckpt_lock.release()
            raise ControlError(f"cannot freeze job {self.jid}: {e.message or e}") from None
        except BaseException:
            self._ckpt_lock.release()
            raise
        self._session = threading.get_ident()
        self._frozen = True
        log.info("job %s frozen", self.jid)
        return {"frozen": True, "seconds": time.monotonic() - t0}

    def _driver_pids(self, *states: str) -> list[int]:
        """The job's processes the driver has in one of ``states`` (all CUDA
        processes of its tree when none is given), root first. Asked of the
        driver: a process without CUDA is none of its business. Host pids:
        after a restore they are CRIU's new ones, found the same way."""
        from cedana_gpu.cr import driver_api

        job = self.job
        if job is None:
            raise ControlError(f"job {self.jid} has no process")
        found = []
        for pid in processes.tree_pids(job.pid):
            try:
                now = driver_api.state(pid)
            except driver_api.DriverApiError:
                continue  # no CUDA in it (or gone)
            if not states or now in states:
                found.append(pid)
        return found

    def _driver_freeze(self, timeout_ms: int, storage: str = "auto") -> None:
        """Driver engine freeze: lock every CUDA process of the job (bounded by the
        freeze timeout, all of them together), then, with host storage,
        checkpoint them (device memory into their host memory); with custom
        storage ``dump_gpu`` checkpoints and copies. A failure leaves the job
        unlocked and running."""
        from cedana_gpu.cr import driver_api

        pids = self._driver_pids(driver_api.RUNNING)
        if not pids:
            raise ControlError(
                f"cannot freeze job {self.jid}: none of its processes uses CUDA "
                "(yet): dump it once it has used the GPU"
            )
        try:
            chosen = self.api_support.storage(storage)
        except driver_api.DriverApiError as e:
            raise ControlError(f"cannot dump job {self.jid}: {e}") from None
        if chosen == driver_api.STORAGE_CUSTOM and len(pids) > 1:
            if storage == driver_api.STORAGE_CUSTOM:
                raise ControlError(
                    f"cannot dump job {self.jid}: {len(pids)} of its processes use CUDA and "
                    "--gpu-storage custom serves one: use --gpu-storage host"
                )
            chosen = driver_api.STORAGE_HOST
        self._storage = chosen
        deadline = time.monotonic() + timeout_ms / 1000
        done: list[int] = []
        try:
            for pid in pids:
                left = max(1, int((deadline - time.monotonic()) * 1000))
                done.append(pid)
                try:
                    driver_api.lock(pid, left)
                except driver_api.Busy:
                    raise ControlError(
                        f"cannot freeze job {self.jid}: timed out after {timeout_ms} ms waiting "
                        "for its GPU calls to return (the driver could not lock it; it runs on)"
                    ) from None
                except driver_api.DriverApiError as e:
                    raise ControlError(f"cannot lock job {self.jid}: {e}") from None
            if chosen == driver_api.STORAGE_CUSTOM:
                return  # dump_gpu checkpoints, copying the memory itself
            for pid in pids:
                try:
                    driver_api.checkpoint(pid)
                except driver_api.DriverApiError as e:
                    raise ControlError(
                        f"the driver could not checkpoint job {self.jid}: {e} "
                        "(it was unlocked and runs on)"
                    ) from None
        except ControlError:
            for pid in reversed(done):
                self._driver_unlock_quietly(pid)
            raise
        self._checkpointed = True

    def _driver_unlock_quietly(self, pid: int) -> None:
        """After a failed lock or checkpoint: whatever the driver left is undone, so
        the job runs on (a checkpoint that got through is restored, a lock undone)."""
        from cedana_gpu.cr import driver_api

        try:
            now = driver_api.state(pid)
            if now == driver_api.CHECKPOINTED:
                driver_api.restore(pid)
                now = driver_api.state(pid)
            if now == driver_api.LOCKED:
                driver_api.unlock(pid)
        except driver_api.DriverApiError as e:
            log.error("job %s: cannot unlock it after a failed freeze: %s", self.jid, e)

    def _driver_resume(self, pairs: list[tuple[str, str]] | None = None) -> None:
        """Driver engine: restore the job's GPU state (its checkpointed processes)
        and unlock it."""
        from cedana_gpu.cr import driver_api

        if self._checkpointed:
            for pid in self._driver_pids(driver_api.CHECKPOINTED):
                if self._custom is not None:
                    self._driver_restore_custom(pid, pairs)
                else:
                    driver_api.restore(pid, pairs)
            self._checkpointed = False
            self._custom = None
            self._release_shards()
        for pid in self._driver_pids(driver_api.LOCKED):
            driver_api.unlock(pid)

    def _hold_shards(self, gpu_dir: Path) -> Path:
        """Custom storage: the dump's shards are the job's GPU memory until it is
        restored (``--leave-running``, or a failed dump's undo), but the dump may
        remove them first (a dumping client that dies leaves its partial
        checkpoint to the janitor). Held open here, reached through links to
        this process's descriptors, they stay readable whatever happens to them."""
        from cedana_gpu.checkpoint.shards import is_shard_file

        self._release_shards()
        held = self.job_dir / HELD_SHARDS
        shutil.rmtree(held, ignore_errors=True)
        held.mkdir(mode=0o700)
        for path in sorted(gpu_dir.iterdir()):
            if is_shard_file(f"gpu/{path.name}"):
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                self._held_fds.append(fd)
                os.symlink(f"/proc/{os.getpid()}/fd/{fd}", held / path.name)
        return held

    def _release_shards(self) -> None:
        for fd in self._held_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._held_fds = []
        shutil.rmtree(self.job_dir / HELD_SHARDS, ignore_errors=True)

    def _driver_restore_custom(self, pid: int, pairs: list[tuple[str, str]] | None) -> None:
        """Custom storage: the GPU memory comes back from the shards (``_custom``)."""
        from cedana_gpu.controller import native
        from cedana_gpu.cr import driver_storage
        from cedana_gpu.errors import CheckpointError

        c = self._custom
        assert c is not None
        try:
            driver_storage.restore(
                pid,
                pairs,
                c["dir"],
                memory=c["memory"],
                records=c["records"],
                compression=c["compression"],
                streams=c["streams"],
                checksum_fn=native.checksum,
                progress=self.progress,
            )
        except CheckpointError as e:
            raise ControlError(f"cannot restore job {self.jid}'s GPU memory: {e}") from None
        except OSError as e:
            raise ControlError(
                f"cannot restore job {self.jid}'s GPU memory: {e.strerror or e}"
            ) from None

    def _op_hold(self, _request: dict[str, Any]) -> dict[str, Any]:
        """Start a checkpoint sequence without freezing (a job without GPU): this
        connection now owns the job until ``unfreeze`` or ``dumped``, and if it
        goes away first, the job is continued (``_on_disconnect``)."""
        if self.gpu:
            raise ControlError(f"job {self.jid} has a GPU: freeze it instead")
        if not self._ckpt_lock.acquire(blocking=False):
            raise ControlError(f"job {self.jid} is being checkpointed already")
        self._session = threading.get_ident()
        return {"held": True}

    def _require_session(self) -> None:
        if self._session is None:
            raise ControlError(f"job {self.jid} is not frozen: freeze it first")
        if self._session != threading.get_ident():
            raise ControlError(f"job {self.jid} is being checkpointed by another client")

    def _require_frozen(self) -> None:
        self._require_session()
        if not self._frozen:
            raise ControlError(f"job {self.jid} is not frozen: freeze it first")

    def _op_unfreeze(self, _request: dict[str, Any]) -> dict[str, Any]:
        self._require_session()
        self._dumped = False
        self._end_session()
        return {"frozen": False}

    def _end_session(self) -> None:
        """Unfreeze the job if frozen, and end the checkpoint sequence."""
        from cedana_gpu.controller import native
        from cedana_gpu.cr import driver_api

        try:
            if self._frozen and self.engine == engines.DRIVER and not self._ended.is_set():
                self._driver_resume()
                log.info("job %s restored and unlocked by the driver", self.jid)
            elif self._frozen and self.dispatcher is not None and self.dispatcher.is_open:
                self.dispatcher.unfreeze()
                log.info("job %s unfrozen", self.jid)
        except native.NativeError as e:
            raise ControlError(f"cannot unfreeze job {self.jid}: {e.message or e}") from None
        except driver_api.DriverApiError as e:
            raise ControlError(f"cannot bring job {self.jid} back onto its GPU: {e}") from None
        finally:
            self._frozen = False
            self._session = None
            if self._ckpt_lock.locked():
                self._ckpt_lock.release()

    def _op_dump_gpu(self, request: dict[str, Any]) -> dict[str, Any]:
        from cedana_gpu.cr import gpu_state

        self._require_frozen()
        directory = request.get("dir")
        if not isinstance(directory, str) or not os.path.isabs(directory):
            raise ControlError("dump_gpu needs 'dir', an absolute path")
        compression = str(request.get("compression") or "none")
        streams = int(request.get("streams") or 1)
        if self.engine == engines.DRIVER:
            return self._driver_dump_gpu(Path(directory), compression, streams)
        with self._gpu_lock:
            if self.dispatcher is None or not self.dispatcher.is_open:
                raise ControlError(f"job {self.jid} has ended")
            try:
                answer = gpu_state.dump_gpu(
                    self.dispatcher,
                    Path(directory),
                    shm_dir=self.segment_path().parent,
                    segment=self.segment,
                    compression=compression,
                    streams=streams,
                    progress=self.progress,
                )
            except gpu_state.GpuStateError as e:
                raise ControlError(f"GPU dump of job {self.jid} failed: {e}") from None
        answer["geometry"]["timeout_ms"] = self.opts.timeout_ms
        answer["generation"] = self.generation
        return answer

    def _driver_dump_gpu(self, directory: Path, compression: str, streams: int) -> dict[str, Any]:
        """Driver engine: with host storage the GPU memory is in the job's host
        memory (CRIU saves it); with custom storage it is checkpointed now and
        copied into the shards (``driver_storage``). The checkpoint's
        ``gpu/devices.json`` says which GPUs it came from, and how it was stored."""
        from cedana_gpu import gpu_info
        from cedana_gpu.checkpoint.shards import SHARD_DIR
        from cedana_gpu.controller import native
        from cedana_gpu.cr import driver_api, driver_state, driver_storage, gpu_state
        from cedana_gpu.errors import CheckpointError

        answer: dict[str, Any] = {}
        try:
            doc = driver_state.describe(self.opts.driver, self.api_support.to_json())
            fault_point("dump.gpu_dump")
            if self._storage == driver_api.STORAGE_CUSTOM:
                (pid,) = self._driver_pids(driver_api.LOCKED)
                t0 = time.monotonic()
                records, memory = driver_storage.dump(
                    pid,
                    directory / SHARD_DIR,
                    compression=compression,
                    streams=streams,
                    checksum_fn=native.checksum,
                    progress=self.progress,
                )
                self._checkpointed = True
                self._custom = {
                    "dir": self._hold_shards(directory / SHARD_DIR),
                    "records": records,
                    "memory": memory,
                    "compression": compression,
                    "streams": streams,
                }
                doc = driver_state.with_custom_storage(doc, memory)
                with open(directory / gpu_state.REGIONS_FILE, "w") as f:
                    json.dump([r.to_json() for r in records], f, separators=(",", ":"))
                total = sum(m["size"] for m in memory)
                answer.update(
                    storage=driver_api.STORAGE_CUSTOM,
                    bytes=total,
                    regions=len(memory),
                    va_size=total,
                    phases={"gpu_memory": time.monotonic() - t0},
                )
            driver_state.save(directory / "gpu", doc)
        except OSError as e:
            raise ControlError(f"GPU dump of job {self.jid} failed: {e.strerror or e}") from None
        except (gpu_info.NoDriver, gpu_info.DriverError, CheckpointError) as e:
            raise ControlError(f"GPU dump of job {self.jid} failed: {e}") from None
        except driver_api.DriverApiError as e:
            raise ControlError(
                f"the driver could not checkpoint job {self.jid}: {e} (it runs on once unlocked)"
            ) from None
        answer.update(
            {
                "engine": engines.DRIVER,
                "device": {k: doc[k] for k in ("driver", "driver_version", "devices")},
                "geometry": {},
                "generation": self.generation,
            }
        )
        if self.dispatcher is not None and self.dispatcher.is_open:
            # Handed off by its interposer (``auto``): the job still maps its
            # segment, which a restore must re-create with the same name and size.
            answer["segment_size"] = int(self.dispatcher.info().get("segment_size", 0))
        return answer

    def _op_progress(self, _request: dict[str, Any]) -> dict[str, Any]:
        if self.progress is None:
            return {"phase": "", "done": 0, "total": 0}
        return dict(self.progress.snapshot())

    def _op_dumped(self, _request: dict[str, Any]) -> dict[str, Any]:
        if self.gpu:
            self._require_frozen()
        elif self._session is None:
            if not self._ckpt_lock.acquire(blocking=False):
                raise ControlError(f"job {self.jid} is being checkpointed already")
            self._session = threading.get_ident()
        else:
            self._require_session()
        self._dumped = True
        return {"dumped": True}

    def _on_disconnect(self) -> None:
        """A control connection ended: if it was in a checkpoint sequence that
        did not end the job, the job runs on (unfrozen)."""
        if self._session != threading.get_ident():
            return
        # After 'dumped' the client closes once it has killed the job: its
        # death is on its way.
        if self._dumped and self._ended.wait(DUMPED_GRACE_S):
            return
        if self._dumped:
            log.warning("job %s: the dumping client went away after 'dumped'", self.jid)
            self._dumped = False
        if self._frozen:
            log.warning("job %s: the client that froze it went away: unfreezing", self.jid)
        if self.engine == engines.DRIVER and self._frozen:
            # The driver serves its restore from inside the job: a job CRIU
            # still holds stopped is continued first.
            self._continue_job_when_released(then=self._end_session_quietly)
            return
        self._end_session_quietly()
        self._continue_job_when_released()

    def _end_session_quietly(self) -> None:
        try:
            self._end_session()
        except ControlError as e:
            log.error("%s", e)

    def _continue_job_when_released(self, then: Any = None) -> None:
        """The dumping client is gone, perhaps while its CRIU held the job: CRIU
        (now an orphan) finishes or fails on its own and leaves the job stopped
        (``--leave-stopped``), and nobody else would ever continue it. Once no
        process of the job is traced any more, SIGCONT the tree (harmless to a
        job that runs)."""
        job = self.job
        if job is None or self._ended.is_set():
            if then is not None:
                then()
            return

        def run() -> None:
            if processes.continue_tree_when_released(job.pid, CRIU_RELEASE_TIMEOUT_S):
                log.info("job %s continued: its dumping client went away", self.jid)
            else:
                log.warning(
                    "job %s: still traced %d s after its dumping client went away; "
                    "continued anyway",
                    self.jid,
                    CRIU_RELEASE_TIMEOUT_S,
                )
            if then is not None:
                then()

        threading.Thread(target=run, name="cedana-continue", daemon=True).start()

    # ---- restore ------------------------------------------------------------------

    def restore_gpu(self) -> None:
        """Open the segment as the checkpoint had it and rebuild the GPU state in it
        (driver engine: place the checkpoint's GPUs and rebuild CRIU's page images)."""
        if not self.gpu or self.engine == engines.DRIVER:
            from cedana_gpu.controller import reservation

            reservation.release()  # no dispatcher here (the job's own driver, or none)
            if self.gpu:
                self._driver_prepare_restore()
            return
        from cedana_gpu.cr import gpu_state

        m = self.manifest
        assert m is not None and self.opts.restore is not None
        self.open_segment(
            generation=self.generation,
            va_base=m.va_base,
            va_size=m.va_size,
            geometry=dict(m.job.geometry),
        )
        size = int(self.dispatcher.info().get("segment_size", 0))
        if m.job.segment_size and size != m.job.segment_size:
            raise StartupError(
                f"the restored segment has {size} bytes, the checkpoint's had "
                f"{m.job.segment_size}: the checkpoint comes from an incompatible cedana-gpu"
            )
        try:
            self.restore_phases.update(
                gpu_state.restore_gpu(
                    self.dispatcher,
                    Path(self.opts.restore),
                    m,
                    shm_dir=self.segment_path().parent,
                    segment=self.segment,
                    progress=self.progress,
                )
            )
        except gpu_state.GpuStateError as e:
            raise StartupError(f"cannot restore the GPU state of job {self.jid}: {e}") from None

    def _driver_prepare_restore(self) -> None:
        """Driver engine, before CRIU: decide where the checkpoint's GPUs go (refused
        in one line if they cannot be placed), then write CRIU's page images back
        from the shards into a private images directory, every record verified."""
        from cedana_gpu import gpu_info
        from cedana_gpu.checkpoint import criu_pages
        from cedana_gpu.controller import native
        from cedana_gpu.cr import driver_state
        from cedana_gpu.errors import CheckpointError

        m = self.manifest
        assert m is not None and self.opts.restore is not None
        checkpoint = Path(self.opts.restore)
        try:
            doc = driver_state.load(checkpoint / "gpu")
            old = driver_state.gpus(doc["devices"])
            new = driver_state.gpus(
                [d.to_json() for d in gpu_info.list_devices(self.opts.driver, source="cuda")]  # type: ignore[arg-type]
            )
            pairs = driver_state.plan_pairs(old, new, driver_state.parse_gpu_map(self.opts.gpu_map))
            if pairs is not None:
                self.api_support.require_remap()
        except (gpu_info.NoDriver, gpu_info.DriverError) as e:
            raise StartupError(f"cannot list this machine's GPUs: {e}") from None
        except (CheckpointError, ControllerError) as e:  # GpuMapError, DriverApiError
            raise StartupError(str(e)) from None
        self._gpu_pairs = pairs
        self._recreate_segment_file()
        if pairs:
            log.info("job %s: GPUs remapped %s", self.jid, ", ".join(f"{a}->{b}" for a, b in pairs))
        if driver_state.storage(doc) == "custom":
            # The GPU memory is in the shards (verified before anything
            # started): the driver's restore gets it from there, after CRIU,
            # which restores from the checkpoint's own small images.
            self._custom = {
                "dir": checkpoint / "gpu",
                "records": list(m.regions),
                "memory": list(doc["memory"]),
                "compression": m.compression,
                "streams": m.streams,
            }
            return
        files = [criu_pages.PageFile.from_json(p) for p in m.criu_pages]
        images = self._images_dir(sum(f.size for f in files))
        shutil.rmtree(images, ignore_errors=True)
        self._images = images
        t0 = time.monotonic()
        try:
            images.mkdir(mode=0o700)
            fault_point()
            for src in sorted((checkpoint / "criu").iterdir()):
                if src.is_file():
                    shutil.copyfile(src, images / src.name)
            if self.progress is not None:
                self.progress.reset("restore", sum(f.size for f in files))
            criu_pages.unpack_pages(
                checkpoint,
                files,
                m.regions,
                m.streams,
                m.compression,
                images,
                native.checksum,
                self.progress,
            )
        except CheckpointError as e:
            raise StartupError(f"cannot restore job {self.jid}: {e}") from None
        except OSError as e:
            raise StartupError(
                f"cannot write CRIU's images for job {self.jid}: {e.strerror or e}"
            ) from None
        self.restore_phases["gpu_pages"] = time.monotonic() - t0

    def _recreate_segment_file(self) -> None:
        """A job handed to the driver by its interposer (``auto``) still maps its
        segment: CRIU restores that mapping only onto a file of the same name and
        size. Its contents no longer matter (the interposer forwards in-process)."""
        m = self.manifest
        if m is None or not m.job.segment_name or not m.job.segment_size:
            return
        path = self.segment_path()
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.ftruncate(fd, m.job.segment_size)
            finally:
                os.close(fd)
        except OSError as e:
            raise StartupError(f"cannot re-create the segment {path}: {e.strerror}") from None
        self._segment_file = path

    def _images_dir(self, nbytes: int) -> Path:
        """Where CRIU's rebuilt images go: memory (the job's per-job /dev/shm
        directory, which every clean-up of the job removes) when they take at
        most a quarter of the memory available, so that writing them and CRIU
        reading them costs no file system work; else the job's directory. They
        are removed as soon as CRIU has restored the job."""
        from cedana_gpu.checkpoint.criu_pages import fits_in_memory

        name = "criu-images"
        if self._own_shm_dir and self.shm_dir is not None and fits_in_memory(nbytes):
            return self.shm_dir / f".{name}"
        return self.job_dir / name

    def serve_restored(self) -> None:
        """The restored job's GPU work goes on: the intercept engine serves its ring;
        the driver engine has the driver restore its GPU state (onto the GPUs
        ``restore_gpu`` chose) and unlocks it."""
        if self.engine != engines.DRIVER:
            self.start_serving()
            return
        from cedana_gpu.cr import driver_api

        if self._images is not None:
            # CRIU has the pages in the job now: the copy goes before the GPU restore.
            shutil.rmtree(self._images, ignore_errors=True)
        self._checkpointed = True  # as the driver had the job when it was dumped
        try:
            self._driver_resume(self._gpu_pairs)
        except driver_api.DriverApiError as e:
            raise StartupError(
                f"the driver could not restore job {self.jid}'s GPU state: {e}"
            ) from None
        except ControlError as e:
            raise StartupError(str(e)) from None
        log.info("job %s: GPU state restored and unlocked by the driver", self.jid)

    def restore_process(self) -> None:
        """``criu restore -d`` the job's processes; they become this process's children."""
        from cedana_gpu.cr import criu, host_mounts

        assert self.store is not None and self.manifest is not None
        assert self.opts.restore is not None
        if self._stop.is_set():
            raise StartupError(f"job {self.jid} was stopped before it was restored")
        job = self.manifest.job
        images = self._images if self._images is not None else Path(self.opts.restore) / "criu"
        pidfile = self.job_dir / statedir.RESTORE_PIDFILE
        with contextlib.suppress(FileNotFoundError):
            pidfile.unlink()
        for mount in self.persistent_mounts:
            # The mount point must exist; the tmpfs's contents come from the checkpoint.
            try:
                jobspawn.prepare_persistent_mount(mount)
            except OSError as e:
                raise StartupError(f"cannot create the mount point {mount}: {e}") from None
        # --work-dir: CRIU's own output (stats-restore) goes to the job's
        # directory, not into the checkpoint, which a restore never changes.
        args = ["restore", "-d", "-D", str(images), "--pidfile", str(pidfile)]
        args += ["--work-dir", str(self.job_dir)]
        if self.mount_ns:
            args += ["--root", "/", "--external", f"mnt[shm]:{self.shm_dir}"]
            args += host_mounts.restore_args(dict(job.extra.get("host_mounts") or {}))
        log_fd = os.open(
            self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
        )
        pass_fds = [log_fd]
        stdin_keys = job.extra.get("stdin_files") or []
        if stdin_keys:
            # The job's input FIFO too: CRIU reopens this job's through the keeper.
            self._open_stdin()
            assert self._stdin is not None and self._stdin.fd is not None
            pass_fds.append(self._stdin.fd)
            for key in stdin_keys:
                args += ["--inherit-fd", f"fd[{self._stdin.fd}]:{key}"]
        try:
            # The job's log was dumped as an external file: this job's takes its place.
            for key in job.extra.get("log_files") or []:
                args += ["--inherit-fd", f"fd[{log_fd}]:{key}"]
            t0 = time.monotonic()
            with self._job_lock:
                try:
                    criu.run_criu(
                        args,
                        log_file=self.job_dir / "criu-restore.log",
                        timeout=RESTORE_TIMEOUT_S,
                        pass_fds=tuple(pass_fds),
                    )
                except (criu.CriuError, criu.CriuNotFound) as e:
                    raise StartupError(str(e)) from None
                try:
                    pid = int(pidfile.read_text().strip())
                except (OSError, ValueError):
                    raise StartupError("criu restore wrote no pid file") from None
                self.adopt_job(pid, pid_namespace=bool(job.extra.get("pid_namespace", True)))
            self.restore_phases["criu_restore"] = time.monotonic() - t0
        finally:
            os.close(log_fd)
        if stdin_keys and job.extra.get("stdin_closed") and self._stdin is not None:
            # Its clients had closed its input: the restored job reads end-of-file
            # again, not a keeper that would keep it waiting for ever.
            self._stdin.close()
        log.info("job %s restored: pid %d", self.jid, pid)

    @classmethod
    def restore_phases_list(cls) -> list[Phase[Controller]]:
        """The controller's part of a restore, on the checkpoint/restore runner (a
        class method: the fault matrix reads the table without a controller)."""
        return [
            Phase("restore_gpu", Controller.restore_gpu),
            Phase("criu_restore", Controller.restore_process, undo=Controller.kill_restored),
            Phase("serve", Controller.serve_restored, io=False),
            Phase("record", Controller._record_restored),
        ]

    def _record_running(self) -> None:
        """The job runs under this controller: the store says so, with who serves it."""
        assert self.store is not None and self.job is not None
        self.state = RUNNING
        self.store.update(
            self.jid,
            state=RUNNING,
            pid=self.job.pid,
            pid_namespace=self.job.pid_namespace,
            controller_pid=os.getpid(),
            generation=self.generation,
        )

    def _record_restored(self) -> None:
        assert self.store is not None and self.job is not None
        self.restore_phases["controller"] = time.monotonic() - self._restore_t0
        with contextlib.suppress(OSError):  # only timings: a restore does not fail on them
            fault_point()
            (self.job_dir / "restore-phases.json").write_text(json.dumps(self.restore_phases))
        self._record_running()

    def run_restore(self) -> int:
        """Restore a job from a checkpoint and serve it until it ends."""
        try:
            self.setup()
            self.load_driver()
            self._restore_t0 = time.monotonic()
            # SIGTERM keeps its handler (request_stop): the runner must not take it over.
            pipeline = Pipeline(
                self.restore_phases_list(),
                name="controller-restore",
                handle_sigterm=False,
                report=log.error,
            )
            pipeline.run(self)
            if self._stop.is_set():
                self.kill_job()
        except StartupError as e:
            log.error("%s", e)
            self.kill_job()
            self._fail(str(e))
            self.teardown()
            return 1
        except BaseException as e:
            self.kill_job()
            self._fail(f"the controller failed while restoring: {type(e).__name__}: {e}")
            self.teardown()
            raise
        try:
            return self.supervise()
        finally:
            self.teardown()

    # ---- the whole run ------------------------------------------------------------

    def run(self) -> int:
        """Start a new job and serve it until it ends. Returns the job's exit status."""
        if self.opts.restore is not None:
            return self.run_restore()
        try:
            self.setup()
            self.load_driver()
            self.open_segment(generation=1)
            self.start_serving()
            self.start_job()
        except StartupError as e:
            log.error("%s", e)
            self._fail(str(e))
            self.teardown()
            return 1
        except BaseException as e:
            self._fail(f"the controller failed while starting: {type(e).__name__}: {e}")
            self.teardown()
            raise
        try:
            return self.supervise()
        finally:
            self.teardown()

    def _fail(self, error: str) -> None:
        # Only a row this controller claimed: never fail another controller's job.
        if self.store is not None and self._claimed:
            with contextlib.suppress(Exception):
                self.store.finish(self.jid, FAILED, error=error)
        self.state = FAILED
