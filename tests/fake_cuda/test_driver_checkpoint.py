"""NVIDIA's process checkpoint API (cuCheckpointProcess*), called from this
process on a target process that runs on the driver under test.

The target (c/ckpt_target.c) holds device memory of every kind (a small and a
large allocation, a VMM mapping), keeps computing on it, and ends with a
checksum of its memory that must equal a run never checkpointed. This test
process is the caller (cuda-bindings, as in every conformance test); where
the caller must be somebody else (another "machine", no cuInit, a fresh
process after a CRIU restore) ckpt_caller.py is the caller, in a process of
its own.

The API is served by the driver inside the target process. Through the
interposer the target's libcuda.so.1 is the interposer, which forwards calls
to a controller and serves no checkpoint requests of its own: those paths are
not applicable (the driver engine hands such jobs to NVIDIA's driver).

Error codes for the pid, as measured on NVIDIA's drivers 580 and 595: a pid
that does not exist is CUDA_ERROR_OPERATING_SYSTEM, a process without CUDA or
a zombie CUDA_ERROR_NOT_INITIALIZED; a call in the wrong state is
CUDA_ERROR_ILLEGAL_STATE with no effect; a lock that times out is
CUDA_ERROR_NOT_READY and leaves the process running.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import native_build
import pytest

pytestmark = pytest.mark.only_paths(
    "fake",
    "system",
    reason="the checkpoint API is served by the driver inside the target; through the "
    "interposer the target's libcuda.so.1 is the interposer, which serves no checkpoint "
    "requests (such jobs are handed to NVIDIA's driver by the driver engine instead)",
)

HERE = Path(__file__).resolve().parent
CALLER = HERE / "ckpt_caller.py"
# The fake driver's device address ranges: 4 TiB per device from 32 TiB
# (gpu/fake/cuda/memory.c), at most 8 devices.
DEVICE_RANGE = (0x2000_0000_0000, 0x2000_0000_0000 + 8 * 0x400_0000_0000)
WAIT = 60.0  # bound on waiting for the target: a hang fails instead of blocking the run
STEP_LINE = re.compile(r"^step (\d+)$", re.M)


def fake_uuid(seed: int | None, ordinal: int) -> bytes:
    """The UUID of the fake driver's device under FAKE_CUDA_UUID_SEED (fake_uuid.h)."""
    if seed is None:
        return b"cedana-fake-gpu" + bytes([ordinal])
    return b"cedana-fake" + seed.to_bytes(4, "big") + bytes([ordinal])


def uuid_text(raw: bytes) -> str:
    """The UUID as the target prints it (8-4-4-4-12 hex)."""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def err(result: Any) -> Any:
    return result[0] if isinstance(result, tuple) else result


def proc_state(pid: int) -> str:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    return text.rsplit(")", 1)[1].split()[0]


def wait_for(pred: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


@dataclass
class Target:
    """A running ckpt_target: ``pid`` as this process sees it, output in ``out``."""

    pid: int
    out: Path
    popen: subprocess.Popen[bytes] | None = None
    extra_pids: list[int] = field(default_factory=list)

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def alive(self) -> bool:
        return proc_state(self.pid) not in ("", "Z", "X")

    def steps(self) -> int:
        found = STEP_LINE.findall(self.text())
        return int(found[-1]) if found else 0

    def wait_line(self, pattern: str) -> re.Match[str]:
        rx = re.compile(pattern, re.M)

        def seen() -> re.Match[str] | None:
            m = rx.search(self.text())
            if m is None and not self.alive():
                raise AssertionError(f"the target ended before {pattern!r}:\n{self.text()}")
            return m

        return wait_for(seen, f"{pattern!r} from the target")

    def ready(self) -> dict[str, str]:
        line = self.wait_line(r"^ready .*$").group(0)
        return dict(kv.split("=", 1) for kv in line.split()[1:])

    def wait_steps(self, n: int) -> None:
        wait_for(lambda: self.steps() >= n or not self.alive(), f"step {n} of the target")
        assert self.steps() >= n, self.text()

    def finish(self, timeout: float = 120) -> dict[str, str]:
        """Wait for the end; the summary lines ("checksum", "uuid", ...) by name."""
        wait_for(lambda: not self.alive(), "the target to end", timeout)
        if self.popen is not None:
            rc = self.popen.wait(timeout=10)
            assert rc == 0, f"target exit status {rc}:\n{self.text()}"
        text = self.text()
        assert re.search(r"^done$", text, re.M), text
        keys = ("uuid", "name", "total", "addresses", "checksum")
        return {
            k: m.group(1) for k in keys if (m := re.search(rf"^{k}: (.*)$", text, re.M)) is not None
        }

    def kill(self) -> None:
        for pid in [self.pid, *self.extra_pids]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait(timeout=10)


@dataclass
class Launcher:
    driver_path: Any
    kernels_path: Path
    tmp_path: Path
    started: list[Target] = field(default_factory=list)
    references: dict[int, str] = field(default_factory=dict)

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return self.driver_path.child_env(extra)

    def argv(self, steps: int, sleep_ms: int, *options: str) -> list[str]:
        program = native_build.program("fake_cuda_ckpt_target")
        return [str(program), str(self.kernels_path), str(steps), str(sleep_ms), *options]

    def start(
        self,
        steps: int,
        sleep_ms: int,
        *options: str,
        env: Mapping[str, str] | None = None,
        pid_namespace: bool = False,
    ) -> Target:
        out = self.tmp_path / f"target-{len(self.started)}.out"
        argv = self.argv(steps, sleep_ms, *options)
        # Appended to (O_APPEND), so that CRIU restores it after it grew.
        with open(out, "ab") as log:
            if pid_namespace:
                from cedana_gpu.controller.jobspawn import spawn_job_process

                job = spawn_job_process(argv, env=self.env(env), log_fd=log.fileno())
                target = Target(pid=job.pid, out=out, popen=job.popen)
            else:
                popen = subprocess.Popen(
                    argv,
                    env=self.env(env),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
                target = Target(pid=popen.pid, out=out, popen=popen)
        self.started.append(target)
        return target

    def reference(self, steps: int) -> str:
        """The checksum of a run of `steps` steps never checkpointed."""
        if steps not in self.references:
            r = subprocess.run(
                self.argv(steps, 0),
                env=self.env(),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert r.returncode == 0, r.stdout + r.stderr
            m = re.search(r"^checksum: (.*)$", r.stdout, re.M)
            assert m, r.stdout
            self.references[steps] = m.group(1)
        return self.references[steps]

    def caller(self, pid: int, *ops: str, env: Mapping[str, str] | None = None) -> list[str]:
        """Run ckpt_caller.py; its "<op> <result> [value]" lines."""
        r = subprocess.run(
            [sys.executable, str(CALLER), str(pid), *ops],
            env=self.env(env),
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        return [ln for ln in r.stdout.splitlines() if not ln.startswith("init ")]

    def cleanup(self) -> None:
        for t in self.started:
            t.kill()


@pytest.fixture
def launcher(driver_path: Any, kernels_path: Path, tmp_path: Path) -> Iterator[Launcher]:
    """driver_path: tests/conftest.py's DriverPath of this run."""
    lau = Launcher(driver_path, kernels_path, tmp_path)
    yield lau
    lau.cleanup()


def state(cu: ModuleType, pid: int) -> Any:
    e, st = cu.cuCheckpointProcessGetState(pid)
    assert e == cu.CUresult.CUDA_SUCCESS, f"cuCheckpointProcessGetState: {e!r}"
    return st


def device_mappings(pid: int, real_gpu: bool, addresses: list[int]) -> list[str]:
    """What of the GPU the target's memory map shows: NVIDIA's device files;
    on the fake driver, anything in its device ranges, or at the target's
    device addresses (where a sanitizer moved the ranges elsewhere)."""
    found = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        start, end = (int(x, 16) for x in line.split()[0].split("-"))
        if real_gpu:
            if "/dev/nvidia" in line:
                found.append(line)
        else:
            in_range = start < DEVICE_RANGE[1] and end > DEVICE_RANGE[0]
            if in_range or any(start <= a < end for a in addresses):
                found.append(line)
    return found


def suspend(cu: ModuleType, pid: int) -> None:
    E = cu.CUresult
    assert err(cu.cuCheckpointProcessLock(pid, None)) == int(E.CUDA_SUCCESS)
    assert err(cu.cuCheckpointProcessCheckpoint(pid, None)) == int(E.CUDA_SUCCESS)


def resume(cu: ModuleType, pid: int) -> None:
    E = cu.CUresult
    assert err(cu.cuCheckpointProcessRestore(pid, None)) == int(E.CUDA_SUCCESS)
    assert err(cu.cuCheckpointProcessUnlock(pid, None)) == int(E.CUDA_SUCCESS)


# ---- the state machine ------------------------------------------------------------


def test_state_machine_and_refusals(cu: ModuleType, launcher: Launcher) -> None:
    E, S = cu.CUresult, cu.CUprocessState
    t = launcher.start(40, 1, "--hold")
    t.ready()
    pid = t.pid
    assert state(cu, pid) == S.CU_PROCESS_STATE_RUNNING
    # Every transition but lock is refused while running, with nothing changed.
    assert err(cu.cuCheckpointProcessCheckpoint(pid, None)) == E.CUDA_ERROR_ILLEGAL_STATE
    assert err(cu.cuCheckpointProcessRestore(pid, None)) == E.CUDA_ERROR_ILLEGAL_STATE
    assert err(cu.cuCheckpointProcessUnlock(pid, None)) == E.CUDA_ERROR_ILLEGAL_STATE
    assert state(cu, pid) == S.CU_PROCESS_STATE_RUNNING

    assert err(cu.cuCheckpointProcessLock(pid, None)) == int(E.CUDA_SUCCESS)
    assert state(cu, pid) == S.CU_PROCESS_STATE_LOCKED
    assert err(cu.cuCheckpointProcessLock(pid, None)) == E.CUDA_ERROR_ILLEGAL_STATE
    assert err(cu.cuCheckpointProcessRestore(pid, None)) == E.CUDA_ERROR_ILLEGAL_STATE
    assert state(cu, pid) == S.CU_PROCESS_STATE_LOCKED

    assert err(cu.cuCheckpointProcessCheckpoint(pid, None)) == int(E.CUDA_SUCCESS)
    assert state(cu, pid) == S.CU_PROCESS_STATE_CHECKPOINTED
    assert err(cu.cuCheckpointProcessLock(pid, None)) == E.CUDA_ERROR_ILLEGAL_STATE
    assert err(cu.cuCheckpointProcessCheckpoint(pid, None)) == E.CUDA_ERROR_ILLEGAL_STATE
    assert err(cu.cuCheckpointProcessUnlock(pid, None)) == E.CUDA_ERROR_ILLEGAL_STATE
    assert state(cu, pid) == S.CU_PROCESS_STATE_CHECKPOINTED

    assert err(cu.cuCheckpointProcessRestore(pid, None)) == int(E.CUDA_SUCCESS)
    assert state(cu, pid) == S.CU_PROCESS_STATE_LOCKED
    assert err(cu.cuCheckpointProcessCheckpoint(pid, None)) == int(E.CUDA_SUCCESS)
    assert err(cu.cuCheckpointProcessRestore(pid, None)) == int(E.CUDA_SUCCESS)
    assert err(cu.cuCheckpointProcessUnlock(pid, None)) == int(E.CUDA_SUCCESS)
    assert state(cu, pid) == S.CU_PROCESS_STATE_RUNNING
    assert err(cu.cuCheckpointProcessUnlock(pid, None)) == E.CUDA_ERROR_ILLEGAL_STATE

    t.wait_line("^holding$")
    os.kill(pid, signal.SIGUSR1)
    assert t.finish()["checksum"] == launcher.reference(40)


def test_pids_without_cuda(cu: ModuleType, tmp_path: Path) -> None:
    E = cu.CUresult
    # A pid that does not exist (pid_max is at most 2^22).
    missing = 4_194_304 + 17
    for call in (
        lambda p: cu.cuCheckpointProcessGetState(p),
        lambda p: cu.cuCheckpointProcessLock(p, None),
        lambda p: cu.cuCheckpointProcessGetRestoreThreadId(p),
    ):
        assert err(call(missing)) == E.CUDA_ERROR_OPERATING_SYSTEM
    # A process that never initialised CUDA.
    with subprocess.Popen(["sleep", "60"]) as plain:
        try:
            assert err(cu.cuCheckpointProcessGetState(plain.pid)) == E.CUDA_ERROR_NOT_INITIALIZED
            assert err(cu.cuCheckpointProcessLock(plain.pid, None)) == E.CUDA_ERROR_NOT_INITIALIZED
            e = err(cu.cuCheckpointProcessGetRestoreThreadId(plain.pid))
            assert e == E.CUDA_ERROR_NOT_INITIALIZED
        finally:
            plain.kill()
    # A zombie.
    with subprocess.Popen(["true"]) as zombie:
        wait_for(lambda: proc_state(zombie.pid) == "Z", "a zombie")
        assert err(cu.cuCheckpointProcessGetState(zombie.pid)) == E.CUDA_ERROR_NOT_INITIALIZED
        zombie.wait()


class LockArgs(ctypes.Structure):
    _fields_ = (
        ("timeoutMs", ctypes.c_uint),
        ("reserved0", ctypes.c_uint),
        ("reserved1", ctypes.c_uint64 * 7),
    )


def test_null_and_reserved_arguments(
    cu: ModuleType, libcuda: ctypes.CDLL, launcher: Launcher
) -> None:
    """Output pointers are required; reserved fields must be zero."""
    E = cu.CUresult
    t = launcher.start(5, 0, "--hold")
    t.ready()
    assert libcuda.cuCheckpointProcessGetState(t.pid, None) == int(E.CUDA_ERROR_INVALID_VALUE)
    assert libcuda.cuCheckpointProcessGetRestoreThreadId(t.pid, None) == int(
        E.CUDA_ERROR_INVALID_VALUE
    )
    args = LockArgs(timeoutMs=1000)
    args.reserved0 = 1
    assert libcuda.cuCheckpointProcessLock(t.pid, ctypes.byref(args)) == int(
        E.CUDA_ERROR_INVALID_VALUE
    )
    args = LockArgs(timeoutMs=1000)
    args.reserved1[6] = 1
    assert libcuda.cuCheckpointProcessLock(t.pid, ctypes.byref(args)) == int(
        E.CUDA_ERROR_INVALID_VALUE
    )
    assert state(cu, t.pid) == cu.CUprocessState.CU_PROCESS_STATE_RUNNING
    zeros = (ctypes.c_uint64 * 8)()
    assert libcuda.cuCheckpointProcessLock(t.pid, ctypes.byref(LockArgs())) == int(E.CUDA_SUCCESS)
    zeros[3] = 1
    assert libcuda.cuCheckpointProcessCheckpoint(t.pid, zeros) == int(E.CUDA_ERROR_INVALID_VALUE)
    assert libcuda.cuCheckpointProcessUnlock(t.pid, zeros) == int(E.CUDA_ERROR_INVALID_VALUE)
    assert state(cu, t.pid) == cu.CUprocessState.CU_PROCESS_STATE_LOCKED
    zeros[3] = 0
    assert libcuda.cuCheckpointProcessUnlock(t.pid, zeros) == int(E.CUDA_SUCCESS)
    os.kill(t.pid, signal.SIGUSR1)
    assert t.finish()["checksum"] == launcher.reference(5)


# ---- the lock ----------------------------------------------------------------------


def test_calls_wait_while_locked(cu: ModuleType, launcher: Launcher) -> None:
    """A locked process's calls wait; unlocked, they go on where they were."""
    t = launcher.start(400, 5)
    t.wait_steps(5)
    assert err(cu.cuCheckpointProcessLock(t.pid, None)) == cu.CUresult.CUDA_SUCCESS
    at_lock = t.steps()
    time.sleep(0.5)
    # A step may have been between two calls when the lock came.
    assert t.steps() <= at_lock + 1, "the target went on calling the driver while locked"
    held = t.steps()
    assert held < 400
    assert err(cu.cuCheckpointProcessUnlock(t.pid, None)) == cu.CUresult.CUDA_SUCCESS
    t.wait_steps(held + 3)
    assert t.finish()["checksum"] == launcher.reference(400)


@pytest.mark.parametrize("busy", ["call", "kernel"])
def test_lock_timeout_while_busy(cu: ModuleType, launcher: Launcher, busy: str) -> None:
    """A lock waits for the calls in flight and for the work queued (a call
    waiting 3 s for a kernel, or a 3 s kernel while the program makes no
    call): with a timeout it gives up with CUDA_ERROR_NOT_READY and leaves
    the process running; without one it waits until they are done."""
    E, S = cu.CUresult, cu.CUprocessState
    t = launcher.start(20, 0, f"--long-{busy}", "3000")
    t.wait_line(f"^long {busy}$")
    began = time.monotonic()
    args = cu.CUcheckpointLockArgs()
    args.timeoutMs = 300
    assert err(cu.cuCheckpointProcessLock(t.pid, args)) == E.CUDA_ERROR_NOT_READY
    took = time.monotonic() - began
    assert 0.25 <= took < 2.5, f"the lock gave up after {took:.2f} s, not ~0.3 s"
    assert state(cu, t.pid) == S.CU_PROCESS_STATE_RUNNING
    # No timeout: returns once the long call has.
    assert err(cu.cuCheckpointProcessLock(t.pid, None)) == int(E.CUDA_SUCCESS)
    assert time.monotonic() - began >= 2.0
    assert state(cu, t.pid) == S.CU_PROCESS_STATE_LOCKED
    assert t.steps() <= 1
    assert err(cu.cuCheckpointProcessUnlock(t.pid, None)) == int(E.CUDA_SUCCESS)
    assert t.finish()["checksum"] == launcher.reference(20)


# ---- checkpoint and restore ----------------------------------------------------------


def test_memory_and_addresses_survive(cu: ModuleType, launcher: Launcher, driver_path: Any) -> None:
    """Contents and device addresses are the same after each checkpoint and
    restore, and while checkpointed the process holds nothing of the GPU."""
    t = launcher.start(300, 2)
    ready = t.ready()
    addresses = [int(ready[k], 16) for k in ("small", "big", "vmm")]
    before = device_mappings(t.pid, driver_path.real_gpu, addresses)
    assert before, "the target shows no device memory at all"
    for cycle in range(3):
        t.wait_steps(10 + 20 * cycle)
        suspend(cu, t.pid)
        assert device_mappings(t.pid, driver_path.real_gpu, addresses) == []
        resume(cu, t.pid)
        assert device_mappings(t.pid, driver_path.real_gpu, addresses)
    end = t.finish()
    assert end["addresses"] == f"{ready['small']} {ready['big']} {ready['vmm']}"
    assert end["checksum"] == launcher.reference(300)


def test_restore_thread_is_a_thread_of_the_target(cu: ModuleType, launcher: Launcher) -> None:
    t = launcher.start(5, 0, "--hold")
    t.ready()
    e, tid = cu.cuCheckpointProcessGetRestoreThreadId(t.pid)
    assert e == cu.CUresult.CUDA_SUCCESS
    assert tid != t.pid
    assert Path(f"/proc/{t.pid}/task/{tid}").is_dir()
    # The same in every state.
    suspend(cu, t.pid)
    assert cu.cuCheckpointProcessGetRestoreThreadId(t.pid) == (cu.CUresult.CUDA_SUCCESS, tid)
    resume(cu, t.pid)
    os.kill(t.pid, signal.SIGUSR1)
    t.finish()


@pytest.mark.only_paths("fake", reason="the name of the fake driver's service thread")
def test_restore_thread_name(cu: ModuleType, launcher: Launcher) -> None:
    t = launcher.start(5, 0, "--hold")
    t.ready()
    tid = cu.cuCheckpointProcessGetRestoreThreadId(t.pid)[1]
    assert Path(f"/proc/{t.pid}/task/{tid}/comm").read_text().strip() == "cuda-ckpt"
    os.kill(t.pid, signal.SIGUSR1)
    t.finish()


def test_process_checkpoints_itself(launcher: Launcher) -> None:
    t = launcher.start(20, 0, "--self")
    end = t.finish()
    text = t.text()
    assert "self: locked 1" in text and "self: checkpointed 2" in text, text
    assert "self: running 0" in text, text
    assert end["checksum"] == launcher.reference(20)


def test_restore_needs_cuinit_in_the_caller(
    cu: ModuleType, launcher: Launcher, driver_path: Any
) -> None:
    """Without cuInit a caller may lock, checkpoint, query and unlock, but not
    restore (CUDA_ERROR_NOT_INITIALIZED, the process stays checkpointed)."""
    t = launcher.start(10, 0, "--hold")
    t.ready()
    said = launcher.caller(t.pid, "--no-init", "state", "lock", "checkpoint", "tid", "restore")
    assert said[:3] == [
        "state CUDA_SUCCESS CU_PROCESS_STATE_RUNNING",
        "lock CUDA_SUCCESS",
        "checkpoint CUDA_SUCCESS",
    ]
    assert said[3].startswith("tid CUDA_SUCCESS ")
    if driver_path.real_gpu and said[4] == "restore CUDA_SUCCESS":
        # NVIDIA's driver restores without cuInit where persistence mode is on.
        assert err(cu.cuCheckpointProcessUnlock(t.pid, None)) == cu.CUresult.CUDA_SUCCESS
    else:
        assert said[4] == "restore CUDA_ERROR_NOT_INITIALIZED"
        assert state(cu, t.pid) == cu.CUprocessState.CU_PROCESS_STATE_CHECKPOINTED
        assert launcher.caller(t.pid, "restore", "unlock") == [
            "restore CUDA_SUCCESS",
            "unlock CUDA_SUCCESS",
        ]
    os.kill(t.pid, signal.SIGUSR1)
    assert t.finish()["checksum"] == launcher.reference(10)


# ---- GPU remapping (the fake driver's GPUs are configured per process) ---------------

MACHINE_A = {
    "FAKE_CUDA_DEVICE_COUNT": "2",
    "FAKE_CUDA_DEVICE_MEMORY_MIB": "256",
    "FAKE_CUDA_DEVICE_NAME": "Chip A",
    "FAKE_CUDA_UUID_SEED": "7",
}


def machine(seed: int, **changes: str) -> dict[str, str]:
    return {**MACHINE_A, "FAKE_CUDA_UUID_SEED": str(seed), **changes}


def pair(old: bytes, new: bytes) -> list[str]:
    return ["--pair", f"{old.hex()}={new.hex()}"]


@pytest.mark.only_paths("fake", reason="configures the GPUs of the fake driver (FAKE_CUDA_*)")
def test_remap_by_uuid_and_its_refusals(cu: ModuleType, launcher: Launcher) -> None:
    """Restore onto another machine's GPUs by UUID pairs: every checkpointed
    GPU listed, each onto a GPU of the caller's machine (no two onto one) with
    the same chip and enough memory. A refusal leaves the process
    checkpointed, restorable with the right pairs; after the remap the target
    answers for the new GPU."""
    t = launcher.start(10, 0, "--hold", env=MACHINE_A)
    assert t.ready()["uuid"] == uuid_text(fake_uuid(7, 0))
    suspend(cu, t.pid)
    a0, a1 = fake_uuid(7, 0), fake_uuid(7, 1)
    b0, b1 = fake_uuid(9, 0), fake_uuid(9, 1)
    machine_b = machine(9)

    def restore(*pairs: list[str], env: Mapping[str, str] = machine_b) -> str:
        args = [a for p in pairs for a in p]
        return launcher.caller(t.pid, "restore", *args, env=env)[0]

    refused = "restore CUDA_ERROR_INVALID_VALUE"
    assert restore(pair(a0, b0)) == refused  # a checkpointed GPU left out
    assert restore(pair(a0, b0), pair(a1, fake_uuid(11, 1))) == refused  # unknown new GPU
    assert restore(pair(a0, b0), pair(a1, b0)) == refused  # two onto one
    assert restore(pair(a0, b0), pair(fake_uuid(8, 1), b1)) == refused  # not a GPU of the target
    assert restore(pair(a0, b0), pair(a0, b1)) == refused  # one GPU listed twice
    other_chip = machine(9, FAKE_CUDA_DEVICE_NAME="Chip B")
    assert restore(pair(a0, b0), pair(a1, b1), env=other_chip) == refused
    # The target holds more than 8 MiB on its first GPU.
    small = machine(9, FAKE_CUDA_DEVICE_MEMORY_MIB="8")
    assert restore(pair(a0, b0), pair(a1, b1), env=small) == "restore CUDA_ERROR_OUT_OF_MEMORY"
    assert state(cu, t.pid) == cu.CUprocessState.CU_PROCESS_STATE_CHECKPOINTED

    # Swapped: the target's device 0 is now machine B's second GPU.
    assert restore(pair(a0, b1), pair(a1, b0)) == "restore CUDA_SUCCESS"
    assert launcher.caller(t.pid, "unlock") == ["unlock CUDA_SUCCESS"]
    os.kill(t.pid, signal.SIGUSR1)
    end = t.finish()
    assert end["uuid"] == uuid_text(b1)
    assert end["checksum"] == launcher.reference(10)


@pytest.mark.only_paths("fake", reason="configures the GPUs of the fake driver (FAKE_CUDA_*)")
def test_restore_without_pairs_follows_device_order(cu: ModuleType, launcher: Launcher) -> None:
    """Without pairs each GPU is restored onto the GPU of the same ordinal,
    which may be another machine's (NVIDIA's driver restores by device order):
    it must still be the same chip with enough memory."""
    t = launcher.start(10, 0, "--hold", env=MACHINE_A)
    t.ready()
    suspend(cu, t.pid)
    one_gpu = machine(9, FAKE_CUDA_DEVICE_COUNT="1")
    assert launcher.caller(t.pid, "restore", env=one_gpu) == ["restore CUDA_ERROR_INVALID_VALUE"]
    other_chip = machine(9, FAKE_CUDA_DEVICE_NAME="Chip B")
    assert launcher.caller(t.pid, "restore", env=other_chip) == ["restore CUDA_ERROR_INVALID_VALUE"]
    bigger = machine(9, FAKE_CUDA_DEVICE_MEMORY_MIB="512")
    assert launcher.caller(t.pid, "restore", "unlock", env=bigger) == [
        "restore CUDA_SUCCESS",
        "unlock CUDA_SUCCESS",
    ]
    os.kill(t.pid, signal.SIGUSR1)
    end = t.finish()
    assert end["uuid"] == uuid_text(fake_uuid(9, 0))
    assert end["total"] == str(512 << 20)
    assert end["checksum"] == launcher.reference(10)


# ---- namespaces and CRIU ----------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="a PID namespace (and CRIU) needs root")
# scripts/check-native.sh hands its sanitizer runtime to child processes.
not_sanitized = pytest.mark.skipif(
    bool(os.environ.get("CEDANA_TEST_PRELOAD")),
    reason="under a sanitizer CRIU would have to dump its terabytes of shadow mappings",
)


@needs_root
def test_target_in_its_own_pid_namespace(cu: ModuleType, launcher: Launcher) -> None:
    """The caller knows only the host pid; the restore thread id is the host's too."""
    t = launcher.start(200, 2, pid_namespace=True)
    ready = t.ready()
    assert ready["pid"] == "1", "the target is not the init of a PID namespace of its own"
    t.wait_steps(5)
    e, tid = cu.cuCheckpointProcessGetRestoreThreadId(t.pid)
    assert e == cu.CUresult.CUDA_SUCCESS
    assert Path(f"/proc/{t.pid}/task/{tid}").is_dir()
    suspend(cu, t.pid)
    assert state(cu, t.pid) == cu.CUprocessState.CU_PROCESS_STATE_CHECKPOINTED
    resume(cu, t.pid)
    assert t.finish()["checksum"] == launcher.reference(200)


@needs_root
@not_sanitized
def test_survives_criu(cu: ModuleType, launcher: Launcher, tmp_path: Path) -> None:
    """Lock and checkpoint, CRIU dump (the job dies), CRIU restore, then a new
    caller restores and unlocks: the job finishes with the right checksum."""
    from cedana_gpu.cr.criu import run_criu

    steps = 300
    t = launcher.start(steps, 3, pid_namespace=True)
    t.ready()
    t.wait_steps(20)
    suspend(cu, t.pid)
    images = tmp_path / "images"
    images.mkdir()
    run_criu(
        ["dump", "-t", str(t.pid), "-D", str(images), "-v4"],
        log_file=tmp_path / "dump.log",
        timeout=120,
    )
    assert t.popen is not None
    t.popen.wait(timeout=30)
    t.popen = None
    at_dump = t.steps()
    pidfile = tmp_path / "restored.pid"
    run_criu(
        ["restore", "-d", "-D", str(images), "-v4", "--pidfile", str(pidfile)],
        log_file=tmp_path / "restore.log",
        timeout=120,
    )
    restored = int(pidfile.read_text())
    t.pid = restored
    assert cu.cuCheckpointProcessGetState(restored) == (
        cu.CUresult.CUDA_SUCCESS,
        cu.CUprocessState.CU_PROCESS_STATE_CHECKPOINTED,
    )
    said = launcher.caller(restored, "tid", "restore", "unlock", "state")
    assert said[0].startswith("tid CUDA_SUCCESS ")
    assert Path(f"/proc/{restored}/task/{said[0].split()[2]}").is_dir()
    assert said[1:] == [
        "restore CUDA_SUCCESS",
        "unlock CUDA_SUCCESS",
        "state CUDA_SUCCESS CU_PROCESS_STATE_RUNNING",
    ]
    t.wait_steps(at_dump + 5)
    end = t.finish(timeout=120)
    assert end["checksum"] == launcher.reference(steps)


# ---- custom storage (CUDA 13.4+ headers: the caller copies the memory itself) ------------


class PerDevice(ctypes.Structure):
    _fields_ = (("devPtr", ctypes.c_uint64), ("size", ctypes.c_size_t), ("stream", ctypes.c_void_p))


class StorageInfo(ctypes.Structure):
    _fields_ = (
        ("handle", ctypes.c_void_p),
        ("perDeviceData", ctypes.POINTER(PerDevice)),
        ("deviceCount", ctypes.c_uint),
    )


class CheckpointArgs(ctypes.Structure):
    _fields_ = (
        ("customStorageInfo_out", ctypes.POINTER(ctypes.POINTER(StorageInfo))),
        ("reserved", ctypes.c_char * 56),
    )


class RestoreArgs(ctypes.Structure):
    _fields_ = (
        ("gpuPairs", ctypes.c_void_p),
        ("gpuPairsCount", ctypes.c_uint),
        ("padding0", ctypes.c_uint),
        ("customStorageInfo_out", ctypes.POINTER(ctypes.POINTER(StorageInfo))),
        ("reserved", ctypes.c_char * 40),
    )


def custom(libcuda: ctypes.CDLL, restore: bool, pid: int) -> tuple[int, StorageInfo | None]:
    """A checkpoint or restore to custom storage: (CUresult, what the driver described)."""
    out = ctypes.POINTER(StorageInfo)()
    if restore:
        args: ctypes.Structure = RestoreArgs(customStorageInfo_out=ctypes.pointer(out))
        rc = libcuda.cuCheckpointProcessRestore(pid, ctypes.byref(args))
    else:
        args = CheckpointArgs(customStorageInfo_out=ctypes.pointer(out))
        rc = libcuda.cuCheckpointProcessCheckpoint(pid, ctypes.byref(args))
    return rc, (out.contents if rc == 0 and out else None)


def needs_custom_storage(cu: ModuleType, driver_path: Any, rc: int) -> None:
    """Skip on an NVIDIA driver without custom storage (before r615)."""
    if driver_path.real_gpu and rc in (
        int(cu.CUresult.CUDA_ERROR_NOT_SUPPORTED),
        int(cu.CUresult.CUDA_ERROR_INVALID_VALUE),
    ):
        pytest.skip(f"this NVIDIA driver has no custom storage (error {rc})")


def test_custom_storage(
    cu: ModuleType, ctx: Any, libcuda: ctypes.CDLL, launcher: Launcher, driver_path: Any
) -> None:
    """The caller copies the memory out and back itself: CHECKPOINTING and
    RESTORING until it completes the operation, then CHECKPOINTED and LOCKED;
    the target ends with the right checksum."""
    E, S = cu.CUresult, cu.CUprocessState
    t = launcher.start(30, 1, "--hold")
    ready = t.ready()
    addresses = [int(ready[k], 16) for k in ("small", "big", "vmm")]
    assert err(cu.cuCheckpointProcessLock(t.pid, None)) == E.CUDA_SUCCESS
    rc, info = custom(libcuda, False, t.pid)
    needs_custom_storage(cu, driver_path, rc)
    assert rc == 0 and info is not None, rc
    assert state(cu, t.pid) == S.CU_PROCESS_STATE_CHECKPOINTING
    assert err(cu.cuCheckpointProcessUnlock(t.pid, None)) == E.CUDA_ERROR_ILLEGAL_STATE
    assert err(cu.cuCheckpointProcessRestore(t.pid, None)) == E.CUDA_ERROR_ILLEGAL_STATE
    assert info.deviceCount == 1
    piece = info.perDeviceData[0]
    assert piece.size > 0
    storage = (ctypes.c_char * piece.size)()
    copy_out = libcuda.cuMemcpyDtoHAsync_v2(
        storage,
        ctypes.c_uint64(piece.devPtr),
        ctypes.c_size_t(piece.size),
        ctypes.c_void_p(piece.stream),
    )
    assert copy_out == 0
    size = piece.size
    assert libcuda.cuCheckpointOperationComplete(ctypes.c_void_p(info.handle)) == 0
    assert state(cu, t.pid) == S.CU_PROCESS_STATE_CHECKPOINTED
    assert device_mappings(t.pid, driver_path.real_gpu, addresses) == []
    # A completed handle is gone.
    assert libcuda.cuCheckpointOperationComplete(ctypes.c_void_p(info.handle)) == int(
        E.CUDA_ERROR_INVALID_VALUE
    )
    if not driver_path.real_gpu:
        # The bytes are the caller's: nothing to restore from host memory.
        e = err(cu.cuCheckpointProcessRestore(t.pid, None))
        assert e == E.CUDA_ERROR_INVALID_VALUE
        assert state(cu, t.pid) == S.CU_PROCESS_STATE_CHECKPOINTED

    rc, info = custom(libcuda, True, t.pid)
    assert rc == 0 and info is not None, rc
    assert state(cu, t.pid) == S.CU_PROCESS_STATE_RESTORING
    assert info.deviceCount == 1 and info.perDeviceData[0].size == size
    piece = info.perDeviceData[0]
    copy_in = libcuda.cuMemcpyHtoDAsync_v2(
        ctypes.c_uint64(piece.devPtr), storage, ctypes.c_size_t(size), ctypes.c_void_p(piece.stream)
    )
    assert copy_in == 0
    assert libcuda.cuCheckpointOperationComplete(ctypes.c_void_p(info.handle)) == 0
    assert state(cu, t.pid) == S.CU_PROCESS_STATE_LOCKED
    assert err(cu.cuCheckpointProcessUnlock(t.pid, None)) == E.CUDA_SUCCESS
    os.kill(t.pid, signal.SIGUSR1)
    end = t.finish()
    assert end["addresses"] == f"{ready['small']} {ready['big']} {ready['vmm']}"
    assert end["checksum"] == launcher.reference(30)


@pytest.mark.only_paths("fake", reason="the fake driver's refusals of custom storage")
def test_custom_storage_refusals(cu: ModuleType, libcuda: ctypes.CDLL, launcher: Launcher) -> None:
    """Not for the calling process itself (CUDA_ERROR_NOT_SUPPORTED); not
    without the primary context retained in the caller
    (CUDA_ERROR_INVALID_CONTEXT). Either way the target stays locked."""
    E = cu.CUresult
    t = launcher.start(5, 0, "--hold")
    t.ready()
    assert err(cu.cuCheckpointProcessLock(t.pid, None)) == E.CUDA_SUCCESS
    # ckpt_caller.py retains no context.
    said = launcher.caller(t.pid, "custom-checkpoint", "state")
    assert said == [
        "custom-checkpoint CUDA_ERROR_INVALID_CONTEXT",
        "state CUDA_SUCCESS CU_PROCESS_STATE_LOCKED",
    ]
    rc, _ = custom(libcuda, False, os.getpid())
    assert rc == int(E.CUDA_ERROR_NOT_SUPPORTED)
    assert err(cu.cuCheckpointProcessUnlock(t.pid, None)) == E.CUDA_SUCCESS
    os.kill(t.pid, signal.SIGUSR1)
    assert t.finish()["checksum"] == launcher.reference(5)
