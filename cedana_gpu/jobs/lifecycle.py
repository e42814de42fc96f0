"""The CLI's side of a job: starting it, following it, killing it, seeing how it is.

The CLI starts the job's controller (``start_job``), detached in its own
session, waits until the job runs, and can then follow its log until it
ends (``follow``); ``kill_job`` ends a job, ``refresh`` records the end of a
job whose controller died. The controller's side (the job's process in its
namespaces) is ``cedana_gpu.controller.jobspawn``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from cedana_gpu import errors
from cedana_gpu.cr.pipeline import fault_point
from cedana_gpu.jobs import statedir
from cedana_gpu.jobs.processes import process_alive, signal_job
from cedana_gpu.jobs.store import (
    EXITED,
    FAILED,
    FINAL_STATES,
    KILLED,
    RUNNING,
    STARTING,
    DuplicateJob,
    Job,
    JobStore,
)

DEFAULT_START_TIMEOUT = 300.0
"""How long ``cedana exec`` waits for a job to start (loading a real driver can be slow)."""
START_TIMEOUT_ENV = "CEDANA_START_TIMEOUT"


JobError = errors.JobError
"""A job could not be started, found or ended (printed as one line)."""


class ControllerSource(Protocol):
    """Somewhere a controller may come from ready-started (the daemon's pool)."""

    def take(
        self,
        jid: str,
        driver: str,
        command: Sequence[str],
        env: Mapping[str, str],
        cwd: str | None,
        log_path: Path,
    ) -> subprocess.Popen[bytes] | None: ...


_pool: ControllerSource | None = None


def use_controller_pool(pool: ControllerSource | None) -> None:
    """From now on, GPU jobs in this process (the daemon) take their controllers
    from ``pool`` when it has one that fits (``daemon.pool``), else start one."""
    global _pool
    _pool = pool


def new_job_id() -> str:
    return secrets.token_hex(4)


def open_store(state: Path | None = None) -> tuple[Path, JobStore]:
    state = statedir.state_dir() if state is None else statedir.ensure_private_dir(state)
    return state, JobStore(statedir.store_path(state))


def _resolve_command(cmd: Sequence[str], env: Mapping[str, str], cwd: str) -> None:
    """Fail early, in one line, on a command that cannot be run."""
    prog = cmd[0]
    if "/" in prog:
        path = prog if os.path.isabs(prog) else os.path.join(cwd, prog)
        if not os.path.isfile(path):
            raise JobError(f"{prog}: no such file")
        if not os.access(path, os.X_OK):
            raise JobError(f"{prog}: not executable")
        return
    if shutil.which(prog, path=env.get("PATH", os.defpath)) is None:
        raise JobError(f"{prog}: command not found")


def controller_command(
    jid: str,
    state: Path,
    driver: str,
    cmd: Sequence[str],
    python: str | None = None,
    *,
    persistent_mounts: Sequence[str] = (),
    restore: Path | None = None,
    engine: str | None = None,
    gpu_map: Sequence[str] = (),
    stdin: bool = False,
) -> list[str]:
    """The command line that starts job ``jid``'s controller.

    Run with the same interpreter, and told where this cedana_gpu package lives,
    so it runs the same code whether cedana is installed or run from a checkout
    (without putting anything on the job's PYTHONPATH). With ``restore`` the
    controller restores the checkpoint in that directory instead of starting
    ``cmd``.
    """
    package_root = str(Path(__file__).resolve().parent.parent.parent)
    bootstrap = (
        "import sys; sys.path.insert(0, sys.argv.pop(1)); "
        "from cedana_gpu.controller.__main__ import main; raise SystemExit(main(sys.argv[1:]))"
    )
    extra: list[str] = []
    for mount in persistent_mounts:
        extra += ["--persistent-mount", mount]
    if restore is not None:
        extra += ["--restore", str(restore)]
    if engine is not None:
        extra += ["--engine", engine]
    for pair in gpu_map:
        extra += ["--gpu-map", pair]
    if stdin:
        extra.append("--stdin")
    return [
        python or sys.executable,
        "-c",
        bootstrap,
        package_root,
        "--job-id",
        jid,
        "--state-dir",
        str(state),
        "--driver",
        driver,
        *extra,
        "--",
        *cmd,
    ]


@dataclass
class StartedJob:
    job: Job
    controller: subprocess.Popen[bytes]
    state: Path
    store: JobStore


def check_persistent_mounts(mounts: Sequence[str]) -> list[str]:
    """Normalised persistent mount directories; JobError (one line) for a bad one."""
    seen: list[str] = []
    for m in mounts:
        if not m:
            continue
        if not os.path.isabs(m):
            raise JobError(f"persistent mount {m!r} must be an absolute path")
        path = os.path.normpath(m)
        if path == "/" or path == "/dev/shm" or path.startswith("/dev/shm/"):
            raise JobError(f"persistent mount {m!r}: cannot be / or under /dev/shm")
        if path in ("/proc", "/sys", "/dev") or path.startswith(("/proc/", "/sys/")):
            raise JobError(f"persistent mount {m!r}: cannot be a system directory")
        if os.path.exists(path) and not os.path.isdir(path):
            raise JobError(f"persistent mount {m!r} exists and is not a directory")
        if path not in seen:
            seen.append(path)
    if seen and os.geteuid() != 0:
        raise JobError("persistent mounts need root (the job gets a mount namespace of its own)")
    return seen


def start_job(
    cmd: Sequence[str],
    *,
    gpu: bool,
    driver: str,
    jid: str | None = None,
    state: Path | None = None,
    env: Mapping[str, str] | None = None,
    start_timeout: float | None = None,
    persistent_mounts: Sequence[str] = (),
    restore: Path | None = None,
    cwd: str | None = None,
    generation: int = 1,
    restored_from: str | None = None,
    engine: str = "auto",
    gpu_map: Sequence[str] = (),
    stdin: bool = False,
) -> StartedJob:
    """Start a job's controller, detached, and wait until the job runs.

    With ``restore`` (a checkpoint directory) the controller restores the job
    from it instead of starting ``cmd`` (which, like ``cwd``, then only
    describes the job). ``engine`` is ``--gpu-engine`` (``cedana_gpu.engines``;
    a restore gives the checkpoint's); ``gpu_map`` (``OLD=NEW``) remaps a driver
    engine checkpoint's GPUs. With ``stdin`` the job reads a FIFO that Attach
    writes (``job_stdin``), else /dev/null. Raises JobError (one line) when the id is taken or
    the job cannot start.
    """
    from cedana_gpu import engines

    try:
        engines.check_choice(engine)
    except engines.BadEngine as e:
        raise JobError(str(e)) from None
    if not cmd:
        raise JobError("no command given: cedana exec [OPTIONS] -- CMD [ARGS...]")
    env = dict(os.environ if env is None else env)
    cwd = cwd or os.getcwd()
    if restore is None:
        _resolve_command(cmd, env, cwd)
    persistent = check_persistent_mounts(persistent_mounts)
    state, store = open_store(state)
    if jid is not None:
        try:
            statedir.check_job_id(jid)
        except ValueError as e:
            raise JobError(str(e)) from None
    driver = driver if gpu else "none"

    for _attempt in range(16):
        job_id = jid or new_job_id()
        jdir = statedir.job_dir(state, job_id)
        job = Job(
            jid=job_id,
            cmd=list(cmd),
            state=STARTING,
            gpu=gpu,
            driver=driver,
            cwd=cwd,
            log_path=str(jdir / statedir.JOB_LOG),
            socket_path=str(jdir / statedir.CONTROL_SOCKET),
            persistent_mounts=persistent,
            generation=generation,
            restored_from=restored_from,
            engine=engines.initial_engine(engine) if gpu else None,
        )
        try:
            store.create(job)
            break
        except DuplicateJob:
            if jid is not None:
                raise JobError(
                    f"a job with id {jid!r} exists already: choose another --jid"
                ) from None
    else:
        raise JobError("could not find a free job id")

    statedir.ensure_private_dir(statedir.jobs_dir(state))
    try:
        jdir.mkdir(mode=0o700, exist_ok=True)
        # Logs from an earlier job of the same id (its row deleted) must not leak in.
        for name in (statedir.JOB_LOG, statedir.CONTROLLER_LOG):
            with contextlib.suppress(FileNotFoundError):
                (jdir / name).unlink()
        fault_point()
        ctl_log = os.open(
            jdir / statedir.CONTROLLER_LOG,
            os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
            0o600,
        )
    except OSError as e:
        # A full or failing disk: the row must not stay 'starting' with nobody behind it.
        error = f"cannot create the job directory {jdir}: {e.strerror}"
        store.finish(job_id, FAILED, error=error)
        raise JobError(error) from None
    command = controller_command(
        job_id,
        state,
        driver,
        cmd,
        persistent_mounts=persistent,
        restore=restore,
        engine=engine if gpu else None,
        gpu_map=gpu_map,
        stdin=stdin,
    )
    pooled = None
    if _pool is not None and gpu:
        # The same command, environment and directory a fresh start gets.
        pooled = _pool.take(job_id, driver, command, env, cwd if restore is None else None,
                            jdir / statedir.CONTROLLER_LOG)  # fmt: skip
    try:
        controller = pooled or subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=ctl_log,
            stderr=ctl_log,
            env=env,
            cwd=cwd if restore is None else None,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as e:
        store.finish(job_id, FAILED, error=f"cannot start the controller: {e.strerror}")
        raise JobError(f"cannot start the controller: {e.strerror}") from None
    finally:
        os.close(ctl_log)
    store.update(job_id, only_if=(STARTING,), controller_pid=controller.pid)
    started = StartedJob(job, controller, state, store)
    try:
        started.job = wait_started(started, start_timeout)
    except KeyboardInterrupt:
        # Ctrl-C while starting: the controller stops the job it may have started.
        signal_controller(controller.pid, signal.SIGTERM)
        raise
    return started


def _tail(path: Path, n: int = 1) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " / ".join(lines[-n:])


def _start_timeout(value: float | None) -> float:
    if value is not None:
        return value
    try:
        return float(os.environ.get(START_TIMEOUT_ENV, DEFAULT_START_TIMEOUT))
    except ValueError:
        return DEFAULT_START_TIMEOUT


def wait_started(started: StartedJob, timeout: float | None = None) -> Job:
    """Wait until the job runs (or already ended). JobError if it failed to start."""
    store, jid, controller = started.store, started.job.jid, started.controller
    ctl_log = statedir.job_dir(started.state, jid) / statedir.CONTROLLER_LOG
    deadline = time.monotonic() + _start_timeout(timeout)
    delay = 0.005
    while True:
        # Look at the controller before the row: if it had exited already, the
        # row holds all it wrote (a fast job may be over before we look).
        exited = controller.poll() is not None
        job = store.require(jid)
        if job.state == FAILED:
            raise JobError(job.error or f"job {jid} failed to start (see {ctl_log})")
        if job.state != STARTING:
            return job
        if exited:
            why = _tail(ctl_log) or f"exit status {controller.returncode}"
            error = f"the controller of job {jid} exited while starting: {why} (log: {ctl_log})"
            store.finish(jid, FAILED, error=error)
            raise JobError(error)
        if time.monotonic() > deadline:
            signal_controller(controller.pid, signal.SIGTERM)
            error = f"job {jid} did not start within {_start_timeout(timeout):g} s (log: {ctl_log})"
            store.finish(jid, FAILED, error=error)
            raise JobError(error)
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def signal_controller(pid: int | None, sig: int) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def segment_file(job: Job) -> Path:
    """Where job's segment is, as the host sees it."""
    from cedana_gpu.controller import shm_layout

    name = job.segment or shm_layout.segment_name(job.jid)
    return Path(job.shm_dir) / name if job.shm_dir else shm_layout.SHM_DIR / name


def remove_job_shm(job: Job) -> None:
    """Remove the job's segment, pinned files and per-job /dev/shm directory."""
    from cedana_gpu.controller import shm_layout

    segment = segment_file(job)
    for path in [segment, *shm_layout.pin_files(segment.parent, segment.name)]:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            path.unlink()
    per_job = statedir.JOB_SHM_DIRS / job.jid
    if job.shm_dir and Path(job.shm_dir) == per_job:
        shutil.rmtree(per_job, ignore_errors=True)


def remove_leftovers(job: Job) -> None:
    """Remove what a controller that died (SIGKILL, crash) left behind: the
    job's segment and pinned files (only when the segment names that very
    controller) and its control socket."""
    from cedana_gpu.controller import shm_layout

    if job.gpu:
        header = shm_layout.read_header_at(segment_file(job))
        if header is None or header.controller_pid == (job.controller_pid or -1):
            remove_job_shm(job)
    if job.socket_path:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            Path(job.socket_path).unlink()


def refresh(store: JobStore, job: Job) -> Job:
    """The job as it is: an active job whose controller and processes are all
    gone (the controller was killed) is recorded as failed."""
    if job.state not in (STARTING, RUNNING):
        return job
    if process_alive(job.controller_pid) or process_alive(job.pid):
        return job
    if job.controller_pid is None and job.state == STARTING:
        return job  # the CLI is between creating the row and starting the controller
    error = "the controller ended without recording the end of the job"
    if store.finish(job.jid, FAILED, error=error):
        remove_leftovers(job)
    return store.require(job.jid)


def exit_status(job: Job) -> int:
    """The exit status ``cedana exec --attach`` returns for a finished job (a shell's)."""
    if job.state == EXITED and job.exit_code is not None:
        return job.exit_code
    if job.state == KILLED and job.signal is not None:
        return 128 + job.signal
    return 1


def describe(job: Job) -> str:
    """The STATUS column: ``running``, ``exited (3)``, ``killed (SIGKILL)``, ``failed``."""
    if job.state == EXITED:
        return f"exited ({job.exit_code})"
    if job.state == KILLED and job.signal is not None:
        try:
            name = signal.Signals(job.signal).name
        except ValueError:
            name = str(job.signal)
        return f"killed ({name})"
    return job.state


def kill_job(store: JobStore, jid: str, *, timeout: float = 60.0) -> Job:
    """SIGKILL job ``jid`` (its whole PID namespace) and wait until it is recorded."""
    job = refresh(store, store.require(jid))
    deadline = time.monotonic() + timeout
    while job.state == STARTING and job.pid is None and time.monotonic() < deadline:
        time.sleep(0.02)
        job = refresh(store, store.require(jid))
    if job.state in FINAL_STATES:
        raise JobError(f"job {jid} is not running ({describe(job)})")
    if job.pid is None:
        raise JobError(f"job {jid} has no process yet; try again")
    try:
        signal_job(job.pid, job.pid_namespace, signal.SIGKILL)
    except PermissionError:
        raise JobError(f"not allowed to kill job {jid} (pid {job.pid})") from None
    while time.monotonic() < deadline:
        job = store.require(jid)
        if job.state in FINAL_STATES:
            # The controller records the end first, then removes the segment
            # and its socket: when kill returns, all of the job is gone.
            while process_alive(job.controller_pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            return job
        if not process_alive(job.controller_pid):
            # Nobody is left to record it: the controller was gone already.
            if store.finish(jid, KILLED, signal=signal.SIGKILL):
                remove_leftovers(job)
            return store.require(jid)
        time.sleep(0.02)
    raise JobError(f"job {jid} was sent SIGKILL but its end was not recorded within {timeout:g} s")


class LogTail:
    """A job's log read onward from ``offset``: each ``drain`` passes on what
    was appended since the last (``cedana exec --attach``, the daemon's Attach)."""

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = path
        self.offset = offset

    def drain(self, write: Callable[[bytes], None]) -> bool:
        """Pass on what is new; whether there was anything (no log yet: nothing)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return False
        if data:
            self.offset += len(data)
            write(data)
        return bool(data)


def follow(
    started: StartedJob,
    out: BinaryIO,
    *,
    on_interrupt: Callable[[], None] | None = None,
) -> Job:
    """Copy the job's log to ``out`` until the controller has exited; the job as it ended.

    Ctrl-C kills the job (``on_interrupt`` is called first) and keeps following
    until it is recorded.
    """
    tail = LogTail(Path(started.job.log_path or ""))
    interrupted = False
    delay = 0.005

    def write(data: bytes) -> None:
        out.write(data)
        out.flush()

    def drain() -> bool:
        return tail.drain(write)

    while True:
        try:
            done = started.controller.poll() is not None
            got = drain()
            if done:
                drain()
                break
            if got:
                delay = 0.005
            else:
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        except KeyboardInterrupt:
            if interrupted:
                continue
            interrupted = True
            if on_interrupt is not None:
                on_interrupt()
            with contextlib.suppress(JobError):
                kill_job(started.store, started.job.jid)
    job = refresh(started.store, started.store.require(started.job.jid))
    if interrupted:
        raise KeyboardInterrupt
    return job
