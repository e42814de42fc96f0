"""The driver's own checkpoint API (``cuCheckpointProcess*``), as the driver engine uses it.

Called from the job's controller (another process) on the job's host pid,
through ``cuda.bindings.driver``; the driver (NVIDIA's, or the fake one)
must be loaded and ``cuInit`` done in this process first (a restore needs
that, or persistence mode). NVIDIA's semantics, which the fake driver
follows:

- ``lock(pid, timeout_ms)``: RUNNING -> LOCKED; the job's further CUDA calls
  block. A job busy in a call that does not return within the timeout is
  left RUNNING and the lock fails (``CUDA_ERROR_NOT_READY``).
- ``checkpoint(pid)``: LOCKED -> CHECKPOINTED; device memory moves into the
  job's host memory (so CRIU's page images then hold it), GPU resources are
  released.
- ``restore(pid, pairs)``: CHECKPOINTED -> LOCKED; the memory goes back at
  the same device addresses, on the GPUs ``pairs`` names (old UUID -> new
  UUID, same chip, every checkpointed GPU listed) or the same ones.
- ``unlock(pid)``: LOCKED -> RUNNING.

What a driver supports is told by its CUDA version (``cuDriverGetVersion``):
``support()``. Nothing here imports cuda-bindings before it is called: the
caller chooses and loads the driver first (``gpu_info.load_driver``).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

from cedana_gpu.errors import ControllerError

CHECKPOINT_MIN = 12050
"""Lock, checkpoint, restore, unlock: driver r555 (CUDA 12.5; public headers from 12.8)."""
REMAP_MIN = 13000
"""Restore onto other GPUs (``CUcheckpointRestoreArgs.gpuPairs``): driver r580 (CUDA 13.0)."""
CUSTOM_STORAGE_MIN = 13040
"""Custom storage (``customStorageInfo_out``, ``cuCheckpointOperationComplete``): CUDA 13.4."""

RELEASES = {CHECKPOINT_MIN: "r555", REMAP_MIN: "r580", CUSTOM_STORAGE_MIN: "r615"}

STORAGE_AUTO, STORAGE_HOST, STORAGE_CUSTOM = "auto", "host", "custom"
STORAGES = (STORAGE_AUTO, STORAGE_HOST, STORAGE_CUSTOM)
"""``--gpu-storage``: where a driver engine dump puts the GPU memory."""

FUNCTIONS = (
    "cuCheckpointProcessLock",
    "cuCheckpointProcessCheckpoint",
    "cuCheckpointProcessRestore",
    "cuCheckpointProcessUnlock",
    "cuCheckpointProcessGetState",
    "cuCheckpointProcessGetRestoreThreadId",
)

RUNNING, LOCKED, CHECKPOINTED, FAILED, CHECKPOINTING, RESTORING = (
    "running",
    "locked",
    "checkpointed",
    "failed",
    "checkpointing",
    "restoring",
)
_STATES = (RUNNING, LOCKED, CHECKPOINTED, FAILED, CHECKPOINTING, RESTORING)
"""``CUprocessState`` values in order."""


class DriverApiError(ControllerError):
    """A checkpoint API call failed; ``code`` is the CUresult's name."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class Busy(DriverApiError):
    """The lock timed out: the job is in a GPU call that did not return in time."""


def version_text(version: int) -> str:
    """``13000`` -> ``13.0``."""
    return f"{version // 1000}.{version % 1000 // 10}"


def needed(minimum: int) -> str:
    """The driver a feature needs, in words (for one-line errors)."""
    return f"driver {RELEASES[minimum]} or later (CUDA {version_text(minimum)})"


@dataclass(frozen=True)
class Support:
    """What a driver offers of the checkpoint API."""

    version: int
    """``cuDriverGetVersion`` (1000 * major + 10 * minor)."""
    checkpoint: bool
    remap: bool
    custom_storage: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "driver_version": version_text(self.version),
            "checkpoint": self.checkpoint,
            "gpu_remap": self.remap,
            "custom_storage": self.custom_storage,
        }

    def describe(self) -> str:
        def say(ok: bool, minimum: int) -> str:
            return "yes" if ok else f"no (needs {needed(minimum)})"

        return (
            f"lock/checkpoint/restore: {say(self.checkpoint, CHECKPOINT_MIN)}; "
            f"GPU remapping: {say(self.remap, REMAP_MIN)}; "
            f"custom storage: {say(self.custom_storage, CUSTOM_STORAGE_MIN)}"
        )

    def require_checkpoint(self) -> None:
        if not self.checkpoint:
            raise DriverApiError(
                f"the driver (CUDA {version_text(self.version)}) has no checkpoint API: "
                f"--gpu-engine driver needs {needed(CHECKPOINT_MIN)}"
            )

    def storage(self, requested: str) -> str:
        """Where a dump puts the GPU memory (``--gpu-storage``): ``host`` (staged in
        the job's host memory, so in CRIU's pages) or ``custom`` (copied by us into
        our shards); ``auto`` is custom where the driver offers it."""
        if requested == STORAGE_AUTO:
            return STORAGE_CUSTOM if self.custom_storage else STORAGE_HOST
        if requested == STORAGE_CUSTOM and not self.custom_storage:
            raise DriverApiError(
                f"the driver (CUDA {version_text(self.version)}) has no custom storage: "
                f"--gpu-storage custom needs {needed(CUSTOM_STORAGE_MIN)} (or use host)"
            )
        if requested not in STORAGES:
            raise DriverApiError(
                f"--gpu-storage {requested!r}: choose one of {', '.join(STORAGES)}"
            )
        return requested

    def require_remap(self) -> None:
        if not self.remap:
            raise DriverApiError(
                f"the driver (CUDA {version_text(self.version)}) cannot restore onto other "
                f"GPUs: that needs {needed(REMAP_MIN)}"
            )


FAULT_ENV = "CEDANA_TEST_DRIVER_FAULT"
"""Test-only (never set in production): a directory; when ``<dir>/<call>`` exists
(``checkpoint``, ``restore``), the next such call is made on a pid that does
not exist, so the real driver fails it (``CUDA_ERROR_OPERATING_SYSTEM``) while
the job stays as it was, and the file is removed (once). The tests use it to
see every failure of the API unwound."""
NO_SUCH_PID = (1 << 22) + 1
"""Above the kernel's largest pid_max: no process has it."""


def _target(pid: int, call: str) -> int:
    import os

    directory = os.environ.get(FAULT_ENV)
    if not directory:
        return pid
    try:
        os.unlink(os.path.join(directory, call))
    except FileNotFoundError:
        return pid
    return NO_SUCH_PID


def _cu() -> Any:
    from cuda.bindings import driver as cu

    return cu


def _name(err: Any) -> str:
    cu = _cu()
    try:
        e, name = cu.cuGetErrorName(err)
        if e == cu.CUresult.CUDA_SUCCESS and name:
            return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # an unknown code: its number is all we can say
        pass
    return f"CUresult {int(err)}"


def _check(result: tuple[Any, ...], what: str) -> Any:
    cu = _cu()
    err, *values = result
    if err != cu.CUresult.CUDA_SUCCESS:
        code = _name(err)
        cls = Busy if err == cu.CUresult.CUDA_ERROR_NOT_READY else DriverApiError
        raise cls(f"{what} failed: {code}", code)
    return values[0] if len(values) == 1 else tuple(values)


def driver_version() -> int:
    try:
        return int(_check(_cu().cuDriverGetVersion(), "cuDriverGetVersion"))
    except RuntimeError as e:  # cuda-pathfinder: no libcuda.so.1
        raise DriverApiError(f"no CUDA driver: {e}") from None


def _has(name: str, version: int) -> bool:
    cu = _cu()
    try:
        err, pfn, _status = cu.cuGetProcAddress(
            name.encode(), version, cu.CUdriverProcAddress_flags.CU_GET_PROC_ADDRESS_DEFAULT
        )
    except (RuntimeError, TypeError):
        return False
    return bool(err == cu.CUresult.CUDA_SUCCESS and pfn)


def support() -> Support:
    """What the loaded driver offers (its CUDA version, and the functions being there)."""
    version = driver_version()
    present = all(_has(name, version) for name in FUNCTIONS)
    return Support(
        version=version,
        checkpoint=present and version >= CHECKPOINT_MIN,
        remap=present and version >= REMAP_MIN,
        custom_storage=present
        and version >= CUSTOM_STORAGE_MIN
        and _has("cuCheckpointOperationComplete", version),
    )


def init() -> None:
    """``cuInit(0)``: the checkpoint API's restore needs it done in the caller."""
    _check(_cu().cuInit(0), "cuInit")


def state(pid: int) -> str:
    value = _check(_cu().cuCheckpointProcessGetState(pid), f"cuCheckpointProcessGetState({pid})")
    index = int(value)
    return _STATES[index] if 0 <= index < len(_STATES) else f"state {index}"


def restore_thread_id(pid: int) -> int:
    return int(
        _check(
            _cu().cuCheckpointProcessGetRestoreThreadId(pid),
            f"cuCheckpointProcessGetRestoreThreadId({pid})",
        )
    )


def lock(pid: int, timeout_ms: int) -> None:
    cu = _cu()
    args = cu.CUcheckpointLockArgs()
    args.timeoutMs = max(0, int(timeout_ms))
    _check(cu.cuCheckpointProcessLock(pid, args), f"cuCheckpointProcessLock({pid})")


def checkpoint(pid: int) -> None:
    cu = _cu()
    _check(
        cu.cuCheckpointProcessCheckpoint(
            _target(pid, "checkpoint"), cu.CUcheckpointCheckpointArgs()
        ),
        f"cuCheckpointProcessCheckpoint({pid})",
    )


def _uuid_bytes(uuid: str) -> bytes:
    """``GPU-xxxxxxxx-xxxx-...`` (NVML's spelling) -> its 16 bytes."""
    hexdigits = uuid.removeprefix("GPU-").replace("-", "")
    raw = bytes.fromhex(hexdigits)
    if len(raw) != 16:
        raise ValueError(f"{uuid!r} is not a GPU UUID")
    return raw


def _restore_args(pairs: list[tuple[str, str]] | None) -> Any:
    cu = _cu()
    args = cu.CUcheckpointRestoreArgs()
    if pairs:
        structs = []
        for old, new in pairs:
            pair = cu.CUcheckpointGpuPair()
            ctypes.memmove(pair.oldUuid.getPtr(), _uuid_bytes(old), 16)
            ctypes.memmove(pair.newUuid.getPtr(), _uuid_bytes(new), 16)
            structs.append(pair)
        args.gpuPairs = structs
        args.gpuPairsCount = len(structs)
    return args


def restore(pid: int, pairs: list[tuple[str, str]] | None = None) -> None:
    """Restore the job's GPU state; ``pairs`` (old UUID, new UUID) remap its GPUs."""
    cu = _cu()
    args = _restore_args(pairs)
    _check(
        cu.cuCheckpointProcessRestore(_target(pid, "restore"), args),
        f"cuCheckpointProcessRestore({pid})",
    )


def unlock(pid: int) -> None:
    cu = _cu()
    _check(
        cu.cuCheckpointProcessUnlock(pid, cu.CUcheckpointUnlockArgs()),
        f"cuCheckpointProcessUnlock({pid})",
    )


# ---- custom storage (CUDA 13.4 headers): the caller copies the GPU memory itself ----------


class _PerDevice(ctypes.Structure):
    """``CUcheckpointCustomStoragePerDeviceData``."""

    _fields_ = (("devPtr", ctypes.c_uint64), ("size", ctypes.c_size_t), ("stream", ctypes.c_void_p))


class _StorageInfo(ctypes.Structure):
    """``CUcheckpointCustomStorageInfo``."""

    _fields_ = (
        ("handle", ctypes.c_void_p),
        ("perDeviceData", ctypes.POINTER(_PerDevice)),
        ("deviceCount", ctypes.c_uint),
    )


@dataclass(frozen=True)
class Piece:
    """One GPU's memory of the target, mapped in this process until the operation completes."""

    ptr: int
    """Device address in this process (valid in the primary context of its GPU)."""
    size: int
    stream: int
    """A stream of that context, handed out by the driver for the copy."""


@dataclass
class CustomOp:
    """A checkpoint or restore through custom storage, until ``complete``: the
    target is CHECKPOINTING or RESTORING meanwhile."""

    handle: int
    pieces: list[Piece]

    def _stream(self, piece: int) -> Any:
        """The piece's stream, its context current in this thread (the copy
        threads are the shard writer's)."""
        cu = _cu()
        stream = cu.CUstream(self.pieces[piece].stream)
        ctx = _check(cu.cuStreamGetCtx(stream), "cuStreamGetCtx")
        _check(cu.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
        return stream

    def copy_out(self, piece: int, offset: int, dst: memoryview) -> None:
        """GPU -> ``dst`` (writable host memory), synchronously."""
        cu = _cu()
        p = self.pieces[piece]
        holder = (ctypes.c_char * len(dst)).from_buffer(dst)
        stream = self._stream(piece)
        _check(
            cu.cuMemcpyDtoHAsync(ctypes.addressof(holder), p.ptr + offset, len(dst), stream),
            "cuMemcpyDtoHAsync",
        )
        _check(cu.cuStreamSynchronize(stream), "cuStreamSynchronize")

    def copy_in(self, piece: int, offset: int, src: memoryview) -> None:
        """``src`` -> GPU, synchronously."""
        cu = _cu()
        p = self.pieces[piece]
        stream = self._stream(piece)
        _check(cu.cuMemcpyHtoDAsync(p.ptr + offset, src, len(src), stream), "cuMemcpyHtoDAsync")
        _check(cu.cuStreamSynchronize(stream), "cuStreamSynchronize")

    def complete(self) -> None:
        """``cuCheckpointOperationComplete``: the copies are done; the target holds
        nothing (checkpoint) or has its memory back, LOCKED (restore)."""
        cu = _cu()
        _check(
            cu.cuCheckpointOperationComplete(cu.CUcheckpointOperationHandle(self.handle)),
            "cuCheckpointOperationComplete",
        )


class PrimaryContexts:
    """The primary context of every GPU, retained: custom storage maps the target's
    memory into them (the driver refuses the operation otherwise)."""

    def __init__(self) -> None:
        cu = _cu()
        self.devices = [
            _check(cu.cuDeviceGet(i), "cuDeviceGet")
            for i in range(int(_check(cu.cuDeviceGetCount(), "cuDeviceGetCount")))
        ]
        self.held: list[Any] = []
        try:
            for d in self.devices:
                _check(cu.cuDevicePrimaryCtxRetain(d), "cuDevicePrimaryCtxRetain")
                self.held.append(d)
        except DriverApiError:
            self.release()
            raise

    def release(self) -> None:
        cu = _cu()
        for d in self.held:
            cu.cuDevicePrimaryCtxRelease(d)
        self.held = []


def _custom_op(out: Any) -> CustomOp:
    info = ctypes.cast(out.value, ctypes.POINTER(_StorageInfo)).contents
    pieces = [
        Piece(int(p.devPtr), int(p.size), int(p.stream or 0))
        for p in (info.perDeviceData[i] for i in range(info.deviceCount))
    ]
    return CustomOp(handle=int(info.handle or 0), pieces=pieces)


def checkpoint_custom(pid: int) -> CustomOp:
    """LOCKED -> CHECKPOINTING: the target's GPU memory is mapped here to be copied;
    ``complete`` then leaves it CHECKPOINTED, holding nothing."""
    cu = _cu()
    out = ctypes.c_void_p(0)
    args = cu.CUcheckpointCheckpointArgs()
    args.customStorageInfo_out = ctypes.addressof(out)
    _check(
        cu.cuCheckpointProcessCheckpoint(_target(pid, "checkpoint"), args),
        f"cuCheckpointProcessCheckpoint({pid}, custom storage)",
    )
    return _custom_op(out)


def restore_custom(pid: int, pairs: list[tuple[str, str]] | None = None) -> CustomOp:
    """CHECKPOINTED -> RESTORING: GPU memory for the target (on the GPUs ``pairs``
    names) mapped here to be filled; ``complete`` then leaves it LOCKED."""
    cu = _cu()
    out = ctypes.c_void_p(0)
    args = _restore_args(pairs)
    args.customStorageInfo_out = ctypes.addressof(out)
    _check(
        cu.cuCheckpointProcessRestore(_target(pid, "restore"), args),
        f"cuCheckpointProcessRestore({pid}, custom storage)",
    )
    return _custom_op(out)
