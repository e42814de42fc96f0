"""ctypes binding of the native dispatcher, ``gpu/controller/cedana_gpu_controller.h``.

``libcedana-gpu-controller.so`` serves one job's request ring against the CUDA
driver loaded in this process. Load the driver first (``gpu_info.load_driver``):
the dispatcher resolves ``libcuda.so.1`` by its SONAME, which the loader then
answers with the driver already loaded.

The C functions return 0 on success and a negative errno or a positive
CUresult on failure; ``NativeError`` carries that code and the line
``cgc_last_error`` gave.

Checkpoint support: ``checksum`` (CRC32C, no driver needed), and on a
dispatcher ``regions``, ``read_device``, ``write_device``, ``export_state``
and ``import_state``. ctypes releases the GIL during every call, so threads
can read and write shards in parallel.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cedana_gpu.errors import ControllerError
from cedana_gpu.paths import NativeNotBuilt, native_dir

_Signature = tuple[str, Any, tuple[Any, ...]]
"""A C function's name, result type and argument types, as ctypes wants them."""

LIBRARY_NAME = "libcedana-gpu-controller.so"
INFO_BUFFER = 1 << 16


class NativeError(ControllerError):
    """A dispatcher call failed. ``code`` is a negative errno or a positive CUresult."""

    def __init__(self, what: str, code: int, message: str) -> None:
        self.what = what
        self.code = code
        self.message = message
        if not message:
            message = (
                os.strerror(-code) if code < 0 and -code in errno.errorcode else f"error {code}"
            )
        super().__init__(f"{what} failed: {message}")


class cgc_config(ctypes.Structure):
    """``struct cgc_config``; checked against the C layout by tests/test_shm_layout.py."""

    _fields_ = (
        ("job_id", ctypes.c_char_p),
        ("ring_slots", ctypes.c_uint32),
        ("nchannels", ctypes.c_uint32),
        ("staging_size", ctypes.c_uint64),
        ("va_base", ctypes.c_uint64),
        ("va_size", ctypes.c_uint64),
        ("generation", ctypes.c_uint64),
        ("timeout_ms", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("gid", ctypes.c_uint32),
        ("shm_dir", ctypes.c_char_p),
        ("segment_name", ctypes.c_char_p),
        ("va_reserved", ctypes.c_uint32),
    )


@dataclass(frozen=True)
class DispatcherConfig:
    """What ``cgc_open`` needs; 0 means the dispatcher's default."""

    job_id: str
    ring_slots: int = 0
    nchannels: int = 0
    staging_size: int = 0
    va_base: int = 0
    va_size: int = 0
    generation: int = 1
    timeout_ms: int = 0
    uid: int = -1
    gid: int = -1
    shm_dir: str | None = None
    """Directory of the segment and pinned files (None: /dev/shm)."""
    segment_name: str | None = None
    """File name of the segment (None: cedana-gpu.<job_id>); a restored job keeps its old one."""
    va_reserved: bool = False
    """``va_base``/``va_size`` came from ``reserve()`` in this process: ``cgc_open``
    takes that range over (and owns it whether it succeeds or not)."""

    def to_c(self) -> cgc_config:
        return cgc_config(
            job_id=self.job_id.encode(),
            ring_slots=self.ring_slots,
            nchannels=self.nchannels,
            staging_size=self.staging_size,
            va_base=self.va_base,
            va_size=self.va_size,
            generation=self.generation,
            timeout_ms=self.timeout_ms,
            uid=os.getuid() if self.uid < 0 else self.uid,
            gid=os.getgid() if self.gid < 0 else self.gid,
            shm_dir=None if self.shm_dir is None else os.fsencode(self.shm_dir),
            segment_name=None if self.segment_name is None else self.segment_name.encode(),
            va_reserved=int(self.va_reserved),
        )


_c = ctypes.c_void_p  # cgc_t *


def library_path() -> Path:
    return native_dir() / "controller" / LIBRARY_NAME


_lib_lock = threading.Lock()
_lib: ctypes.CDLL | None = None


def load_library(path: Path | None = None) -> ctypes.CDLL:
    """Load the dispatcher (once per process) and declare its functions."""
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        path = path or library_path()
        if not path.is_file():
            raise NativeNotBuilt(
                f"the GPU dispatcher {path} is missing: run 'make setup' "
                "(or 'pip install -e .') in the checkout, or set CEDANA_GPU_NATIVE_DIR"
            )
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as e:
            raise NativeNotBuilt(f"cannot load the GPU dispatcher {path}: {e}") from None
        cfg_p = ctypes.POINTER(cgc_config)
        required: list[_Signature] = [
            ("cgc_open", ctypes.c_int, (cfg_p, ctypes.POINTER(_c))),
            ("cgc_start", ctypes.c_int, (_c,)),
            ("cgc_freeze", ctypes.c_int, (_c, ctypes.c_uint32)),
            ("cgc_unfreeze", ctypes.c_int, (_c,)),
            ("cgc_stop", ctypes.c_int, (_c,)),
            ("cgc_close", None, (_c,)),
            ("cgc_info_json", ctypes.c_int, (_c, ctypes.c_char_p, ctypes.c_size_t)),
            ("cgc_last_error", ctypes.c_char_p, (_c,)),
            (
                "cgc_validate_request",
                ctypes.c_int,
                (
                    ctypes.c_void_p,
                    ctypes.c_size_t,
                    ctypes.c_uint32,
                    ctypes.c_uint64,
                    ctypes.c_char_p,
                    ctypes.c_size_t,
                ),
            ),
        ]
        for name, restype, argtypes in required:
            fn = getattr(lib, name)
            fn.restype = restype
            fn.argtypes = argtypes
        u64, u64_p = ctypes.c_uint64, ctypes.POINTER(ctypes.c_uint64)
        size_p = ctypes.POINTER(ctypes.c_size_t)
        optional: list[_Signature] = [
            ("cgc_checksum", u64, (ctypes.c_void_p, ctypes.c_size_t, u64)),
            ("cgc_regions", ctypes.c_int, (_c, u64_p, ctypes.c_size_t, size_p)),
            ("cgc_read_device", ctypes.c_int, (_c, u64, ctypes.c_void_p, u64, u64_p)),
            ("cgc_write_device", ctypes.c_int, (_c, u64, ctypes.c_void_p, u64)),
            ("cgc_export_state", ctypes.c_int, (_c, ctypes.c_char_p)),
            ("cgc_import_state", ctypes.c_int, (_c, ctypes.c_char_p)),
            # The `auto` engine's hand-off (gpu/intercept/handoff.c).
            ("cgc_handed_off", ctypes.c_int, (_c,)),
            ("cgc_driver_path", ctypes.c_int, (_c, ctypes.c_char_p, ctypes.c_size_t)),
            # The warm pool's standbys (controller/standby.py).
            ("cgc_reserve", ctypes.c_int, (u64_p, u64_p)),
            ("cgc_release_reserved", None, (u64, u64)),
        ]
        for name, restype, argtypes in optional:
            # Checkpoint support: missing from an old build, said when used.
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype = restype
                fn.argtypes = argtypes
        _lib = lib
        return lib


def _need(lib: ctypes.CDLL, name: str) -> Any:
    fn = getattr(lib, name, None)
    if fn is None or not hasattr(fn, "argtypes") or fn.argtypes is None:
        raise NativeNotBuilt(
            f"the GPU dispatcher {library_path()} has no {name}: rebuild it with 'make setup'"
        )
    return fn


def buffer_address(buf: Any) -> tuple[int, int, Any]:
    """(address, length in bytes, object to keep alive) of a buffer, without copying.

    Takes bytes, bytearray, memoryview (read-only ones too), mmap, numpy arrays,
    ctypes arrays."""
    if isinstance(buf, bytes):
        holder = ctypes.c_char_p(buf)
        return ctypes.cast(holder, ctypes.c_void_p).value or 0, len(buf), holder
    view = memoryview(buf)
    nbytes = view.nbytes
    if nbytes == 0:
        return 0, 0, view
    if not view.readonly and view.c_contiguous:
        arr = (ctypes.c_char * nbytes).from_buffer(view.cast("B"))
        return ctypes.addressof(arr), nbytes, arr
    import numpy as np

    a = np.frombuffer(view.cast("B") if view.c_contiguous else view.tobytes(), dtype=np.uint8)
    return int(a.ctypes.data), nbytes, a


def checksum(buf: Any, seed: int = 0) -> int:
    """``cgc_checksum``: the 64-bit checksum (CRC32C) of ``buf``, continuing from ``seed``."""
    lib = load_library()
    fn = _need(lib, "cgc_checksum")
    addr, n, _keep = buffer_address(buf)
    return int(fn(addr, n, seed))


@dataclass(frozen=True)
class Reservation:
    """A device address range ``reserve()`` took in this process, with device 0's
    primary context: given to ``DispatcherConfig(va_reserved=True)`` or released."""

    va_base: int
    va_size: int


def reserve() -> Reservation:
    """``cgc_reserve``: what ``cgc_open`` would reserve (twice device 0's memory),
    taken before any job is known, with the primary context created."""
    lib = load_library()
    fn = _need(lib, "cgc_reserve")
    base, size = ctypes.c_uint64(), ctypes.c_uint64()
    code = int(fn(ctypes.byref(base), ctypes.byref(size)))
    if code != 0:
        msg = lib.cgc_last_error(None)
        raise NativeError("cgc_reserve", code, msg.decode(errors="replace") if msg else "")
    return Reservation(int(base.value), int(size.value))


def release_reserved(r: Reservation) -> None:
    """``cgc_release_reserved``: give back a reservation no dispatcher took."""
    _need(load_library(), "cgc_release_reserved")(r.va_base, r.va_size)


def validate_request(
    request: bytes, nchannels: int = 32, staging_size: int = 1 << 20
) -> tuple[int, str]:
    """``cgc_validate_request``: (0, "") for a well-formed request, else (CUresult, why)."""
    lib = load_library()
    buf = ctypes.create_string_buffer(request, len(request))
    why = ctypes.create_string_buffer(256)
    code = lib.cgc_validate_request(buf, len(request), nchannels, staging_size, why, len(why))
    return int(code), why.value.decode(errors="replace")


class Dispatcher:
    """One job's dispatcher: ``open`` → ``start`` → (``freeze``/``unfreeze``) → ``stop`` →
    ``close``. Thread-safe: the control socket's threads may ask ``info`` while
    the main thread stops and closes it."""

    def __init__(self, lib: ctypes.CDLL | None = None) -> None:
        self._lib = lib or load_library()
        self._handle = _c()
        self._lock = threading.RLock()
        self._stopped = False

    @property
    def is_open(self) -> bool:
        return bool(self._handle.value)

    def _last_error(self) -> str:
        msg = self._lib.cgc_last_error(self._handle)
        return msg.decode(errors="replace") if msg else ""

    def _check(self, what: str, code: int) -> None:
        if code != 0:
            raise NativeError(what, int(code), self._last_error())

    def open(self, config: DispatcherConfig) -> None:
        """Create the segment and initialise the driver (state STARTING)."""
        with self._lock:
            if self.is_open:
                raise RuntimeError("dispatcher already open")
            cfg = config.to_c()
            code = self._lib.cgc_open(ctypes.byref(cfg), ctypes.byref(self._handle))
            if code != 0:
                # cgc_last_error(NULL) reports a failure before there was a handle.
                message = self._last_error()
                if self.is_open:
                    self._lib.cgc_close(self._handle)
                    self._handle = _c()
                raise NativeError("cgc_open", int(code), message)
            self._stopped = False

    def start(self) -> None:
        with self._lock:
            self._check("cgc_start", self._lib.cgc_start(self._handle))

    # ---- the `auto` engine's hand-off ----------------------------------------------

    @property
    def handed_off(self) -> bool:
        """``cgc_handed_off``: the job handed itself to the driver engine (it asked
        for NVIDIA's runtime export tables while it held no device state here): it
        runs on a driver of its own in its process, which the driver engine
        checkpoints; this dispatcher serves it nothing more."""
        if not self.is_open:
            return False
        return bool(_need(self._lib, "cgc_handed_off")(self._handle))

    def driver_path(self) -> str:
        """``cgc_driver_path``: the absolute path of the driver this dispatcher
        calls, which a job loads itself when it is handed to the driver engine
        (CEDANA_GPU_HANDOFF_DRIVER); "" where it cannot be told (an old build,
        a dispatcher not open), which only leaves the job without a hand-off."""
        fn = getattr(self._lib, "cgc_driver_path", None)
        if fn is None or fn.argtypes is None or not self.is_open:
            return ""
        buf = ctypes.create_string_buffer(4096)
        return os.fsdecode(buf.value) if fn(self._handle, buf, len(buf)) == 0 else ""

    def freeze(self, timeout_ms: int) -> None:
        # Not under the lock: a freeze may take long, and info must still answer.
        self._check("cgc_freeze", self._lib.cgc_freeze(self._handle, timeout_ms))

    def unfreeze(self) -> None:
        self._check("cgc_unfreeze", self._lib.cgc_unfreeze(self._handle))

    def stop(self) -> None:
        with self._lock:
            if self.is_open and not self._stopped:
                self._stopped = True
                self._check("cgc_stop", self._lib.cgc_stop(self._handle))

    def close(self) -> None:
        """Stop if needed, release the GPU state, unlink the segment and pinned files."""
        with self._lock:
            if not self.is_open:
                return
            try:
                self.stop()
            finally:
                self._lib.cgc_close(self._handle)
                self._handle = _c()

    # ---- checkpoint support ------------------------------------------------------

    def regions(self) -> list[tuple[int, int]]:
        """``cgc_regions``: every device memory chunk to save, as (address, size)."""
        fn = _need(self._lib, "cgc_regions")
        cap = 1024
        while True:
            pairs = (ctypes.c_uint64 * (2 * cap))()
            count = ctypes.c_size_t(0)
            self._check("cgc_regions", fn(self._handle, pairs, cap, ctypes.byref(count)))
            n = int(count.value)
            if n <= cap:
                return [(int(pairs[2 * i]), int(pairs[2 * i + 1])) for i in range(n)]
            cap = n

    def read_device(self, addr: int, dst: Any, size: int | None = None) -> int:
        """``cgc_read_device``: copy ``size`` bytes at device address ``addr`` into
        ``dst`` (a writable buffer); returns their checksum."""
        fn = _need(self._lib, "cgc_read_device")
        ptr, n, _keep = buffer_address(dst)
        size = n if size is None else size
        if size > n:
            raise ValueError(f"read_device: {size} bytes do not fit in a buffer of {n}")
        out = ctypes.c_uint64(0)
        self._check("cgc_read_device", fn(self._handle, addr, ptr, size, ctypes.byref(out)))
        return int(out.value)

    def write_device(self, addr: int, src: Any, size: int | None = None) -> None:
        """``cgc_write_device``: copy ``src`` (``size`` bytes of it) to device address ``addr``."""
        fn = _need(self._lib, "cgc_write_device")
        ptr, n, _keep = buffer_address(src)
        size = n if size is None else size
        if size > n:
            raise ValueError(f"write_device: {size} bytes asked of a buffer of {n}")
        self._check("cgc_write_device", fn(self._handle, addr, ptr, size))

    def export_state(self, directory: Path) -> None:
        """``cgc_export_state``: ``directory``/state.json and ``directory``/modules/."""
        fn = _need(self._lib, "cgc_export_state")
        self._check("cgc_export_state", fn(self._handle, os.fsencode(directory)))

    def import_state(self, directory: Path) -> None:
        """``cgc_import_state``: rebuild the exported tables (mappings at the same
        addresses, modules, every minted handle) on a freshly opened dispatcher."""
        fn = _need(self._lib, "cgc_import_state")
        self._check("cgc_import_state", fn(self._handle, os.fsencode(directory)))

    def info(self) -> dict[str, Any]:
        """``cgc_info_json``, parsed; {} once closed."""
        with self._lock:
            if not self.is_open:
                return {}
            buf = ctypes.create_string_buffer(INFO_BUFFER)
            self._check("cgc_info_json", self._lib.cgc_info_json(self._handle, buf, len(buf)))
            text = buf.value.decode(errors="replace")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return {"raw": text}
        return value if isinstance(value, dict) else {"value": value}
