"""Initialisation, devices, contexts (primary and created, per-thread current
context, push/pop), version, error names and strings."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from driver_helpers import FAKE_PATHS, UNDEFINED_ON_NVIDIA, err_of, ok

from cedana_gpu import paths

RunOnDriver = Callable[..., subprocess.CompletedProcess[str]]


def _int(handle: Any) -> int:
    return int(handle) if handle is not None else 0


@pytest.fixture
def created_ctx(cu: ModuleType, ctx: Any) -> Any:
    """A context created on device 0 and left current (pushed over `ctx`)."""
    dev = ok(cu.cuDeviceGet(0))
    c = ok(cu.cuCtxCreate(None, 0, dev))
    yield c
    if _int(ok(cu.cuCtxGetCurrent())) == _int(c):
        ok(cu.cuCtxPopCurrent())
    assert err_of(cu.cuCtxDestroy(c)) in (
        cu.CUresult.CUDA_SUCCESS,
        cu.CUresult.CUDA_ERROR_INVALID_CONTEXT,  # the test destroyed it already
    )


def test_driver_version(cu: ModuleType) -> None:
    assert ok(cu.cuDriverGetVersion()) >= 13000


@pytest.mark.only_paths(*FAKE_PATHS, reason="NVIDIA's driver reports its own version")
def test_driver_version_is_the_api_tables(cu: ModuleType) -> None:
    # The newest API version the table (and so both libraries) is generated
    # from: an older answer makes clients skip paths the table has.
    table = json.loads(paths.api_table_path().read_text())
    assert ok(cu.cuDriverGetVersion()) == table["cuda_version"]


def test_profiler_start_stop_are_no_ops_without_a_profiler(cu: ModuleType, ctx: Any) -> None:
    # Exported and resolvable (cuda-bindings raises on a name the driver does
    # not know); with no profiler attached they do nothing and succeed.
    ok(cu.cuProfilerStart())
    ok(cu.cuProfilerStop())
    ok(cu.cuProfilerStop())


def test_init_rejects_flags(cu: ModuleType) -> None:
    assert err_of(cu.cuInit(1)) == cu.CUresult.CUDA_ERROR_INVALID_VALUE
    assert err_of(cu.cuInit(0)) == cu.CUresult.CUDA_SUCCESS


def test_device_properties(cu: ModuleType) -> None:
    assert ok(cu.cuDeviceGetCount()) >= 1
    dev = ok(cu.cuDeviceGet(0))
    name = ok(cu.cuDeviceGetName(256, dev))
    assert name.rstrip(b"\0")
    assert ok(cu.cuDeviceTotalMem(dev)) > 0
    attr = cu.CUdevice_attribute
    major = ok(cu.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev))
    assert major >= 7
    assert ok(cu.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK, dev)) >= 1024
    assert ok(cu.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING, dev)) == 1
    assert ok(cu.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_WARP_SIZE, dev)) == 32
    uuid = ok(cu.cuDeviceGetUuid(dev))
    assert len(bytes(uuid.bytes)) == 16


def test_device_out_of_range(cu: ModuleType) -> None:
    count = ok(cu.cuDeviceGetCount())
    assert err_of(cu.cuDeviceGet(count)) == cu.CUresult.CUDA_ERROR_INVALID_DEVICE
    assert err_of(cu.cuDeviceGet(-1)) == cu.CUresult.CUDA_ERROR_INVALID_DEVICE
    assert err_of(cu.cuDeviceTotalMem(count)) == cu.CUresult.CUDA_ERROR_INVALID_DEVICE


@pytest.mark.only_paths(*FAKE_PATHS, reason="configures the fake driver's devices (FAKE_CUDA_*)")
def test_device_count_and_memory_from_environment(run_on_driver: RunOnDriver) -> None:
    r = run_on_driver(
        """
        ok(cu.cuInit(0))
        n = ok(cu.cuDeviceGetCount())
        mems = [ok(cu.cuDeviceTotalMem(ok(cu.cuDeviceGet(i)))) for i in range(n)]
        ctx = ok(cu.cuDevicePrimaryCtxRetain(ok(cu.cuDeviceGet(2))))
        ok(cu.cuCtxSetCurrent(ctx))
        free, total = ok(cu.cuMemGetInfo())
        assert int(ok(cu.cuCtxGetDevice())) == int(ok(cu.cuDeviceGet(2)))
        print(n, mems, total, free <= total)
        """,
        env={"FAKE_CUDA_DEVICE_COUNT": "3", "FAKE_CUDA_DEVICE_MEMORY_MIB": "512"},
    )
    assert r.returncode == 0, r.stderr
    mib = 512 << 20
    assert r.stdout.split() == ["3", f"[{mib},", f"{mib},", f"{mib}]", str(mib), "True"]


@pytest.mark.only_paths(
    "fake",
    reason="a controller does not start on a driver without devices (cgc_open fails with "
    "CUDA_ERROR_NO_DEVICE), so no job reaches the interposer with zero devices",
)
def test_no_device_fails_init(run_on_driver: RunOnDriver) -> None:
    r = run_on_driver(
        """
        print(int(cu.cuInit(0)[0]))
        """,
        env={"FAKE_CUDA_DEVICE_COUNT": "0"},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["100"]  # CUDA_ERROR_NO_DEVICE


def test_primary_context_is_shared_and_refcounted(cu: ModuleType) -> None:
    dev = ok(cu.cuDeviceGet(0))
    a = ok(cu.cuDevicePrimaryCtxRetain(dev))
    b = ok(cu.cuDevicePrimaryCtxRetain(dev))
    try:
        assert _int(a) == _int(b)
        _flags, active = ok(cu.cuDevicePrimaryCtxGetState(dev))
        assert active == 1
    finally:
        ok(cu.cuDevicePrimaryCtxRelease(dev))
        ok(cu.cuDevicePrimaryCtxRelease(dev))


def test_primary_context_cannot_be_destroyed(cu: ModuleType, ctx: Any) -> None:
    assert err_of(cu.cuCtxDestroy(ctx)) == cu.CUresult.CUDA_ERROR_INVALID_CONTEXT


def test_created_context_is_current_and_distinct(
    cu: ModuleType, ctx: Any, created_ctx: Any
) -> None:
    assert _int(ok(cu.cuCtxGetCurrent())) == _int(created_ctx)
    assert _int(created_ctx) != _int(ctx)
    assert int(ok(cu.cuCtxGetDevice())) == int(ok(cu.cuDeviceGet(0)))
    assert ok(cu.cuCtxGetApiVersion(created_ctx)) >= 3020
    assert ok(cu.cuCtxGetId(created_ctx)) != ok(cu.cuCtxGetId(ctx))
    ok(cu.cuCtxSynchronize())
    # Popping the created context makes the primary current again.
    assert _int(ok(cu.cuCtxPopCurrent())) == _int(created_ctx)
    assert _int(ok(cu.cuCtxGetCurrent())) == _int(ctx)


def test_push_pop(cu: ModuleType, ctx: Any, created_ctx: Any) -> None:
    ok(cu.cuCtxPopCurrent())  # created_ctx
    ok(cu.cuCtxSetCurrent(None))
    assert _int(ok(cu.cuCtxGetCurrent())) == 0
    ok(cu.cuCtxPushCurrent(ctx))
    ok(cu.cuCtxPushCurrent(created_ctx))
    assert _int(ok(cu.cuCtxGetCurrent())) == _int(created_ctx)
    assert _int(ok(cu.cuCtxPopCurrent())) == _int(created_ctx)
    assert _int(ok(cu.cuCtxGetCurrent())) == _int(ctx)
    assert _int(ok(cu.cuCtxPopCurrent())) == _int(ctx)
    assert _int(ok(cu.cuCtxGetCurrent())) == 0
    # Nothing left to pop.
    assert err_of(cu.cuCtxPopCurrent()) == cu.CUresult.CUDA_ERROR_INVALID_CONTEXT


def test_set_current_replaces_top_of_stack(cu: ModuleType, ctx: Any, created_ctx: Any) -> None:
    # Stack: [ctx, created]; SetCurrent(ctx) replaces the top, so one pop
    # returns ctx and leaves the original ctx below it.
    ok(cu.cuCtxSetCurrent(ctx))
    assert _int(ok(cu.cuCtxPopCurrent())) == _int(ctx)
    assert _int(ok(cu.cuCtxGetCurrent())) == _int(ctx)


def test_current_context_is_per_thread(cu: ModuleType, ctx: Any, created_ctx: Any) -> None:
    seen: dict[str, Any] = {}

    def other() -> None:
        seen["initial"] = _int(ok(cu.cuCtxGetCurrent()))
        seen["alloc"] = err_of(cu.cuMemAlloc(16))
        ok(cu.cuCtxSetCurrent(ctx))
        seen["after"] = _int(ok(cu.cuCtxGetCurrent()))

    t = threading.Thread(target=other)
    t.start()
    t.join()
    # A new thread has no current context, and setting one there leaves this
    # thread's alone.
    assert seen == {
        "initial": 0,
        "alloc": cu.CUresult.CUDA_ERROR_INVALID_CONTEXT,
        "after": _int(ctx),
    }
    assert _int(ok(cu.cuCtxGetCurrent())) == _int(created_ctx)


@UNDEFINED_ON_NVIDIA
def test_destroying_current_context_pops_it(cu: ModuleType, ctx: Any) -> None:
    dev = ok(cu.cuDeviceGet(0))
    c = ok(cu.cuCtxCreate(None, 0, dev))
    ok(cu.cuCtxDestroy(c))
    assert _int(ok(cu.cuCtxGetCurrent())) == _int(ctx)
    # The handle is dead now.
    assert err_of(cu.cuCtxPushCurrent(c)) == cu.CUresult.CUDA_ERROR_INVALID_CONTEXT
    assert err_of(cu.cuCtxDestroy(c)) == cu.CUresult.CUDA_ERROR_INVALID_CONTEXT


def test_context_destroyed_while_current_elsewhere(cu: ModuleType, ctx: Any) -> None:
    dev = ok(cu.cuDeviceGet(0))
    c = ok(cu.cuCtxCreate(None, 0, dev))
    ok(cu.cuCtxPopCurrent())
    ready, destroyed, done = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    def other() -> None:
        ok(cu.cuCtxSetCurrent(c))
        ready.set()
        destroyed.wait()
        seen["alloc"] = err_of(cu.cuMemAlloc(16))
        seen["sync"] = err_of(cu.cuCtxSynchronize())
        done.set()

    t = threading.Thread(target=other)
    t.start()
    ready.wait()
    ok(cu.cuCtxDestroy(c))
    destroyed.set()
    t.join()
    # cuCtxDestroy's documentation: the context stays current to other
    # threads, where using it gives CUDA_ERROR_CONTEXT_IS_DESTROYED.
    assert seen == {
        "alloc": cu.CUresult.CUDA_ERROR_CONTEXT_IS_DESTROYED,
        "sync": cu.CUresult.CUDA_ERROR_CONTEXT_IS_DESTROYED,
    }


def test_context_resources_are_per_context(cu: ModuleType, ctx: Any, created_ctx: Any) -> None:
    ptr = ok(cu.cuMemAlloc(64))
    ctx_of_ptr = ok(
        cu.cuPointerGetAttribute(cu.CUpointer_attribute.CU_POINTER_ATTRIBUTE_CONTEXT, ptr)
    )
    assert _int(ctx_of_ptr) == _int(created_ctx)
    ok(cu.cuMemFree(ptr))


def test_stream_priority_range(cu: ModuleType, ctx: Any) -> None:
    least, greatest = ok(cu.cuCtxGetStreamPriorityRange())
    # Lower numbers are higher priorities.
    assert greatest <= least


def test_limits(cu: ModuleType, ctx: Any) -> None:
    lim = cu.CUlimit.CU_LIMIT_PRINTF_FIFO_SIZE
    old = ok(cu.cuCtxGetLimit(lim))
    assert old > 0
    ok(cu.cuCtxSetLimit(lim, old * 2))
    assert ok(cu.cuCtxGetLimit(lim)) == old * 2
    ok(cu.cuCtxSetLimit(lim, old))


@pytest.mark.parametrize(
    ("code", "name", "text"),
    [
        (0, "CUDA_SUCCESS", "no error"),
        (1, "CUDA_ERROR_INVALID_VALUE", "invalid argument"),
        (2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"),
        (3, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"),
        (201, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"),
        (400, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"),
        (500, "CUDA_ERROR_NOT_FOUND", "named symbol not found"),
        (600, "CUDA_ERROR_NOT_READY", "device not ready"),
        (700, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"),
        (801, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported"),
    ],
)
def test_error_name_and_string(cu: ModuleType, code: int, name: str, text: str) -> None:
    err = cu.CUresult(code)
    assert ok(cu.cuGetErrorName(err)) == name.encode()
    assert ok(cu.cuGetErrorString(err)) == text.encode()


def test_error_name_of_unknown_code(libcuda: Any) -> None:
    import ctypes

    for fn_name in ("cuGetErrorName", "cuGetErrorString"):
        fn = getattr(libcuda, fn_name)
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
        out = ctypes.c_char_p(b"x")
        assert fn(99999, ctypes.byref(out)) == 1  # CUDA_ERROR_INVALID_VALUE
        assert out.value is None
