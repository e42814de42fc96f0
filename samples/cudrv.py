"""A small helper over cuda.bindings.driver shared by the Python samples.

- `call(fn, *args)` runs a driver function and raises `CudaError` naming the
  function and the error on failure, returning the results without the status.
- `init()` initialises the driver and makes device 0's primary context current.
- `load_module(set_name)` loads a sample kernel set with whichever image the
  driver accepts: the GPU images (`.fatbin`, `.ptx`) or the fake driver's
  module (`.fake.so`), trying the kind that worked last time first.
- `launch(func, grid, block, *args)` launches a kernel; each argument is a
  ctypes value (`ptr(x)`, `i32(n)`, `f32(v)`, ...), which says how it is laid
  out, as cuda-bindings' `kernelParams=(values, types)` form wants.

Kernels are found in $CEDANA_GPU_KERNELS_DIR, else in the installed native
directory (cedana_gpu.paths.kernels_dir(); $CEDANA_GPU_NATIVE_DIR overrides).
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cuda.bindings import driver as cu

# ctypes types for kernel arguments; pointers are passed as plain ints.
ptr = ctypes.c_void_p
i32 = ctypes.c_int32
u32 = ctypes.c_uint32
i64 = ctypes.c_int64
u64 = ctypes.c_uint64
f32 = ctypes.c_float
f64 = ctypes.c_double

Dim = int | tuple[int, int, int]
KernelArg = ctypes._SimpleCData  # a ctypes value: its type gives the layout


def error_name(status: cu.CUresult) -> str:
    err, name = cu.cuGetErrorName(status)
    return name.decode() if err == cu.CUresult.CUDA_SUCCESS else f"error {int(status)}"


class CudaError(RuntimeError):
    """A driver call failed."""

    def __init__(self, func: str, status: cu.CUresult) -> None:
        self.func = func
        self.status = status
        super().__init__(f"{func} failed: {error_name(status)}")


def call(fn: Any, *args: Any) -> Any:
    """Run a driver function; raise CudaError on failure. Returns None, the one
    result, or a tuple of results."""
    out = fn(*args)
    status, rest = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
    if status != cu.CUresult.CUDA_SUCCESS:
        raise CudaError(getattr(fn, "__name__", str(fn)), status)
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def init(ordinal: int = 0) -> cu.CUcontext:
    """Initialise the driver and make the device's primary context current
    (on the calling thread; other threads call `use(ctx)`)."""
    call(cu.cuInit, 0)
    dev = call(cu.cuDeviceGet, ordinal)
    ctx = call(cu.cuDevicePrimaryCtxRetain, dev)
    call(cu.cuCtxSetCurrent, ctx)
    return ctx


def use(ctx: cu.CUcontext) -> None:
    call(cu.cuCtxSetCurrent, ctx)


# ---- modules -----------------------------------------------------------------

# What the driver answers for an image that is not for it: a GPU image on the
# fake driver, a host shared object on NVIDIA's, PTX too new for the driver.
REFUSALS = frozenset(
    {
        cu.CUresult.CUDA_ERROR_INVALID_IMAGE,
        cu.CUresult.CUDA_ERROR_INVALID_PTX,
        cu.CUresult.CUDA_ERROR_UNSUPPORTED_PTX_VERSION,
        cu.CUresult.CUDA_ERROR_NO_BINARY_FOR_GPU,
        cu.CUresult.CUDA_ERROR_JIT_COMPILER_NOT_FOUND,
        cu.CUresult.CUDA_ERROR_JIT_COMPILATION_DISABLED,
        cu.CUresult.CUDA_ERROR_INVALID_SOURCE,
        cu.CUresult.CUDA_ERROR_SHARED_OBJECT_INIT_FAILED,
        cu.CUresult.CUDA_ERROR_SHARED_OBJECT_SYMBOL_NOT_FOUND,
        cu.CUresult.CUDA_ERROR_NOT_SUPPORTED,
        cu.CUresult.CUDA_ERROR_FILE_NOT_FOUND,
    }
)
IMAGE_SUFFIXES = {"real": (".fatbin", ".ptx"), "fake": (".fake.so",)}

_kind_lock = threading.Lock()
_kind: str | None = None  # the image kind this driver accepted, once known


def kernels_dir() -> Path:
    override = os.environ.get("CEDANA_GPU_KERNELS_DIR")
    if override:
        return Path(override)
    try:
        from cedana_gpu import paths
    except ImportError as e:
        raise FileNotFoundError(
            "cannot find the sample kernels: set CEDANA_GPU_KERNELS_DIR, or make "
            "cedana_gpu importable (pip install -e ., or PYTHONPATH=<checkout>)"
        ) from e
    return paths.kernels_dir()


def _remember(kind: str) -> None:
    global _kind
    with _kind_lock:
        _kind = kind


def _kind_order() -> list[str]:
    with _kind_lock:
        known = _kind
    return ["fake", "real"] if known == "fake" else ["real", "fake"]


def load_module(set_name: str, directory: Path | None = None) -> cu.CUmodule:
    """Load kernel set `set_name` with the first image the driver accepts."""
    directory = directory if directory is not None else kernels_dir()
    refused: list[str] = []
    for kind in _kind_order():
        for suffix in IMAGE_SUFFIXES[kind]:
            path = directory / f"{set_name}{suffix}"
            if not path.is_file():
                continue
            status, mod = cu.cuModuleLoad(str(path).encode())
            if status == cu.CUresult.CUDA_SUCCESS:
                _remember(kind)
                return mod
            if status not in REFUSALS:
                raise CudaError(f"cuModuleLoad({path.name})", status)
            refused.append(f"{path.name}: {error_name(status)}")
    if not refused:
        raise FileNotFoundError(
            f"kernel set '{set_name}' not found in {directory}: build the samples "
            "(cmake --build), or set CEDANA_GPU_KERNELS_DIR / CEDANA_GPU_NATIVE_DIR"
        )
    raise RuntimeError(f"the driver refused every image of '{set_name}': " + "; ".join(refused))


# An empty PTX module: any NVIDIA driver of the last decade accepts it, and so
# does the fake driver since it runs PTX (issue 12); a fake driver built
# without PTX refuses it.
_PROBE_PTX = b".version 6.0\n.target sm_50\n.address_size 64\n\0"


def driver_kind() -> str:
    """'real' when the driver takes GPU images (PTX: NVIDIA's, and the fake
    driver's interpreter), 'fake' when it wants host modules. Needs a current
    context."""
    with _kind_lock:
        known = _kind
    if known is not None:
        return known
    status, mod = cu.cuModuleLoadData(_PROBE_PTX)
    if status == cu.CUresult.CUDA_SUCCESS:
        call(cu.cuModuleUnload, mod)
        _remember("real")
        return "real"
    if status not in REFUSALS:
        raise CudaError("cuModuleLoadData(probe)", status)
    _remember("fake")
    return "fake"


def function(mod: cu.CUmodule, name: str) -> cu.CUfunction:
    return call(cu.cuModuleGetFunction, mod, name.encode())


def functions(mod: cu.CUmodule, names: Sequence[str]) -> dict[str, cu.CUfunction]:
    return {n: function(mod, n) for n in names}


# ---- launches and memory -------------------------------------------------------


def _dim(d: Dim) -> tuple[int, int, int]:
    return (d, 1, 1) if isinstance(d, int) else d


def blocks_for(n: int, block: int) -> int:
    return max(1, (n + block - 1) // block)


def launch(
    func: cu.CUfunction,
    grid: Dim,
    block: Dim,
    *args: KernelArg,
    stream: cu.CUstream | int = 0,
    shared: int = 0,
) -> None:
    """Launch `func`; args are ctypes values in the kernel's parameter order."""
    gx, gy, gz = _dim(grid)
    bx, by, bz = _dim(block)
    params = (tuple(a.value for a in args), tuple(type(a) for a in args))
    call(cu.cuLaunchKernel, func, gx, gy, gz, bx, by, bz, shared, stream, params, 0)


def alloc(nbytes: int) -> int:
    """Device memory; returns the address as an int."""
    return int(call(cu.cuMemAlloc, nbytes))


def free(dptr: int) -> None:
    call(cu.cuMemFree, dptr)


def htod(dptr: int, host: Any, nbytes: int, stream: cu.CUstream | int = 0) -> None:
    """Asynchronous copy to the device (synchronous for pageable host memory)."""
    call(cu.cuMemcpyHtoDAsync, dptr, host, nbytes, stream)


def dtoh(host: Any, dptr: int, nbytes: int, stream: cu.CUstream | int = 0) -> None:
    """Copy to the host and wait for it."""
    call(cu.cuMemcpyDtoHAsync, host, dptr, nbytes, stream)
    call(cu.cuStreamSynchronize, stream)


def stream_create(non_blocking: bool = True) -> cu.CUstream:
    flags = cu.CUstream_flags.CU_STREAM_NON_BLOCKING if non_blocking else 0
    return call(cu.cuStreamCreate, flags)
