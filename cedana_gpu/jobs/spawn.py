"""Starting, watching and killing jobs.

Two sides:

- The controller starts the job's process (``spawn_job_process``): in its own
  PID namespace when it can have one, in its own session, with stdin from
  /dev/null and stdout and stderr appended to the job's log, and, for a GPU
  job, the interposer injected (``gpu_job_env``).
- The CLI starts the controller (``start_job``), detached in its own session,
  waits until the job runs, and can then follow its log until it ends
  (``follow``); ``kill_job`` ends a job.

Why a PID namespace: CRIU restores a process with the PID it had, and fails
when that PID is taken. A job that is the init of its own PID namespace can
be restored any number of times, even twice at once (DESIGN.md). The
namespace is made by the controller itself, from a thread of its own
(unshare(CLONE_NEWPID) changes only the calling thread's namespace for new
children), so the job's init is the controller's direct child: the
controller reads the job's exit status (code or signal) from waitpid, with no
``unshare --fork`` process in between, whose own status cannot tell a job
killed by a signal from one that exited with 1.

Why a mount namespace (root GPU jobs, and jobs with persistent mounts): CRIU
saves every tmpfs of a job's mount namespace into the checkpoint, which is
what persistent mounts (``--persistent-mount DIR``: a tmpfs private to the
job) rely on; and the job's /dev/shm is a bind mount of a per-job host
directory (``/dev/shm/cedana-gpu.d/<jid>/``), marked external at dump, so a
restore can give it a new directory while the segment keeps its name: the
original job and a restored copy of it can then run at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cedana_gpu.jobs import statedir
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

CLONE_NEWPID = 0x20000000
CLONE_NEWNS = 0x00020000
PR_SET_CHILD_SUBREAPER = 36
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

DEFAULT_START_TIMEOUT = 300.0
"""How long ``cedana exec`` waits for a job to start (loading a real driver can be slow)."""
START_TIMEOUT_ENV = "CEDANA_START_TIMEOUT"

INTERPOSER = "libcedana-gpu.so"


class JobError(RuntimeError):
    """A job could not be started, found or ended (printed as one line)."""


# ---- processes --------------------------------------------------------------


def process_alive(pid: int | None) -> bool:
    """Whether ``pid`` names a process that has not ended (zombies have)."""
    if not pid or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        return True
    # The state follows the parenthesised command name, which may hold anything.
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X", b"x")


def set_child_subreaper() -> None:
    """Adopt orphaned descendants, e.g. a job CRIU restores below this process."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


@dataclass
class JobProcess:
    """The job's root process, a child of the controller."""

    pid: int
    pid_namespace: bool
    """True when ``pid`` is the init of a PID namespace of its own."""
    popen: subprocess.Popen[bytes] | None = None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole job: its namespace (all of it dies with its init) or its session."""
        signal_job(self.pid, self.pid_namespace, sig)


def signal_job(pid: int, pid_namespace: bool, sig: int = signal.SIGKILL) -> None:
    # The init of a PID namespace only gets signals it handles, SIGKILL
    # excepted; when it dies, the kernel kills everything else in the namespace.
    with contextlib.suppress(ProcessLookupError):
        if pid_namespace:
            os.kill(pid, sig)
        else:
            os.killpg(pid, sig)


def gpu_job_env(base: Mapping[str, str], native: Path, jid: str, shm_name: str) -> dict[str, str]:
    """The environment of a GPU job: the interposer preloaded and first on the search path."""
    env = dict(base)
    intercept = native / "intercept"
    env["LD_PRELOAD"] = " ".join(filter(None, [str(intercept / INTERPOSER), env.get("LD_PRELOAD")]))
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        filter(None, [str(intercept / "shim"), env.get("LD_LIBRARY_PATH")])
    )
    env["CEDANA_GPU_SHM"] = shm_name
    env["CEDANA_GPU_JOB_ID"] = jid
    return env


class NoPidNamespace(OSError):
    """This process may not create a PID namespace (ordinary users may not)."""


class MountError(OSError):
    """The job's mount namespace could not be set up; ``str()`` says what and why."""

    def __str__(self) -> str:
        return str(self.args[1]) if len(self.args) > 1 else super().__str__()


@dataclass(frozen=True)
class MountSetup:
    """The job's own mount namespace (root only).

    ``shm_dir``: a host directory bind-mounted on the job's /dev/shm.
    ``persistent``: absolute directories that become tmpfs mounts private to
    the job (created on the host first when missing; each tmpfs gets the
    directory's owner and mode).
    """

    shm_dir: Path | None = None
    persistent: tuple[str, ...] = ()


def _unshare_pid_namespace() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWPID) != 0:
        err = ctypes.get_errno()
        raise NoPidNamespace(err, os.strerror(err))


def _mount(
    libc: ctypes.CDLL, source: str | None, target: str, fstype: str | None, flags: int, data: str
) -> None:
    def b(v: str | None) -> bytes | None:
        return None if v is None else os.fsencode(v)

    if libc.mount(b(source), b(target), b(fstype), ctypes.c_ulong(flags), b(data or None)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def prepare_persistent_mount(path: str) -> os.stat_result:
    """Create the host directory of a persistent mount if needed; its stat."""
    if not os.path.lexists(path):
        os.makedirs(path, mode=0o755, exist_ok=True)
        os.chmod(path, 0o755)  # whatever the controller's umask
    st = os.stat(path)
    if not os.path.isdir(path):
        raise MountError(errno.ENOTDIR, f"persistent mount {path} is not a directory")
    return st


MNT_DETACH = 2
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8


def _proc_mounter() -> Callable[[], None]:
    """What the job's first process runs before exec: a /proc of its own PID namespace.

    Only a process inside the new PID namespace can mount its proc, so this
    runs in the child between fork and exec; everything it needs is made
    beforehand. Without it CRIU's parasite mounts a proc of its own in a
    directory it creates in the job's working directory, which fails when two
    jobs of one working directory are dumped at once, or the directory is
    read-only."""
    libc = ctypes.CDLL(None, use_errno=True)
    umount2, mount = libc.umount2, libc.mount
    target, fstype = b"/proc", b"proc"
    flags = ctypes.c_ulong(MS_NOSUID | MS_NODEV | MS_NOEXEC)
    detach = ctypes.c_int(MNT_DETACH)

    def mount_proc() -> None:
        umount2(target, detach)
        if mount(fstype, target, fstype, flags, None) != 0:
            raise OSError(ctypes.get_errno(), "mount proc")

    return mount_proc


def _enter_mount_namespace(setup: MountSetup) -> None:
    """Unshare this thread's mount namespace and make the job's mounts in it.

    unshare(CLONE_NEWNS) gives the calling thread (only) a copy of the mount
    table; everything mounted here is seen by the processes this thread
    starts, never by the host."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise MountError(err, f"cannot create a mount namespace: {os.strerror(err)}")
    try:
        _mount(libc, None, "/", None, MS_REC | MS_PRIVATE, "")
    except OSError as e:
        raise MountError(e.errno, f"cannot make the job's mounts private: {e.strerror}") from None
    if setup.shm_dir is not None:
        try:
            _mount(libc, str(setup.shm_dir), "/dev/shm", None, MS_BIND, "")
        except OSError as e:
            raise MountError(
                e.errno, f"cannot bind {setup.shm_dir} on the job's /dev/shm: {e.strerror}"
            ) from None
    for path in setup.persistent:
        try:
            st = prepare_persistent_mount(path)
            opts = f"mode={stat.S_IMODE(st.st_mode):o},uid={st.st_uid},gid={st.st_gid}"
            _mount(libc, "tmpfs", path, "tmpfs", 0, opts)
        except MountError:
            raise
        except OSError as e:
            raise MountError(
                e.errno, f"cannot mount the persistent tmpfs {path}: {e.strerror}"
            ) from None


def spawn_job_process(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str],
    log_fd: int,
    pid_namespace: bool = True,
    umask: int | None = None,
    cwd: str | None = None,
    mounts: MountSetup | None = None,
) -> JobProcess:
    """Start ``cmd`` as the job's root process, in a session of its own.

    With ``pid_namespace`` it becomes the init of a new PID namespace; raises
    NoPidNamespace, before starting anything, when one cannot be made (the
    caller decides whether to go on without). With ``mounts`` it gets a mount
    namespace of its own set up so (MountError if that fails). Raises OSError
    when ``cmd`` cannot be executed.
    """
    result: dict[str, object] = {}

    def spawn() -> None:
        try:
            if pid_namespace:
                _unshare_pid_namespace()
            preexec = None
            if mounts is not None:
                _enter_mount_namespace(mounts)
                if pid_namespace:
                    preexec = _proc_mounter()
            result["popen"] = subprocess.Popen(
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
                umask=-1 if umask is None else umask,
                preexec_fn=preexec,
            )
        except subprocess.SubprocessError:
            # Only the proc mount runs before exec (preexec_fn).
            result["error"] = MountError(
                errno.EPERM, "cannot mount a /proc of the job's own PID namespace"
            )
        except OSError as e:
            result["error"] = e

    # A thread of its own: unshare(CLONE_NEWPID) changes where *this thread's*
    # children go, once, and unshare(CLONE_NEWNS) this thread's mount table;
    # the thread then ends, and the controller's other threads keep starting
    # processes in the host's namespaces.
    t = threading.Thread(target=spawn, name="spawn-job")
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    popen = result["popen"]
    assert isinstance(popen, subprocess.Popen)
    return JobProcess(pid=popen.pid, pid_namespace=pid_namespace, popen=popen)


def wait_status(status: int) -> tuple[str, int | None, int | None]:
    """(state, exit_code, signal) for a waitpid status."""
    if os.WIFSIGNALED(status):
        return KILLED, None, os.WTERMSIG(status)
    return EXITED, os.waitstatus_to_exitcode(status), None


# ---- the CLI side -----------------------------------------------------------


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
) -> StartedJob:
    """Start a job's controller, detached, and wait until the job runs.

    With ``restore`` (a checkpoint directory) the controller restores the job
    from it instead of starting ``cmd`` (which, like ``cwd``, then only
    describes the job). Raises JobError (one line) when the id is taken or the
    job cannot start.
    """
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
    jdir.mkdir(mode=0o700, exist_ok=True)
    # Logs from an earlier job of the same id (its row deleted) must not leak in.
    for name in (statedir.JOB_LOG, statedir.CONTROLLER_LOG):
        with contextlib.suppress(FileNotFoundError):
            (jdir / name).unlink()
    ctl_log = os.open(
        jdir / statedir.CONTROLLER_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
    )
    try:
        controller = subprocess.Popen(
            controller_command(
                job_id, state, driver, cmd, persistent_mounts=persistent, restore=restore
            ),
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
    log_path = Path(started.job.log_path or "")
    offset = 0
    interrupted = False
    delay = 0.005

    def drain() -> bool:
        nonlocal offset
        try:
            with open(log_path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return False
        if data:
            offset += len(data)
            out.write(data)
            out.flush()
        return bool(data)

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
