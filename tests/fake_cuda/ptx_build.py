"""PTX from real compilers for the PTX tests, and a small launcher.

Kernels are CUDA C sources under ``tests/fake_cuda/kernels/ptx_*.cu``,
compiled here with NVRTC from the ``nvidia-cuda-nvrtc`` wheel (no CUDA
toolkit needed), for ``compute_90`` as the fake driver imitates an H100/H200.
The same PTX loads on NVIDIA's driver, so these tests hold on a real GPU too.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from driver_helpers import CArg, ParamArray, ok

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from nvrtc_ptx import preload_builtins as _preload_nvrtc_builtins

KERNEL_DIR = Path(__file__).parent / "kernels"
ARCH = "compute_90"


@functools.cache
def nvrtc_ptx(source: str, name: str = "kernel.cu", options: tuple[str, ...] = ()) -> bytes:
    """PTX of a CUDA C source, NUL-terminated as cuModuleLoadData takes it."""
    from cuda.bindings import nvrtc

    _preload_nvrtc_builtins()  # see tools/nvrtc_ptx.py

    err, prog = nvrtc.nvrtcCreateProgram(source.encode(), name.encode(), 0, [], [])
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, err
    try:
        opts = [f"-arch={ARCH}".encode(), *(o.encode() for o in options)]
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            _, size = nvrtc.nvrtcGetProgramLogSize(prog)
            log = b" " * size
            nvrtc.nvrtcGetProgramLog(prog, log)
            raise AssertionError(f"NVRTC failed on {name}: {log.decode(errors='replace')}")
        err, size = nvrtc.nvrtcGetPTXSize(prog)
        assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, err
        ptx = b" " * size
        (err,) = nvrtc.nvrtcGetPTX(prog, ptx)
        assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, err
        return ptx
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def kernel_ptx(set_name: str, options: tuple[str, ...] = ()) -> bytes:
    """PTX of tests/fake_cuda/kernels/<set_name>.cu."""
    path = KERNEL_DIR / f"{set_name}.cu"
    return nvrtc_ptx(path.read_text(), path.name, options)


class PtxModule:
    """A module loaded from PTX in the current context."""

    def __init__(self, cu: ModuleType, module: Any) -> None:
        self.cu = cu
        self.module = module

    def fn(self, name: str) -> Any:
        return ok(self.cu.cuModuleGetFunction(self.module, name.encode()))

    def launch(
        self,
        name: str,
        *args: CArg,
        grid: tuple[int, int, int] = (1, 1, 1),
        block: tuple[int, int, int] = (1, 1, 1),
        shared: int = 0,
        stream: Any = 0,
    ) -> None:
        params = ParamArray(args)
        ok(self.cu.cuLaunchKernel(self.fn(name), *grid, *block, shared, stream, params.address, 0))
        ok(self.cu.cuStreamSynchronize(stream))

    def global_(self, name: str) -> tuple[int, int]:
        dptr, size = ok(self.cu.cuModuleGetGlobal(self.module, name.encode()))
        return int(dptr), int(size)


@contextmanager
def loaded(cu: ModuleType, ptx: bytes) -> Iterator[PtxModule]:
    module = ok(cu.cuModuleLoadData(ptx))
    try:
        yield PtxModule(cu, module)
    finally:
        ok(cu.cuCtxSynchronize())
        ok(cu.cuModuleUnload(module))


class DeviceArrays:
    """Device copies of numpy arrays, freed together."""

    def __init__(self, cu: ModuleType) -> None:
        self.cu = cu
        self.owned: list[int] = []

    def put(self, a: np.ndarray[Any, Any]) -> ctypes.c_uint64:
        a = np.ascontiguousarray(a)
        ptr = int(ok(self.cu.cuMemAlloc(max(1, a.nbytes))))
        self.owned.append(ptr)
        if a.nbytes:
            ok(self.cu.cuMemcpyHtoD(ptr, a.ctypes.data, a.nbytes))
        return ctypes.c_uint64(ptr)

    def empty(self, shape: int | Sequence[int], dtype: Any) -> ctypes.c_uint64:
        return self.put(np.zeros(shape, dtype=dtype))

    def get(
        self, ptr: ctypes.c_uint64, shape: int | Sequence[int], dtype: Any
    ) -> np.ndarray[Any, Any]:
        out = np.zeros(shape, dtype=dtype)
        ok(self.cu.cuMemcpyDtoH(out.ctypes.data, ptr.value, out.nbytes))
        return out

    def free(self) -> None:
        ok(self.cu.cuCtxSynchronize())
        for ptr in self.owned:
            ok(self.cu.cuMemFree(ptr))
        self.owned.clear()
