"""What CUDA's device runtime gives PTX: printf (vprintf) and assert
(__assertfail), each in a process of its own (an assert poisons the
context, printf writes to the process's stdout)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import pytest

RunOnDriver = Callable[..., subprocess.CompletedProcess[str]]

COMPILE = """
repo = os.environ["PYTHONPATH"].split(os.pathsep)[0]
sys.path.insert(0, os.path.join(repo, "tests", "fake_cuda"))
from ptx_build import nvrtc_ptx
ok(cu.cuInit(0))
ctx = ok(cu.cuDevicePrimaryCtxRetain(ok(cu.cuDeviceGet(0))))
ok(cu.cuCtxSetCurrent(ctx))
"""

PRINTF = (
    COMPILE
    + r'''
src = r"""
extern "C" __global__ void hello(int n, double x, const char *unused) {
  if (threadIdx.x < 2)
    printf("thread %d of %d: x=%.3f big=%lld hex=%08x %s %c%%\n", threadIdx.x, n, x,
           (long long)n << 40, 0xbeefu, "text", 'Z');
}
"""
import ctypes
mod = ok(cu.cuModuleLoadData(nvrtc_ptx(src, "printf.cu")))
fn = ok(cu.cuModuleGetFunction(mod, b"hello"))
args = [ctypes.c_int(4), ctypes.c_double(2.5), ctypes.c_uint64(0)]
arr = (ctypes.c_void_p * 3)(*(ctypes.addressof(a) for a in args))
ok(cu.cuLaunchKernel(fn, 1, 1, 1, 4, 1, 1, 0, 0, ctypes.addressof(arr), 0))
ok(cu.cuCtxSynchronize())
print("done")
'''
)

ASSERT = (
    COMPILE
    + r'''
src = r"""
// NVRTC declares printf and assert itself (its builtin header)
extern "C" __global__ void check(int v) { assert(v == 1); }
"""
import ctypes
mod = ok(cu.cuModuleLoadData(nvrtc_ptx(src, "assert.cu")))
fn = ok(cu.cuModuleGetFunction(mod, b"check"))
for v in (1, 2):
    arg = ctypes.c_int(v)
    arr = (ctypes.c_void_p * 1)(ctypes.addressof(arg))
    ok(cu.cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, 0, ctypes.addressof(arr), 0))
    (err,) = cu.cuCtxSynchronize()
    print("after", v, err.name)
'''
)


@pytest.mark.only_paths(
    "fake", "system", reason="through the interposer printf writes to the controller's stdout"
)
def test_device_printf(run_on_driver: RunOnDriver) -> None:
    r = run_on_driver(PRINTF)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1] == "done"
    want = "thread {} of 4: x=2.500 big=4398046511104 hex=0000beef text Z%"
    assert sorted(lines[:-1]) == [want.format(0), want.format(1)]


def test_device_assert_poisons_the_context(run_on_driver: RunOnDriver, driver_path: Any) -> None:
    r = run_on_driver(ASSERT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["after 1 CUDA_SUCCESS", "after 2 CUDA_ERROR_ASSERT"]
    if driver_path.name in ("fake", "system"):  # else the controller's stderr has it
        assert "Assertion `v == 1` failed." in r.stderr
