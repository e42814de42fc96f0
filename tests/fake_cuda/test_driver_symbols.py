"""Symbol resolution: the exported ABI names, cuGetProcAddress (4 arguments)
and cuGetProcAddress_v2 (5 arguments) choosing the ABI variant by base name,
CUDA version and flags, unknown names, and unsupported functions."""

from __future__ import annotations

import ctypes
import subprocess
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from driver_helpers import UNDEFINED_ON_NVIDIA, ok

CUDA_SUCCESS = 0
CUDA_ERROR_NOT_FOUND = 500
CUDA_ERROR_INVALID_VALUE = 1
CUDA_ERROR_NOT_SUPPORTED = 801
# CUdriverProcAddressQueryResult
PROC_SUCCESS = 0
PROC_SYMBOL_NOT_FOUND = 1
PROC_VERSION_NOT_SUFFICIENT = 2
# CUdriverProcAddress_flags
DEFAULT = 0
LEGACY_STREAM = 1
PER_THREAD = 2

# Functions the fake driver leaves unimplemented on purpose (no CPU meaning).
UNSUPPORTED = "cuDeviceGetNvSciSyncAttributes"
# NVIDIA's driver implements it: the stub is the fake driver's and the
# interposer's (which answers it itself, whatever driver the controller runs).
UNSUPPORTED_HERE = pytest.mark.only_paths(
    "fake",
    "interposer",
    "system-interposer",
    reason=f"NVIDIA's driver implements {UNSUPPORTED}; the stub that refuses it is the fake "
    "driver's and the interposer's",
)

RunOnDriver = Callable[..., subprocess.CompletedProcess[str]]


def _address(lib: ctypes.CDLL, symbol: str) -> int:
    return ctypes.cast(getattr(lib, symbol), ctypes.c_void_p).value or 0


def _proc_v2(lib: ctypes.CDLL, base: str, version: int, flags: int) -> tuple[int, int, int]:
    fn = lib.cuGetProcAddress_v2
    fn.restype = ctypes.c_int
    fn.argtypes = [
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_int,
        ctypes.c_uint64,
        ctypes.POINTER(ctypes.c_int),
    ]
    pfn = ctypes.c_void_p(0xDEAD)
    status = ctypes.c_int(-1)
    rc = fn(base.encode(), ctypes.byref(pfn), version, flags, ctypes.byref(status))
    return rc, pfn.value or 0, status.value


def _proc_v1(lib: ctypes.CDLL, base: str, version: int, flags: int) -> tuple[int, int]:
    fn = lib.cuGetProcAddress
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_uint64]
    pfn = ctypes.c_void_p(0xDEAD)
    rc = fn(base.encode(), ctypes.byref(pfn), version, flags)
    return rc, pfn.value or 0


@pytest.mark.parametrize(
    "symbol",
    [
        "cuInit",
        "cuDriverGetVersion",
        "cuGetProcAddress",
        "cuGetProcAddress_v2",
        "cuGetErrorName",
        "cuGetErrorString",
        "cuDeviceGet",
        "cuDeviceTotalMem",
        "cuDeviceTotalMem_v2",
        "cuCtxCreate_v2",
        "cuCtxCreate_v4",
        "cuCtxDestroy_v2",
        "cuCtxPushCurrent_v2",
        "cuCtxPopCurrent_v2",
        "cuCtxSynchronize",
        "cuCtxSynchronize_v2",
        "cuCtxGetDevice_v2",
        "cuDevicePrimaryCtxRelease_v2",
        "cuMemAlloc",
        "cuMemAlloc_v2",
        "cuMemFree_v2",
        "cuMemcpyHtoD_v2",
        "cuMemcpyHtoD_v2_ptds",
        "cuMemcpyHtoDAsync_v2_ptsz",
        "cuMemcpy2DAsync_v2_ptsz",
        "cuMemsetD8Async_ptsz",
        "cuStreamGetCtx_v2",
        "cuStreamGetCtx_v2_ptsz",
        "cuEventRecord_ptsz",
        "cuEventElapsedTime_v2",
        "cuLaunchKernel",
        "cuLaunchKernel_ptsz",
        "cuLaunchKernelEx",
        "cuLaunchKernelEx_ptsz",
        "cuFuncGetParamInfo",
        "cuMemAddressReserve",
        "cuMemCreate",
        "cuMemMap",
        "cuProfilerStart",
        "cuProfilerStop",
        UNSUPPORTED,
    ],
)
def test_exports_versioned_names(libcuda: ctypes.CDLL, symbol: str) -> None:
    assert _address(libcuda, symbol), f"{symbol} is not exported"


@pytest.mark.parametrize(
    ("base", "version", "flags", "symbol"),
    [
        ("cuMemAlloc", 3010, DEFAULT, "cuMemAlloc"),
        ("cuMemAlloc", 3020, DEFAULT, "cuMemAlloc_v2"),
        ("cuMemAlloc", 13000, DEFAULT, "cuMemAlloc_v2"),
        # No per-thread variant: the per-thread search falls back to legacy.
        ("cuMemAlloc", 13000, PER_THREAD, "cuMemAlloc_v2"),
        ("cuCtxCreate", 3020, DEFAULT, "cuCtxCreate_v2"),
        ("cuCtxCreate", 11040, DEFAULT, "cuCtxCreate_v3"),
        ("cuCtxCreate", 12050, DEFAULT, "cuCtxCreate_v4"),
        ("cuCtxCreate", 13000, DEFAULT, "cuCtxCreate_v4"),
        ("cuCtxSynchronize", 12090, DEFAULT, "cuCtxSynchronize"),
        ("cuCtxSynchronize", 13000, DEFAULT, "cuCtxSynchronize_v2"),
        ("cuCtxGetDevice", 12000, DEFAULT, "cuCtxGetDevice"),
        ("cuCtxGetDevice", 13000, DEFAULT, "cuCtxGetDevice_v2"),
        ("cuEventElapsedTime", 12070, DEFAULT, "cuEventElapsedTime"),
        ("cuEventElapsedTime", 12080, DEFAULT, "cuEventElapsedTime_v2"),
        ("cuMemcpyHtoD", 13000, DEFAULT, "cuMemcpyHtoD_v2"),
        ("cuMemcpyHtoD", 13000, LEGACY_STREAM, "cuMemcpyHtoD_v2"),
        ("cuMemcpyHtoD", 13000, PER_THREAD, "cuMemcpyHtoD_v2_ptds"),
        ("cuMemcpyHtoDAsync", 13000, PER_THREAD, "cuMemcpyHtoDAsync_v2_ptsz"),
        ("cuLaunchKernel", 13000, DEFAULT, "cuLaunchKernel"),
        ("cuLaunchKernel", 13000, PER_THREAD, "cuLaunchKernel_ptsz"),
        ("cuStreamGetCtx", 12000, DEFAULT, "cuStreamGetCtx"),
        ("cuStreamGetCtx", 12000, PER_THREAD, "cuStreamGetCtx_ptsz"),
        ("cuStreamGetCtx", 12050, DEFAULT, "cuStreamGetCtx_v2"),
        ("cuStreamGetCtx", 13000, PER_THREAD, "cuStreamGetCtx_v2_ptsz"),
        ("cuGetProcAddress", 11030, DEFAULT, "cuGetProcAddress"),
        ("cuGetProcAddress", 12000, DEFAULT, "cuGetProcAddress_v2"),
    ],
)
def test_proc_address_picks_abi_variant(
    libcuda: ctypes.CDLL, base: str, version: int, flags: int, symbol: str
) -> None:
    want = _address(libcuda, symbol)
    assert _proc_v2(libcuda, base, version, flags) == (CUDA_SUCCESS, want, PROC_SUCCESS)
    assert _proc_v1(libcuda, base, version, flags) == (CUDA_SUCCESS, want)


def test_an_unknown_name_is_null_or_not_found(libcuda: ctypes.CDLL) -> None:
    assert _proc_v2(libcuda, "cuNoSuchFunction", 13000, DEFAULT) == (
        CUDA_SUCCESS,
        0,
        PROC_SYMBOL_NOT_FOUND,
    )
    # The old entry point has no status to say it in: NOT_FOUND, the pointer
    # left as it was (NVIDIA's driver 580).
    assert _proc_v1(libcuda, "cuNoSuchFunction", 13000, DEFAULT) == (CUDA_ERROR_NOT_FOUND, 0xDEAD)


def test_version_older_than_the_function_is_success_with_null(libcuda: ctypes.CDLL) -> None:
    # cuMemAllocAsync came with CUDA 11.2.
    assert _proc_v2(libcuda, "cuMemAllocAsync", 11010, DEFAULT) == (
        CUDA_SUCCESS,
        0,
        PROC_VERSION_NOT_SUFFICIENT,
    )
    rc, pfn, status = _proc_v2(libcuda, "cuMemAllocAsync", 11020, DEFAULT)
    assert (rc, status) == (CUDA_SUCCESS, PROC_SUCCESS)
    assert pfn == _address(libcuda, "cuMemAllocAsync")


@UNDEFINED_ON_NVIDIA
def test_proc_address_needs_symbol_and_out_pointer(libcuda: ctypes.CDLL) -> None:
    fn = libcuda.cuGetProcAddress_v2
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64, ctypes.c_void_p]
    pfn = ctypes.c_void_p()
    assert fn(None, ctypes.addressof(pfn), 13000, 0, None) == CUDA_ERROR_INVALID_VALUE
    assert fn(b"cuInit", None, 13000, 0, None) == CUDA_ERROR_INVALID_VALUE
    # symbolStatus is optional.
    assert fn(b"cuInit", ctypes.addressof(pfn), 13000, 0, None) == CUDA_SUCCESS
    assert pfn.value == _address(libcuda, "cuInit")


def test_cuda_bindings_resolves_through_proc_address(cu: object) -> None:
    from cuda.bindings import driver

    err, pfn, status = driver.cuGetProcAddress(b"cuMemAlloc", 13000, 0)
    assert err == driver.CUresult.CUDA_SUCCESS
    assert status == driver.CUdriverProcAddressQueryResult.CU_GET_PROC_ADDRESS_SUCCESS
    assert pfn != 0
    err, version = driver.cuDriverGetVersion()
    assert err == driver.CUresult.CUDA_SUCCESS
    assert version >= 13000


@UNSUPPORTED_HERE
def test_unsupported_function_returns_not_supported(libcuda: ctypes.CDLL) -> None:
    fn = getattr(libcuda, UNSUPPORTED)
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    assert fn(None, 0, 0) == CUDA_ERROR_NOT_SUPPORTED
    # The same stub answers through cuGetProcAddress.
    rc, pfn, status = _proc_v2(libcuda, UNSUPPORTED, 13000, DEFAULT)
    assert (rc, status) == (CUDA_SUCCESS, PROC_SUCCESS)
    proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int)
    assert proto(pfn)(None, 0, 0) == CUDA_ERROR_NOT_SUPPORTED


UNSUPPORTED_TWICE = f"""
lib = ctypes.CDLL("libcuda.so.1")
fn = lib.{UNSUPPORTED}
fn.restype = ctypes.c_int
fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
ok(cu.cuInit(0))
codes = [fn(None, 0, 0), fn(None, 0, 0)]
sys.stderr.flush()
print(codes)
"""


@UNSUPPORTED_HERE
def test_unsupported_function_is_logged_once(run_on_driver: RunOnDriver) -> None:
    r = run_on_driver(UNSUPPORTED_TWICE)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"[{CUDA_ERROR_NOT_SUPPORTED}, {CUDA_ERROR_NOT_SUPPORTED}]"
    assert r.stderr.count(UNSUPPORTED) == 1, r.stderr


@pytest.mark.only_paths(
    "fake",
    reason="FAKE_CUDA_LOG is the fake driver's own log, which the interposer path writes in "
    "the controller's process, not on the job's stderr",
)
def test_unsupported_function_logged_every_time_with_fake_cuda_log(
    run_on_driver: RunOnDriver,
) -> None:
    r = run_on_driver(UNSUPPORTED_TWICE, env={"FAKE_CUDA_LOG": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stderr.count(UNSUPPORTED) == 2, r.stderr


def test_cuda_bindings_with_per_thread_default_stream(run_on_driver: RunOnDriver) -> None:
    """cuda-bindings in per-thread mode resolves the _ptds/_ptsz variants: the
    NULL stream is then each thread's own stream, which does not wait for
    another thread's NULL stream (it would with the legacy stream)."""
    r = run_on_driver(
        """
        err, pfn, _ = cu.cuGetProcAddress(b"cuMemcpyHtoD", 13000, 2)
        lib = ctypes.CDLL("libcuda.so.1")
        assert int(pfn) == ctypes.cast(lib.cuMemcpyHtoD_v2_ptds, ctypes.c_void_p).value
        ok(cu.cuInit(0))
        dev = ok(cu.cuDeviceGet(0))
        ctx = ok(cu.cuDevicePrimaryCtxRetain(dev))
        ok(cu.cuCtxSetCurrent(ctx))
        dptr = ok(cu.cuMemAlloc(4))
        # Hold this thread's NULL stream on a host function until released.
        gate = threading.Event()
        CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
        hold = CB(lambda _: gate.wait(60))
        ok(cu.cuLaunchHostFunc(0, cu.CUhostFn(ctypes.cast(hold, ctypes.c_void_p).value), 0))
        assert cu.cuStreamQuery(0)[0] == E.CUDA_ERROR_NOT_READY
        other = {}
        def worker():
            ok(cu.cuCtxSetCurrent(ctx))
            ok(cu.cuMemsetD32Async(dptr, 7, 1, 0))
            other["sync"] = cu.cuStreamSynchronize(0)[0]
        t = threading.Thread(target=worker)
        t.start()
        t.join(30)
        alive = t.is_alive()
        gate.set()
        t.join()
        ok(cu.cuStreamSynchronize(0))
        ok(cu.cuMemFree(dptr))
        assert not alive, "the other thread's NULL stream waited for this thread's"
        assert other["sync"] == E.CUDA_SUCCESS, other
        print("ok")
        """,
        env={"CUDA_PYTHON_CUDA_PER_THREAD_DEFAULT_STREAM": "1"},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def _fn(lib: ctypes.CDLL, name: str, *argtypes: Any) -> Any:
    fn = getattr(lib, name)
    fn.restype = ctypes.c_int
    fn.argtypes = list(argtypes)
    return fn


def test_older_abi_variants(libcuda: ctypes.CDLL, cu: ModuleType, ctx: Any) -> None:
    """The variants older callers (CUDA 12.x builds) bind to keep working next
    to the CUDA 13 ones: same behaviour, their own argument lists."""
    vp, ui, i = ctypes.c_void_p, ctypes.c_uint, ctypes.c_int
    pv = ctypes.POINTER(ctypes.c_void_p)
    dev = int(ok(cu.cuDeviceGet(0)))

    c2 = ctypes.c_void_p()
    assert _fn(libcuda, "cuCtxCreate_v2", pv, ui, i)(ctypes.byref(c2), 0, dev) == CUDA_SUCCESS
    c3 = ctypes.c_void_p()
    create_v3 = _fn(libcuda, "cuCtxCreate_v3", pv, vp, i, ui, i)
    assert create_v3(ctypes.byref(c3), None, 0, 0, dev) == CUDA_SUCCESS
    assert c2.value and c3.value and c2.value != c3.value
    # c3 is current, above c2.
    current = ctypes.c_void_p()
    assert _fn(libcuda, "cuCtxGetCurrent", pv)(ctypes.byref(current)) == CUDA_SUCCESS
    assert current.value == c3.value

    d1, d2 = ctypes.c_int(-1), ctypes.c_int(-1)
    assert _fn(libcuda, "cuCtxGetDevice", vp)(ctypes.byref(d1)) == CUDA_SUCCESS
    assert _fn(libcuda, "cuCtxGetDevice_v2", vp, vp)(ctypes.byref(d2), c2) == CUDA_SUCCESS
    assert d1.value == d2.value == dev
    assert _fn(libcuda, "cuCtxSynchronize")() == CUDA_SUCCESS
    assert _fn(libcuda, "cuCtxSynchronize_v2", vp)(c2) == CUDA_SUCCESS

    stream = ctypes.c_void_p()
    assert _fn(libcuda, "cuStreamCreate", pv, ui)(ctypes.byref(stream), 0) == CUDA_SUCCESS
    owner, owner2, green = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p(1)
    assert _fn(libcuda, "cuStreamGetCtx", vp, pv)(stream, ctypes.byref(owner)) == CUDA_SUCCESS
    get_ctx_v2 = _fn(libcuda, "cuStreamGetCtx_v2", vp, pv, pv)
    assert get_ctx_v2(stream, ctypes.byref(owner2), ctypes.byref(green)) == CUDA_SUCCESS
    assert owner.value == owner2.value == c3.value
    assert not green.value  # not a green context's stream

    events = [ctypes.c_void_p(), ctypes.c_void_p()]
    for e in events:
        assert _fn(libcuda, "cuEventCreate", pv, ui)(ctypes.byref(e), 0) == CUDA_SUCCESS
        assert _fn(libcuda, "cuEventRecord", vp, vp)(e, stream) == CUDA_SUCCESS
    assert _fn(libcuda, "cuEventSynchronize", vp)(events[1]) == CUDA_SUCCESS
    for name in ("cuEventElapsedTime", "cuEventElapsedTime_v2"):
        ms = ctypes.c_float(-1)
        assert _fn(libcuda, name, vp, vp, vp)(ctypes.byref(ms), *events) == CUDA_SUCCESS
        assert ms.value >= 0
    for e in events:
        assert _fn(libcuda, "cuEventDestroy_v2", vp)(e) == CUDA_SUCCESS
    assert _fn(libcuda, "cuStreamDestroy_v2", vp)(stream) == CUDA_SUCCESS
    destroy = _fn(libcuda, "cuCtxDestroy_v2", vp)
    assert destroy(c3) == CUDA_SUCCESS
    assert destroy(c2) == CUDA_SUCCESS
