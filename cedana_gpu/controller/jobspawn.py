"""Starting the job's process: run by the controller, never by the CLI.

The controller starts the job's process (``spawn_job_process``): in its own
PID namespace when it can have one, in its own session, with stdin from
/dev/null and stdout and stderr appended to the job's log, and, for a GPU
job, the interposer injected (``gpu_job_env``). The CLI's side (starting the
controller, following and killing a job) is ``cedana_gpu.jobs.lifecycle``.

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

import ctypes
import errno
import os
import signal
import stat
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cedana_gpu.jobs.processes import signal_job
from cedana_gpu.jobs.store import EXITED, KILLED

CLONE_NEWPID = 0x20000000
CLONE_NEWNS = 0x00020000
PR_SET_CHILD_SUBREAPER = 36
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

INTERPOSER = "libcedana-gpu.so"


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


def gpu_job_env(
    base: Mapping[str, str], native: Path, jid: str, shm_name: str, driver: str = "system"
) -> dict[str, str]:
    """The environment of a GPU job: the interposer preloaded and first on the search path.

    On the fake driver the fake NVML's own directory comes next, so the job
    finds libnvidia-ml.so.1 as it finds libcuda.so.1 and sees the devices the
    controller's fake driver has (both read the same FAKE_CUDA_* settings,
    which the job inherits). On NVIDIA's driver the system's NVML is found as
    it would be without cedana."""
    env = dict(base)
    intercept = native / "intercept"
    env["LD_PRELOAD"] = " ".join(filter(None, [str(intercept / INTERPOSER), env.get("LD_PRELOAD")]))
    nvml = str(native / "fake" / "nvml") if driver == "fake" else ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        filter(None, [str(intercept / "shim"), nvml, env.get("LD_LIBRARY_PATH")])
    )
    env["CEDANA_GPU_SHM"] = shm_name
    env["CEDANA_GPU_JOB_ID"] = jid
    return env


def driver_job_env(base: Mapping[str, str], driver: str) -> dict[str, str]:
    """The environment of a driver engine job: no interposer; the job loads the
    driver itself. On the fake driver its directory (``libcuda.so.1`` and the
    fake NVML) comes first on the search path; NVIDIA's is found as without
    cedana."""
    env = dict(base)
    if driver == "fake":
        from cedana_gpu.paths import fake_libdir

        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            filter(None, [str(fake_libdir()), env.get("LD_LIBRARY_PATH")])
        )
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
    stdin_fd: int | None = None,
) -> JobProcess:
    """Start ``cmd`` as the job's root process, in a session of its own.

    Its stdin is ``stdin_fd`` (``cedana exec -i``: ``jobs.job_stdin``) or /dev/null.

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
                stdin=subprocess.DEVNULL if stdin_fd is None else stdin_fd,
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
