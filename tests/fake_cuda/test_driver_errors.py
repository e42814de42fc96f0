"""The error codes of misuse: calls before cuInit, calls without a current
context, forged and stale handles, handles of another context, missing
output pointers. Each code is the one NVIDIA's driver documents or returns."""

from __future__ import annotations

import ctypes
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from driver_helpers import FAKE_PATHS, UNDEFINED_ON_NVIDIA, Gate, HostWord, Kernels, err_of, ok

RunOnDriver = Callable[..., subprocess.CompletedProcess[str]]
Alloc = Callable[[int], int]


def test_calls_before_init(run_on_driver: RunOnDriver, kernels_path: Path) -> None:
    r = run_on_driver(
        """
        calls = {
            "cuDeviceGetCount": lambda: cu.cuDeviceGetCount(),
            "cuDeviceGet": lambda: cu.cuDeviceGet(0),
            "cuDeviceGetName": lambda: cu.cuDeviceGetName(64, 0),
            "cuDeviceTotalMem": lambda: cu.cuDeviceTotalMem(0),
            "cuDeviceGetAttribute": lambda: cu.cuDeviceGetAttribute(
                cu.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_WARP_SIZE, 0),
            "cuDevicePrimaryCtxRetain": lambda: cu.cuDevicePrimaryCtxRetain(0),
            "cuCtxCreate": lambda: cu.cuCtxCreate(None, 0, 0),
            "cuCtxGetCurrent": lambda: cu.cuCtxGetCurrent(),
            "cuCtxSynchronize": lambda: cu.cuCtxSynchronize(),
            "cuMemAlloc": lambda: cu.cuMemAlloc(16),
            "cuMemAllocHost": lambda: cu.cuMemAllocHost(16),
            "cuMemGetInfo": lambda: cu.cuMemGetInfo(),
            "cuStreamCreate": lambda: cu.cuStreamCreate(0),
            "cuEventCreate": lambda: cu.cuEventCreate(0),
            "cuModuleLoad": lambda: cu.cuModuleLoad(os.environ["KERNELS"].encode()),
        }
        # These work before cuInit.
        fine = {
            "cuDriverGetVersion": lambda: cu.cuDriverGetVersion(),
            "cuGetErrorName": lambda: cu.cuGetErrorName(E.CUDA_ERROR_INVALID_VALUE),
            "cuGetProcAddress": lambda: cu.cuGetProcAddress(b"cuInit", 13000, 0),
        }
        for name, call in {**calls, **fine}.items():
            print(name, int(call()[0]))
        """,
        env={"KERNELS": str(kernels_path)},
    )
    assert r.returncode == 0, r.stderr
    got = dict(line.split() for line in r.stdout.splitlines())
    want = {name: "3" for name in got}  # CUDA_ERROR_NOT_INITIALIZED
    want.update(cuDriverGetVersion="0", cuGetErrorName="0", cuGetProcAddress="0")
    assert got == want


def _in_new_thread(call: Callable[[], Any]) -> Any:
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(call()))
    t.start()
    t.join()
    return out[0]


def test_calls_without_a_current_context(
    cu: ModuleType, kernels: Kernels, dmem: Alloc, kernels_path: Path
) -> None:
    d = dmem(16)
    buf = ctypes.create_string_buffer(16)
    host = ctypes.addressof(buf)
    calls: dict[str, Callable[[], Any]] = {
        "cuCtxSynchronize": lambda: cu.cuCtxSynchronize(),
        "cuCtxGetDevice": lambda: cu.cuCtxGetDevice(),
        "cuMemAlloc": lambda: cu.cuMemAlloc(16),
        "cuMemAllocHost": lambda: cu.cuMemAllocHost(16),
        "cuMemGetInfo": lambda: cu.cuMemGetInfo(),
        "cuMemcpyHtoD": lambda: cu.cuMemcpyHtoD(d, host, 16),
        "cuMemcpyDtoH": lambda: cu.cuMemcpyDtoH(host, d, 16),
        "cuMemsetD8": lambda: cu.cuMemsetD8(d, 0, 16),
        "cuMemsetD32Async": lambda: cu.cuMemsetD32Async(d, 0, 4, 0),
        "cuStreamCreate": lambda: cu.cuStreamCreate(0),
        "cuStreamSynchronize(NULL)": lambda: cu.cuStreamSynchronize(0),
        "cuEventCreate": lambda: cu.cuEventCreate(0),
        "cuModuleLoad": lambda: cu.cuModuleLoad(str(kernels_path).encode()),
        "cuLaunchKernel": lambda: cu.cuLaunchKernel(
            kernels.fn("noop"), 1, 1, 1, 1, 1, 1, 0, 0, 0, 0
        ),
    }
    got = {name: _in_new_thread(lambda c=call: err_of(c())) for name, call in calls.items()}
    assert got == {name: cu.CUresult.CUDA_ERROR_INVALID_CONTEXT for name in calls}


@UNDEFINED_ON_NVIDIA
def test_forged_context(cu: ModuleType, ctx: Any) -> None:
    bad = cu.CUresult.CUDA_ERROR_INVALID_CONTEXT
    forged = cu.CUcontext(0x7FFF_C0DE_0000)
    assert err_of(cu.cuCtxSetCurrent(forged)) == bad
    assert err_of(cu.cuCtxPushCurrent(forged)) == bad
    assert err_of(cu.cuCtxDestroy(forged)) == bad
    assert err_of(cu.cuCtxGetApiVersion(forged)) == bad
    # The failed calls left the current context alone.
    assert int(ok(cu.cuCtxGetCurrent())) == int(ctx)


@pytest.mark.only_paths(
    *FAKE_PATHS, reason="NVIDIA's driver (580) makes a destroyed context's handle current"
)
def test_destroyed_context(cu: ModuleType, ctx: Any) -> None:
    bad = cu.CUresult.CUDA_ERROR_INVALID_CONTEXT
    c = ok(cu.cuCtxCreate(None, 0, ok(cu.cuDeviceGet(0))))
    ok(cu.cuCtxDestroy(c))
    assert err_of(cu.cuCtxSetCurrent(c)) == bad
    assert err_of(cu.cuCtxPushCurrent(c)) == bad
    assert err_of(cu.cuCtxGetApiVersion(c)) == bad
    assert int(ok(cu.cuCtxGetCurrent())) == int(ctx)


@pytest.fixture
def other_ctx(cu: ModuleType, ctx: Any) -> Iterator[Any]:
    """A second context on device 0; `ctx` stays current."""
    c = ok(cu.cuCtxCreate(None, 0, ok(cu.cuDeviceGet(0))))
    ok(cu.cuCtxPopCurrent())
    yield c
    ok(cu.cuCtxPushCurrent(c))
    ok(cu.cuCtxSynchronize())
    ok(cu.cuCtxPopCurrent())
    ok(cu.cuCtxDestroy(c))


def _in_ctx(cu: ModuleType, c: Any, call: Callable[[], Any]) -> Any:
    ok(cu.cuCtxPushCurrent(c))
    try:
        return call()
    finally:
        ok(cu.cuCtxPopCurrent())


def test_stream_of_another_context(
    cu: ModuleType, ctx: Any, other_ctx: Any, kernels: Kernels, dmem: Alloc
) -> None:
    bad = cu.CUresult.CUDA_ERROR_INVALID_HANDLE
    d = dmem(16)
    foreign = _in_ctx(cu, other_ctx, lambda: ok(cu.cuStreamCreate(0)))
    try:
        assert err_of(cu.cuMemsetD32Async(d, 0, 4, foreign)) == bad
        assert (
            err_of(cu.cuLaunchKernel(kernels.fn("noop"), 1, 1, 1, 1, 1, 1, 0, foreign, 0, 0)) == bad
        )
        # An event records only streams of its own context.
        e = ok(cu.cuEventCreate(0))
        assert err_of(cu.cuEventRecord(e, foreign)) == bad
        ok(cu.cuEventDestroy(e))
        # Synchronising on a stream needs no particular current context.
        ok(cu.cuStreamSynchronize(foreign))
        ok(cu.cuStreamQuery(foreign))
    finally:
        ok(cu.cuStreamDestroy(foreign))


def test_wait_on_an_event_of_another_context(
    cu: ModuleType,
    ctx: Any,
    other_ctx: Any,
    kernels: Kernels,
    hostword: Callable[[], HostWord],
    stream: Callable[..., Any],
) -> None:
    """cuStreamWaitEvent accepts an event of another context, and waits."""
    held = stream(cu.CUstream_flags.CU_STREAM_NON_BLOCKING)
    g = Gate(kernels, held, hostword(), hostword())
    try:
        e = ok(cu.cuEventCreate(0))
        ok(cu.cuEventRecord(e, held))

        def wait_there() -> Any:
            s = ok(cu.cuStreamCreate(int(cu.CUstream_flags.CU_STREAM_NON_BLOCKING)))
            ok(cu.cuStreamWaitEvent(s, e, 0))
            return s

        waiter = _in_ctx(cu, other_ctx, wait_there)
        assert err_of(cu.cuStreamQuery(waiter)) == cu.CUresult.CUDA_ERROR_NOT_READY
    finally:
        g.release()
    ok(cu.cuStreamSynchronize(waiter))
    assert g.passed
    _in_ctx(cu, other_ctx, lambda: ok(cu.cuStreamDestroy(waiter)))
    ok(cu.cuEventDestroy(e))


def test_missing_output_pointers(libcuda: ctypes.CDLL, ctx: Any) -> None:
    """Output pointers are checked: a NULL one is CUDA_ERROR_INVALID_VALUE."""
    inval = 1
    ptr, uint, size = ctypes.c_void_p, ctypes.c_uint, ctypes.c_size_t
    for name, argtypes, args in [
        ("cuDeviceGetCount", [ptr], (None,)),
        ("cuDriverGetVersion", [ptr], (None,)),
        ("cuCtxGetCurrent", [ptr], (None,)),
        ("cuMemAlloc_v2", [ptr, size], (None, 16)),
        ("cuStreamCreate", [ptr, uint], (None, 0)),
        ("cuEventCreate", [ptr, uint], (None, 0)),
        ("cuModuleLoad", [ptr, ctypes.c_char_p], (None, b"x")),
    ]:
        fn = getattr(libcuda, name)
        fn.restype = ctypes.c_int
        fn.argtypes = argtypes
        assert fn(*args) == inval, name
    # Except cuMemGetInfo's: it writes the ones it is given (NVIDIA's driver 580).
    info = libcuda.cuMemGetInfo_v2
    info.restype, info.argtypes = ctypes.c_int, [ptr, ptr]
    total = ctypes.c_size_t()
    assert info(None, None) == 0
    assert info(None, ctypes.byref(total)) == 0 and total.value > 0
