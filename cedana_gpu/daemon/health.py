"""``cedana check``: is this node ready to run, dump and restore GPU jobs?

Each check gives OK, WARN or FAIL, what it found, and for WARN/FAIL what to
do. The daemon runs the same checks for its HealthCheck RPC. Drivers are
asked in a child process: loading one is for the life of a process, and
the daemon must not hold a driver it does not use.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cedana_gpu.errors import CedanaError

OK, WARN, FAIL = "OK", "WARN", "FAIL"
SHM_MIN_FREE = 256 << 20
CHILD_TIMEOUT = 60.0
GPU_INFO = (sys.executable, "-m", "cedana_gpu", "--no-server", "gpu", "info")


@dataclass
class Result:
    name: str
    status: str
    detail: str
    hint: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _native() -> Result:
    from cedana_gpu import paths

    try:
        return Result("native", OK, f"native libraries in {paths.native_dir()}")
    except CedanaError as e:
        return Result("native", FAIL, str(e), "run 'make setup' (or 'pip install -e .')")


def _root() -> Result:
    if os.geteuid() == 0:
        return Result("root", OK, "running as root")
    return Result("root", WARN, "not root: jobs run, but dump and restore need root (CRIU)",
                  "run cedana (or its daemon) as root")  # fmt: skip


def _criu() -> list[Result]:
    from cedana_gpu.cr import criu

    try:
        path = criu.criu_path()
    except CedanaError as e:
        return [Result("criu", FAIL, str(e), "run 'make setup' as root, or set CEDANA_CRIU")]
    found = Result("criu", OK, f"CRIU at {path}")
    if os.geteuid() != 0:
        return [found, Result("criu check", WARN, "not run: needs root", "run as root")]
    try:
        said = criu.criu_check(timeout=CHILD_TIMEOUT)
    except CedanaError as e:
        line = str(e).splitlines()[0] if str(e) else type(e).__name__
        return [found, Result("criu check", FAIL, line, "see CRIU's own 'criu check --all'")]
    return [found, Result("criu check", OK, said.splitlines()[-1] if said else "Looks good.")]


def _kernel() -> Result:
    missing = [ns for ns in ("pid", "mnt") if not Path(f"/proc/self/ns/{ns}").exists()]
    if missing:
        return Result("kernel", FAIL, f"no {', '.join(missing)} namespaces",
                      "use a kernel with PID and mount namespaces")  # fmt: skip
    return Result("kernel", OK, f"{os.uname().release}: PID and mount namespaces")


def _ask_driver(kind: str) -> tuple[list[dict[str, Any]] | None, str]:
    """The devices ``cedana gpu info --driver kind`` lists, or None and why not."""
    try:
        proc = subprocess.run(
            [*GPU_INFO, "--driver", kind, "--output", "json"],
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, str(e)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return None, (lines[-1] if lines else f"exit status {proc.returncode}").removeprefix(
            "cedana: error: "
        )
    try:
        return list(json.loads(proc.stdout)["devices"]), ""
    except (ValueError, KeyError, TypeError):
        return None, "unreadable answer"


def _gpus() -> list[Result]:
    out: list[Result] = []
    fake, why = _ask_driver("fake")
    if fake is None:
        out.append(Result("fake driver", FAIL, why, "rebuild with 'make setup'"))
    else:
        out.append(Result("fake driver", OK, f"{len(fake)} fake device(s)"))
    real, why = _ask_driver("system")
    if real is None:
        out.append(Result("nvidia driver", WARN, why,
                          "GPU jobs can only use the fake driver (--gpu-driver fake)"))  # fmt: skip
    elif not real:
        out.append(Result("gpus", WARN, "the NVIDIA driver lists no GPU", "check nvidia-smi"))
    else:
        names = ", ".join(sorted({str(d.get("name")) for d in real}))
        out.append(Result("gpus", OK, f"{len(real)} GPU(s): {names}"))
    return out


def _shm() -> Result:
    try:
        st = os.statvfs("/dev/shm")
    except OSError as e:
        return Result("shm", FAIL, f"/dev/shm: {e.strerror}", "mount a tmpfs on /dev/shm")
    free = st.f_bavail * st.f_frsize
    detail = f"/dev/shm has {free >> 20} MiB free"
    if free < SHM_MIN_FREE:
        return Result("shm", WARN, detail, "GPU jobs' segments live there: make it larger")
    return Result("shm", OK, detail)


def _state_dir() -> Result:
    from cedana_gpu.jobs import statedir

    path = statedir.default_state_dir()
    try:
        st = path.stat()
    except FileNotFoundError:
        return Result("state dir", OK, f"{path} (created at first use, mode 0700)")
    except OSError as e:
        return Result("state dir", FAIL, f"{path}: {e.strerror}", "set CEDANA_STATE_DIR")
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != os.geteuid():
        return Result("state dir", FAIL, f"{path} belongs to uid {st.st_uid}",
                      "use a state directory of your own (CEDANA_STATE_DIR)")  # fmt: skip
    if mode & 0o077:
        return Result("state dir", WARN, f"{path} has mode {mode:04o}", f"chmod 700 {path}")
    return Result("state dir", OK, f"{path} (mode {mode:04o})")


CHECKS: tuple[Callable[[], Result | list[Result]], ...] = (
    _native,
    _root,
    _criu,
    _kernel,
    _gpus,
    _shm,
    _state_dir,
)


def run_checks() -> list[Result]:
    results: list[Result] = []
    for check in CHECKS:
        found = check()
        results.extend(found if isinstance(found, list) else [found])
    return results
