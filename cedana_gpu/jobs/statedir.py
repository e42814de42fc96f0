"""The state directory: job store, job logs, control sockets.

``$CEDANA_STATE_DIR`` if set; else ``/var/lib/cedana-gpu`` for root; else
``$XDG_STATE_HOME/cedana-gpu`` or ``~/.local/state/cedana-gpu``. Created with
mode 0700: an ordinary user's jobs, logs and sockets are theirs alone.

Layout::

    <state>/jobs.db                 the job store (SQLite)
    <state>/jobs/<jid>/job.log      the job's stdout and stderr (O_APPEND)
    <state>/jobs/<jid>/controller.log
    <state>/jobs/<jid>/control.sock the controller's control socket
    <state>/checkpoints/<jid>/      the job's checkpoints (default place)
    <state>/restore/                archives unpacked for a restore (temporary)

A root GPU job's segment and pinned host memory files live in
``/dev/shm/cedana-gpu.d/<jid>/`` (``job_shm_dir``), which the job sees as its
``/dev/shm`` (a bind mount in its own mount namespace).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from cedana_gpu.errors import StoreError

ENV_VAR = "CEDANA_STATE_DIR"
ROOT_STATE_DIR = Path("/var/lib/cedana-gpu")
APP = "cedana-gpu"

STORE_NAME = "jobs.db"
JOB_LOG = "job.log"
CONTROLLER_LOG = "controller.log"
CONTROL_SOCKET = "control.sock"
RESTORE_PIDFILE = "restore.pid"
"""Where a restoring controller has CRIU write the restored job's pid."""
CHECKPOINTS = "checkpoints"
RESTORE_TMP = "restore"

SHM_ROOT = Path("/dev/shm")
JOB_SHM_DIRS = SHM_ROOT / "cedana-gpu.d"
"""Per-job /dev/shm directories of jobs with a mount namespace."""

JOB_ID_MAX = 63
"""A job id names the segment /dev/shm/cedana-gpu.<jid> and fills a 64-byte
field (CGS_JOB_ID_MAX) with its terminating NUL."""

_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class StateDirError(StoreError):
    """The state directory cannot be used (printed as one line)."""


def default_state_dir(uid: int | None = None, env: Mapping[str, str] | None = None) -> Path:
    """Where the state of user ``uid`` lives (``env`` defaults to ``os.environ``)."""
    env = os.environ if env is None else env
    override = env.get(ENV_VAR)
    if override:
        return Path(override).expanduser().absolute()
    if (os.geteuid() if uid is None else uid) == 0:
        return ROOT_STATE_DIR
    xdg = env.get("XDG_STATE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / APP
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".local" / "state" / APP


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) if needed; the directory itself gets mode 0700."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat()
        if st.st_uid == os.geteuid() and st.st_mode & 0o077:
            path.chmod(0o700)
    except OSError as e:
        raise StateDirError(
            f"cannot use the state directory {path}: {e.strerror}; "
            f"set {ENV_VAR} to a directory you can write"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise StateDirError(
            f"the state directory {path} is not writable; "
            f"set {ENV_VAR} to a directory you can write"
        )
    return path


def state_dir(create: bool = True) -> Path:
    """The state directory of this user, created (0700) unless ``create`` is false."""
    path = default_state_dir()
    return ensure_private_dir(path) if create else path


def check_job_id(jid: str) -> str:
    """Return ``jid`` if it can name a job, else raise ValueError saying why."""
    if not jid or len(jid) > JOB_ID_MAX or not _JOB_ID.fullmatch(jid):
        raise ValueError(
            f"invalid job id {jid!r}: use 1 to {JOB_ID_MAX} letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return jid


def jobs_dir(state: Path) -> Path:
    return state / "jobs"


def job_dir(state: Path, jid: str) -> Path:
    return jobs_dir(state) / check_job_id(jid)


def store_path(state: Path) -> Path:
    return state / STORE_NAME


def checkpoints_dir(state: Path, jid: str) -> Path:
    return state / CHECKPOINTS / check_job_id(jid)


def restore_tmp_dir(state: Path) -> Path:
    return state / RESTORE_TMP


def job_shm_dir(jid: str) -> Path:
    """The host directory that job ``jid`` sees as its /dev/shm (mount namespace jobs)."""
    return JOB_SHM_DIRS / check_job_id(jid)
