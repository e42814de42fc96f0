"""Helpers of the driver conformance tests, shared by the test modules.

Plain functions and classes over cuda-bindings; the fixtures that hand them
out live in conftest.py.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import pytest

KERNELS = "conformance"  # tests/fake_cuda/kernels/conformance.cu
# The driver paths on which the fake driver serves the calls. A test that
# configures the fake driver (FAKE_CUDA_*) or checks what only the fake does
# runs on these alone: only_paths(*FAKE_PATHS, reason=...).
FAKE_PATHS = ("fake", "interposer")
# NVIDIA's driver dereferences a forged, destroyed or NULL argument in the
# tests so marked (the behaviour is undefined): on driver 580 (an H200,
# 2026-12-04) they crashed the test process or answered other codes. The fake
# answers an error code, and so does the interposer in front of it; in front
# of NVIDIA's driver the interposer passes some of these handles on.
UNDEFINED_ON_NVIDIA = pytest.mark.only_paths(
    *FAKE_PATHS, reason="undefined behaviour on NVIDIA's driver: it crashes or answers otherwise"
)
# A kernel that waits for the host gives up after this long, so that a driver
# running work synchronously fails a test instead of hanging it. Never reached
# by a driver that behaves.
WAIT_TIMEOUT_MS = 20_000

CArg = ctypes._SimpleCData | ctypes.Structure  # type: ignore[name-defined]


class Triple(ctypes.Structure):
    """The kernels' `struct triple` (shaped like int3)."""

    _fields_ = (("x", ctypes.c_int), ("y", ctypes.c_int), ("z", ctypes.c_int))


def ok(result: tuple[Any, ...]) -> Any:
    """Check a cuda-bindings result tuple and return its value(s)."""
    from cuda.bindings import driver

    err, *rest = result
    assert err == driver.CUresult.CUDA_SUCCESS, f"driver call failed: {err!r}"
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else tuple(rest)


def err_of(result: tuple[Any, ...]) -> Any:
    """The error code of a cuda-bindings result tuple."""
    return result[0]


class ParamArray:
    """A `void **kernelParams` array over ctypes values, kept alive with them."""

    def __init__(self, args: Sequence[CArg]) -> None:
        self.args = list(args)
        self.array = (ctypes.c_void_p * max(1, len(self.args)))(
            *(ctypes.addressof(a) for a in self.args)
        )

    @property
    def address(self) -> int:
        return ctypes.addressof(self.array)


class Kernels:
    """The conformance kernels, loaded as a module in the current context."""

    def __init__(self, cu: ModuleType, module: Any) -> None:
        self.cu = cu
        self.module = module
        self._functions: dict[str, Any] = {}

    def fn(self, name: str) -> Any:
        if name not in self._functions:
            self._functions[name] = ok(self.cu.cuModuleGetFunction(self.module, name.encode()))
        return self._functions[name]

    def launch(
        self,
        name: str,
        *args: CArg,
        grid: tuple[int, int, int] = (1, 1, 1),
        block: tuple[int, int, int] = (1, 1, 1),
        stream: Any = 0,
        shared: int = 0,
    ) -> Any:
        """Launch a kernel with kernelParams; returns the error code."""
        params = ParamArray(args)
        (err,) = self.cu.cuLaunchKernel(
            self.fn(name), *grid, *block, shared, stream, params.address, 0
        )
        return err


class HostWord:
    """An int in pinned host memory, shared by the host and kernels."""

    def __init__(self, cu: ModuleType) -> None:
        self.cu = cu
        self.address = int(ok(cu.cuMemAllocHost(4)))
        self._value = ctypes.c_int.from_address(self.address)
        self._value.value = 0

    @property
    def value(self) -> int:
        return self._value.value

    def set(self, v: int) -> None:
        self._value.value = v

    def free(self) -> None:
        ok(self.cu.cuMemFreeHost(self.address))


class Gate:
    """Holds a stream at one point of its work until the host releases it.

    A kernel spins on a pinned host word; the test sees what the driver did
    (or did not) run while the stream was held, which only differs from a
    synchronous driver's behaviour if streams are really asynchronous."""

    def __init__(self, kernels: Kernels, stream: Any, flag: HostWord, out: HostWord) -> None:
        self.flag, self.out = flag, out
        err = kernels.launch(
            "wait_flag",
            ctypes.c_uint64(flag.address),
            ctypes.c_uint64(out.address),
            ctypes.c_uint64(WAIT_TIMEOUT_MS),
            stream=stream,
        )
        assert int(err) == 0, f"launching wait_flag: {err!r}"

    def release(self) -> None:
        self.flag.set(1)

    @property
    def finished(self) -> bool:
        """The kernel has returned (whatever it saw)."""
        return self.out.value != 0

    @property
    def passed(self) -> bool:
        """The kernel returned because the host released it."""
        return self.out.value == 1


def read_ints(cu: ModuleType, dptr: int, n: int) -> list[int]:
    """Copy n ints back from device memory (synchronously)."""
    buf = (ctypes.c_int * n)()
    ok(cu.cuMemcpyDtoH(ctypes.addressof(buf), dptr, ctypes.sizeof(buf)))
    return list(buf)


def write_ints(cu: ModuleType, dptr: int, values: Sequence[int]) -> None:
    """cuMemcpyHtoD from pageable memory: it may return before the bytes land
    (CUDA's API synchronisation rules), so work on a NON_BLOCKING stream must
    wait for them (cuCtxSynchronize) or it can run first on a real GPU."""
    buf = (ctypes.c_int * len(values))(*values)
    ok(cu.cuMemcpyHtoD(dptr, ctypes.addressof(buf), ctypes.sizeof(buf)))
