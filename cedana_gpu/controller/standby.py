"""A controller on standby: started ahead of any job, adopted by one later.

``cedana-gpu-controller --standby SOCKET --driver fake|system`` does the part
of a controller's start-up that no job decides: the interpreter and its
imports, loading the driver (``gpu_info.load_driver``), ``cuInit``, the
native dispatcher library, device 0's primary context and the device address
range a new job's dispatcher reserves (``native.reserve``; on NVIDIA's driver
creating the context is the costly part). Then it binds ``SOCKET`` (its
existence says "ready") and waits for one adoption: a single JSON line

    {"argv": [...], "env": {...}, "cwd": "...", "log": "<job dir>/controller.log"}

where ``argv`` is exactly what a freshly started controller would get
(``lifecycle.controller_command``), ``env`` its environment and ``cwd`` its
working directory. It answers ``{"ok": true, "pid": N, "va_base": B,
"va_size": S}`` (S bytes reserved at B), puts its stdout and stderr on
``log``, takes ``env`` and ``cwd`` as its own, and runs the same
``main(argv)`` a fresh controller runs: every step from the job's row on
(segment, address range, job, restore) is the fresh start's own code, so an
adopted controller ends in the same state; only the driver is loaded already
(``load_driver`` is idempotent), ``cuInit`` is a no-op the second time, and
``open_segment`` takes the reserved range (``reservation.py``) when it is
the one wanted: always for a new job, for a restore when it is the
checkpoint's (a fresh controller's first reservation lands at the same
place, so it usually is). Otherwise, and for the driver engine, whose job
runs on a driver of its own, the range and the context are given back.

What was read before adoption cannot be taken back: the pool only hands a
standby to a job whose environment agrees with it on ``PREPARE_ENV``
(``prepare_env``), the variables the driver and the loader read at start-up.
SIGTERM (or the socket's owner going away) ends a standby that was never adopted.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cedana_gpu.controller import native, reservation

PREPARE_ENV_PREFIXES = ("FAKE_CUDA_", "CUDA_", "NVIDIA_", "LD_")
PREPARE_ENV_NAMES = (
    "CEDANA_GPU_NATIVE_DIR",
    "CEDANA_GPU_BUILD_DIR",
    "PYTHONPATH",
    "PYTHONHOME",
)
"""What a standby reads before it is adopted (the driver's and the loader's
settings): a job whose environment differs in one of them gets a fresh controller."""

ADOPT_TIMEOUT = 10.0
MAX_ADOPTION = 4 << 20


def prepare_env(env: Mapping[str, str]) -> dict[str, str]:
    """The part of ``env`` a standby has used already."""
    return {
        k: v for k, v in env.items() if k.startswith(PREPARE_ENV_PREFIXES) or k in PREPARE_ENV_NAMES
    }


def prepare(driver: str) -> None:
    """Everything a controller does before it knows its job: load the driver and
    the dispatcher, ``cuInit``, reserve the device range. Raises what a fresh
    start would report."""
    from cedana_gpu import gpu_info
    from cedana_gpu.controller import process  # noqa: F401  (imports, warmed)

    gpu_info.load_driver(driver)  # type: ignore[arg-type]
    native.load_library()
    # What every start or restore imports later (the driver is chosen, so
    # cuda-bindings may come): imported now, it costs the job nothing.
    import cedana_gpu.checkpoint.manifest
    import cedana_gpu.controller.jobspawn
    import cedana_gpu.cr.criu
    import cedana_gpu.cr.gpu_state  # noqa: F401

    cuda = ctypes.CDLL(gpu_info.CUDA_SONAME, mode=os.RTLD_NOLOAD | os.RTLD_GLOBAL)
    rc = int(cuda.cuInit(0))
    if rc != 0:
        raise gpu_info.DriverError(f"cuInit failed: CUresult {rc}")
    reservation.hold(native.reserve())


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_ADOPTION:
            raise ValueError("adoption too large")
    return data


def wait_adoption(path: Path) -> dict[str, Any]:
    """Bind ``path`` (ready) and return the first well-formed adoption, answered."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    sock.listen(4)
    try:
        while True:
            conn, _ = sock.accept()
            with conn:
                conn.settimeout(ADOPT_TIMEOUT)
                try:
                    doc = json.loads(_read_line(conn))
                    if not isinstance(doc, dict) or not isinstance(doc.get("argv"), list):
                        raise ValueError("no argv")
                except (OSError, ValueError) as e:
                    with contextlib.suppress(OSError):
                        conn.sendall(json.dumps({"ok": False, "error": str(e)}).encode() + b"\n")
                    continue
                answer: dict[str, Any] = {"ok": True, "pid": os.getpid()}
                held = reservation.held()
                if held is not None:
                    answer.update(va_base=held.va_base, va_size=held.va_size)
                conn.sendall(json.dumps(answer).encode() + b"\n")
                return doc
    finally:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def take_on(doc: dict[str, Any]) -> list[str]:
    """Become the process a fresh start would have been: its output, environment
    and working directory. Returns its argv."""
    fd = os.open(doc["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    env = {str(k): str(v) for k, v in dict(doc.get("env") or {}).items()}
    os.environ.clear()
    os.environ.update(env)
    cwd = doc.get("cwd")
    if cwd:
        os.chdir(str(cwd))
    return [str(a) for a in doc["argv"]]


PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int, parent: int) -> None:
    """A standby ends with the daemon that started it (even a SIGKILLed one); an
    adopted controller must outlive it, so adoption clears this (sig 0)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if sig and os.getppid() != parent:
        raise SystemExit(1)  # the daemon was gone already


def run(path: Path, driver: str, parent: int, main: Callable[[list[str]], int]) -> int:
    """The standby's life: prepare, wait, become the adopting job's controller
    (``main``: the controller's entry point, ``__main__.main``)."""
    # Until adopted, SIGTERM ends it at once (the pool stops it).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if parent:
        _die_with_parent(signal.SIGTERM, parent)
    try:
        prepare(driver)
    except Exception as e:
        print(f"cedana-gpu-controller: standby: {e}", file=sys.stderr)
        return 1
    held = reservation.held()
    where = f"; device range 0x{held.va_base:x}+0x{held.va_size:x}" if held else ""
    print(f"cedana-gpu-controller: standby ({driver}) ready at {path}{where}", file=sys.stderr)
    doc = wait_adoption(path)
    if parent:
        _die_with_parent(0, parent)
    argv = take_on(doc)
    return main(argv)
