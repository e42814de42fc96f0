"""numba-cuda kernels on the driver: compiled to PTX by numba-cuda (NVVM from
the nvidia-cuda-nvcc wheel), loaded with cuModuleLoadData and launched with
numba's array arguments, results compared with numpy. Then numba-cuda's own
@cuda.jit launch path (its linker included) in a process of its own on the
fake driver.
"""

from __future__ import annotations

import ctypes
import math
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from driver_helpers import FAKE_PATHS
from ptx_build import DeviceArrays, PtxModule, loaded

numba = pytest.importorskip("numba")
from numba import cuda, float32, float64, int32  # noqa: E402

Arr = np.ndarray[Any, Any]


def compile_kernel(fn: Callable[..., None], sig: tuple[Any, ...]) -> tuple[bytes, str]:
    """numba's PTX for fn and the kernel's mangled name."""
    ptx, _ = cuda.compile_ptx(fn, sig, cc=(9, 0))
    entry = next(ln for ln in ptx.splitlines() if ".entry" in ln)
    name = entry.split(".entry")[1].strip().rstrip("(").strip()
    return ptx.encode() + b"\x00", name


def array_args(dev: DeviceArrays, a: Arr) -> tuple[list[Any], ctypes.c_uint64]:
    """A 1D array as numba passes it: meminfo, parent, nitems, itemsize, data,
    shape, strides."""
    ptr = dev.put(a)
    args = [
        ctypes.c_uint64(0),
        ctypes.c_uint64(0),
        ctypes.c_int64(a.size),
        ctypes.c_int64(a.itemsize),
        ptr,
        ctypes.c_int64(a.shape[0]),
        ctypes.c_int64(a.strides[0]),
    ]
    return args, ptr


@pytest.fixture
def dev(cu: ModuleType, ctx: Any) -> Iterator[DeviceArrays]:
    d = DeviceArrays(cu)
    yield d
    d.free()


def launch(
    cu: ModuleType, fn: Callable[..., None], sig: tuple[Any, ...], args: list[Any], **kw: Any
) -> None:
    ptx, name = compile_kernel(fn, sig)
    with loaded(cu, ptx) as m:
        PtxModule.launch(m, name, *args, **kw)


def axpb(x: Any, out: Any, a: float, b: float) -> None:
    i = cuda.grid(1)
    if i < out.size:
        out[i] = a * x[i] + b


def test_elementwise(cu: ModuleType, ctx: Any, dev: DeviceArrays) -> None:
    x = np.linspace(-5, 5, 1000).astype(np.float32)
    xa, _ = array_args(dev, x)
    oa, out = array_args(dev, np.zeros_like(x))
    sig = (float32[:], float32[:], float32, float32)
    launch(cu, axpb, sig, [*xa, *oa, ctypes.c_float(1.5), ctypes.c_float(-2.0)],
           grid=(8, 1, 1), block=(128, 1, 1))  # fmt: skip
    want = (np.float64(1.5) * x + np.float64(-2.0)).astype(np.float32)
    np.testing.assert_array_equal(dev.get(out, x.size, np.float32), want)


def math_kernel(x: Any, out: Any) -> None:
    i = cuda.grid(1)
    if i < out.size:
        v = x[i]
        out[i] = math.sin(v) * math.exp(-v * v) + math.sqrt(abs(v)) + math.log1p(abs(v))


def test_libdevice_math(cu: ModuleType, ctx: Any, dev: DeviceArrays) -> None:
    """math.* in float64 calls libdevice: long PTX with calls, branches and
    bit manipulation."""
    x = np.linspace(-3, 3, 500)
    xa, _ = array_args(dev, x)
    oa, out = array_args(dev, np.zeros_like(x))
    launch(cu, math_kernel, (float64[:], float64[:]), [*xa, *oa], grid=(4, 1, 1), block=(128, 1, 1))
    want = np.sin(x) * np.exp(-x * x) + np.sqrt(np.abs(x)) + np.log1p(np.abs(x))
    np.testing.assert_allclose(dev.get(out, x.size, np.float64), want, rtol=1e-14, atol=1e-15)


def block_sum(x: Any, out: Any) -> None:
    buf = cuda.shared.array(128, dtype=float64)
    t = cuda.threadIdx.x
    i = cuda.grid(1)
    buf[t] = x[i] if i < x.size else 0.0
    cuda.syncthreads()
    s = 64
    while s > 0:
        if t < s:
            buf[t] += buf[t + s]
        cuda.syncthreads()
        s //= 2
    if t == 0:
        cuda.atomic.add(out, 0, buf[0])


def test_shared_memory_barriers_and_atomics(cu: ModuleType, ctx: Any, dev: DeviceArrays) -> None:
    x = np.arange(1000, dtype=np.float64) * 0.5
    xa, _ = array_args(dev, x)
    oa, out = array_args(dev, np.zeros(1))
    launch(cu, block_sum, (float64[:], float64[:]), [*xa, *oa], grid=(8, 1, 1), block=(128, 1, 1))
    assert dev.get(out, 1, np.float64)[0] == x.sum()


def warp_sum(x: Any, out: Any) -> None:
    i = cuda.grid(1)
    v = x[i]
    off = 16
    while off > 0:
        v += cuda.shfl_down_sync(0xFFFFFFFF, v, off)
        off //= 2
    if cuda.laneid == 0:
        out[i // 32] = v


def test_warp_shuffle(cu: ModuleType, ctx: Any, dev: DeviceArrays) -> None:
    x = np.random.default_rng(7).integers(-1000, 1000, 256).astype(np.int32)
    xa, _ = array_args(dev, x)
    oa, out = array_args(dev, np.zeros(8, np.int32))
    launch(cu, warp_sum, (int32[:], int32[:]), [*xa, *oa], grid=(2, 1, 1), block=(128, 1, 1))
    np.testing.assert_array_equal(dev.get(out, 8, np.int32), x.reshape(8, 32).sum(axis=1))


JIT_SCRIPT = textwrap.dedent(
    """
    import math
    import os
    import sys
    import numpy as np
    from numba import cuda

    # numba-cuda compiles its float16 helpers with NVRTC: see tools/nvrtc_ptx.py
    sys.path.insert(0, os.path.join(os.environ["PYTHONPATH"].split(os.pathsep)[0], "tools"))
    from nvrtc_ptx import preload_builtins
    preload_builtins()

    @cuda.jit
    def smooth(x, out):
        i = cuda.grid(1)
        if 0 < i < x.size - 1:
            out[i] = (x[i - 1] + 2 * x[i] + x[i + 1]) / 4 + math.cos(x[i])

    x = np.random.default_rng(8).standard_normal(4000)
    out = cuda.to_device(np.zeros_like(x))
    smooth[32, 128](cuda.to_device(x), out)
    got = out.copy_to_host()
    want = np.zeros_like(x)
    want[1:-1] = (x[:-2] + 2 * x[1:-1] + x[2:]) / 4 + np.cos(x[1:-1])
    print("max error", float(np.abs(got - want).max()))

    # float16 helpers come as a second PTX module that cuLink* joins in
    from numba.cuda import fp16

    @cuda.jit
    def halves(a, b, out):
        i = cuda.grid(1)
        if i < out.size:
            out[i] = fp16.hadd(a[i], b[i]) * a[i]

    h = np.linspace(-4, 4, 100).astype(np.float16)
    one = np.ones(100, np.float16)
    hout = cuda.device_array(100, np.float16)
    halves[1, 128](cuda.to_device(h), cuda.to_device(one), hout)
    print("fp16", bool(np.array_equal(hout.copy_to_host(), ((h + one) * h).astype(np.float16))))
    """
)


@pytest.mark.only_paths(
    *FAKE_PATHS,
    reason="NVIDIA's driver is tested by numba-cuda itself; the fake one and the interposer "
    "forwarding cuLink* to it are ours",
)
def test_numba_jit_launch_on_fake_driver(driver_path: Any, tmp_path: Path) -> None:
    script = tmp_path / "jit.py"
    script.write_text(JIT_SCRIPT)
    r = subprocess.run(
        [sys.executable, str(script)],
        env=driver_path.child_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    err = float(lines[0].split("max error")[1])
    assert err <= 1e-15, r.stdout
    assert lines[1] == "fp16 True", r.stdout
