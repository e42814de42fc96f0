"""Loading PTX: every loading call takes it, parameters are laid out as the
PTX declares them (cuFuncGetParamInfo answers from it), module variables are
reachable with cuModuleGetGlobal, each load has its own, libraries and
CUkernels work, and what the fake driver cannot run is refused at load time
with the instruction named.
"""

from __future__ import annotations

import ctypes
import struct
from pathlib import Path
from types import ModuleType
from typing import Any

import native_build
import numpy as np
import pytest
from driver_helpers import FAKE_PATHS, ParamArray, err_of, ok
from ptx_build import DeviceArrays, PtxModule, nvrtc_ptx

PARAMS_SRC = r"""
struct triple { float x, y, z; };
__device__ int counter = 5;
__device__ double samples[10];
__constant__ short weights[3] = {7, -8, 9};

extern "C" __global__ void mixed(char c, double d, int i, triple s, const int *p, short h,
                                 double *out) {
  out[0] = c + d + i + s.x + s.y + s.z + *p + h + weights[threadIdx.x % 3];
  counter += 1;
  samples[9] = d;
}
"""


class Triple(ctypes.Structure):
    _fields_ = (("x", ctypes.c_float), ("y", ctypes.c_float), ("z", ctypes.c_float))


def _ptx() -> bytes:
    return nvrtc_ptx(PARAMS_SRC, "params.cu")


def test_parameter_layout_from_ptx(cu: ModuleType, ctx: Any) -> None:
    mod = ok(cu.cuModuleLoadData(_ptx()))
    try:
        fn = ok(cu.cuModuleGetFunction(mod, b"mixed"))
        layout = [ok(cu.cuFuncGetParamInfo(fn, i)) for i in range(7)]
        # CUDA's ABI: each at its natural alignment, the struct at its members'
        assert [(int(o), int(s)) for o, s in layout] == [
            (0, 1), (8, 8), (16, 4), (20, 12), (32, 8), (40, 2), (48, 8),
        ]  # fmt: skip
        assert err_of(cu.cuFuncGetParamInfo(fn, 7)) == cu.CUresult.CUDA_ERROR_INVALID_VALUE
    finally:
        ok(cu.cuModuleUnload(mod))


def test_parameters_and_module_variables(cu: ModuleType, ctx: Any) -> None:
    mod = ok(cu.cuModuleLoadData(_ptx()))
    dev = DeviceArrays(cu)
    try:
        m = PtxModule(cu, mod)
        p = dev.put(np.array([1000], np.int32))
        out = dev.empty(1, np.float64)
        args = (
            ctypes.c_char(b"\x03"),
            ctypes.c_double(0.25),
            ctypes.c_int(-40),
            Triple(1.5, 2.5, 3.0),
            p,
            ctypes.c_short(-2),
            out,
        )
        m.launch("mixed", *args)
        assert dev.get(out, 1, np.float64)[0] == 3 + 0.25 - 40 + 1.5 + 2.5 + 3.0 + 1000 - 2 + 7
        ptr, size = m.global_("counter")
        assert size == 4
        assert dev.get(ctypes.c_uint64(ptr), 1, np.int32)[0] == 6
        ptr, size = m.global_("samples")
        assert size == 80
        assert dev.get(ctypes.c_uint64(ptr), 10, np.float64)[9] == 0.25
        ptr, size = m.global_("weights")
        assert size == 6
        np.testing.assert_array_equal(dev.get(ctypes.c_uint64(ptr), 3, np.int16), [7, -8, 9])
        # a global written by the host is what the kernel reads
        ok(cu.cuMemcpyHtoD(ptr, np.array([100, 0, 0], np.int16).ctypes.data, 6))
        m.launch("mixed", *args)
        assert dev.get(out, 1, np.float64)[0] == 3 + 0.25 - 40 + 1.5 + 2.5 + 3.0 + 1000 - 2 + 100
        # each load is a module of its own, with its own variables
        other = ok(cu.cuModuleLoadData(_ptx()))
        try:
            optr, _ = ok(cu.cuModuleGetGlobal(other, b"counter"))
            assert int(optr) != m.global_("counter")[0]
            assert dev.get(ctypes.c_uint64(int(optr)), 1, np.int32)[0] == 5
        finally:
            ok(cu.cuModuleUnload(other))
    finally:
        dev.free()
        ok(cu.cuModuleUnload(mod))


def test_ptx_file_without_terminating_nul(cu: ModuleType, ctx: Any, tmp_path: Path) -> None:
    path = tmp_path / "params.ptx"
    path.write_bytes(_ptx().rstrip(b"\x00"))
    mod = ok(cu.cuModuleLoad(str(path).encode()))
    try:
        assert ok(cu.cuModuleGetFunction(mod, b"mixed"))
    finally:
        ok(cu.cuModuleUnload(mod))


def test_library_and_kernels_from_ptx(cu: ModuleType, ctx: Any) -> None:
    lib = ok(cu.cuLibraryLoadData(_ptx(), None, None, 0, None, None, 0))
    dev = DeviceArrays(cu)
    try:
        kernel = ok(cu.cuLibraryGetKernel(lib, b"mixed"))
        assert [int(x) for x in ok(cu.cuKernelGetParamInfo(kernel, 3))] == [20, 12]
        p = dev.put(np.array([1], np.int32))
        out = dev.empty(1, np.float64)
        args = ParamArray(
            [
                ctypes.c_char(b"\x00"),
                ctypes.c_double(1.0),
                ctypes.c_int(0),
                Triple(0, 0, 0),
                p,
                ctypes.c_short(0),
                out,
            ]
        )
        ok(cu.cuLaunchKernel(kernel, 1, 1, 1, 1, 1, 1, 0, 0, args.address, 0))
        ok(cu.cuCtxSynchronize())
        assert dev.get(out, 1, np.float64)[0] == 1.0 + 1 + 7
        dptr, size = ok(cu.cuLibraryGetGlobal(lib, b"counter"))
        assert size == 4
        assert dev.get(ctypes.c_uint64(int(dptr)), 1, np.int32)[0] == 6
    finally:
        dev.free()
        ok(cu.cuLibraryUnload(lib))


@pytest.mark.parametrize(
    "name,kernel",
    [("vector_add", "vector_add"), ("mlp", "matmul"), ("streams", "scale_shift"),
     ("conformance", "wait_flag")],
)  # fmt: skip
@pytest.mark.parametrize("suffix", [".ptx", ".fatbin"])
def test_nvcc_built_images_load(
    cu: ModuleType, ctx: Any, name: str, kernel: str, suffix: str
) -> None:
    """The PTX and the fatbins (sm_90 SASS plus compute_90 PTX, compressed)
    that nvcc built for the samples and the conformance suite, where the
    build had nvcc (else NVRTC's PTX of the same sources is what the
    conformance tests run with CEDANA_TEST_KERNELS=ptx)."""
    path = native_build.kernels_if_built(f"{name}{suffix}")
    if path is None:
        pytest.skip(f"{name}{suffix} was not built (no nvcc at build time)")
    mod = ok(cu.cuModuleLoad(str(path).encode()))
    try:
        assert ok(cu.cuModuleGetFunction(mod, kernel.encode()))
    finally:
        ok(cu.cuModuleUnload(mod))
    mod = ok(cu.cuModuleLoadData(path.read_bytes() + b"\x00"))
    ok(cu.cuModuleUnload(mod))


INVALID = b""".version 8.5
.target sm_90
.address_size 64
.visible .entry broken(.param .u64 p)
{
  .reg .b32 %r<2>;
  mov.u32 %r1, ;
}
\x00"""

# Valid PTX (texture fetches) that the interpreter does not implement.
UNSUPPORTED = b""".version 8.5
.target sm_90
.address_size 64
.visible .entry uses_texture(.param .u64 t, .param .u64 out)
{
  .reg .b64 %rd<3>;
  .reg .f32 %f<5>;
  ld.param.u64 %rd1, [t];
  tex.1d.v4.f32.s32 {%f1, %f2, %f3, %f4}, [%rd1, {0}];
  ret;
}
\x00"""


# A 64-bit shift amount: PTX wants a .u32 whatever the shifted type, and
# NVIDIA's JIT refuses this ("Arguments mismatch for instruction 'shr'"); the
# fake once ran it (seen when the PTX suite first met driver 580).
WIDE_SHIFT = b""".version 8.5
.target sm_90
.address_size 64
.visible .entry wide_shift(.param .u64 p)
{
  .reg .b64 %rd<4>;
  ld.param.u64 %rd1, [p];
  mov.u64 %rd2, 3;
  shr.s64 %rd3, %rd1, %rd2;
  ret;
}
\x00"""


def test_invalid_ptx_is_refused(cu: ModuleType, ctx: Any) -> None:
    assert err_of(cu.cuModuleLoadData(INVALID)) == cu.CUresult.CUDA_ERROR_INVALID_PTX


def test_a_shift_by_a_64_bit_register_is_invalid_ptx(cu: ModuleType, ctx: Any) -> None:
    assert err_of(cu.cuModuleLoadData(WIDE_SHIFT)) == cu.CUresult.CUDA_ERROR_INVALID_PTX
    # The same with the amount in a 32-bit register loads.
    fixed = WIDE_SHIFT.replace(b"  .reg .b64 %rd<4>;", b"  .reg .b64 %rd<4>;\n  .reg .b32 %r<2>;")
    fixed = fixed.replace(b"mov.u64 %rd2, 3;", b"mov.u32 %r1, 3;").replace(
        b"%rd1, %rd2;", b"%rd1, %r1;"
    )
    ok(cu.cuModuleUnload(ok(cu.cuModuleLoadData(fixed))))


@pytest.mark.only_paths(
    *FAKE_PATHS, reason="NVIDIA's driver runs every valid PTX; refusing is the fake's limit"
)
def test_unsupported_instruction_is_refused_at_load(cu: ModuleType, ctx: Any) -> None:
    assert err_of(cu.cuModuleLoadData(UNSUPPORTED)) == cu.CUresult.CUDA_ERROR_NOT_SUPPORTED
    err = err_of(cu.cuLibraryLoadData(UNSUPPORTED, None, None, 0, None, None, 0))
    assert err == cu.CUresult.CUDA_ERROR_NOT_SUPPORTED


@pytest.mark.only_paths(
    "fake", reason="the interposer answers JIT options itself and returns an empty log"
)
def test_refusal_names_the_instruction_in_the_jit_error_log(cu: ModuleType, ctx: Any) -> None:
    log = bytes(256)  # cuda-bindings hands the driver this buffer to fill
    opts = [
        cu.CUjit_option.CU_JIT_ERROR_LOG_BUFFER,
        cu.CUjit_option.CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
    ]
    err, _ = cu.cuModuleLoadDataEx(UNSUPPORTED, 2, opts, [log, 256])
    assert err == cu.CUresult.CUDA_ERROR_NOT_SUPPORTED
    text = log.rstrip(b"\x00")
    assert b"tex.1d.v4.f32.s32" in text
    assert b"line 9" in text


def _fatbin(entries: list[tuple[int, int, bytes]]) -> bytes:
    """A fatbin as nvcc lays it out, with uncompressed entries (kind, arch,
    payload): kind 1 is PTX, 2 an ELF cubin."""
    body = b""
    for kind, arch, payload in entries:
        payload += bytes(-len(payload) % 8)
        header = struct.pack("<HHIQIIHHIIIQQQ", kind, 0x101, 64, len(payload), 0, 0, 0, 9, arch,
                             0, 0, 0x11, 0, len(payload))  # fmt: skip
        body += header + payload
    return struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(body)) + body


@pytest.mark.only_paths(
    *FAKE_PATHS, reason="a hand-made fatbin's cubin entry is not a real cubin for NVIDIA's driver"
)
def test_fatbin_carrying_ptx(cu: ModuleType, ctx: Any) -> None:
    ptx = _ptx().rstrip(b"\x00")
    cubin = b"\x7fELF" + bytes(60)
    # PTX for this device next to SASS: the PTX runs
    mod = ok(cu.cuModuleLoadData(_fatbin([(2, 90, cubin), (1, 90, ptx)])))
    try:
        assert ok(cu.cuModuleGetFunction(mod, b"mixed"))
        _, size = ok(cu.cuModuleGetGlobal(mod, b"samples"))
        assert size == 80
    finally:
        ok(cu.cuModuleUnload(mod))
    # only PTX for a newer architecture, or only SASS: no code for the device
    for entries in ([(1, 100, ptx)], [(2, 90, cubin)]):
        err = err_of(cu.cuModuleLoadData(_fatbin(entries)))
        assert err == cu.CUresult.CUDA_ERROR_NO_BINARY_FOR_GPU


SHARED_SRC = r"""
extern "C" __global__ void uses_shared(float *out) {
  __shared__ float buf[256];
  __shared__ int flags[8];
  buf[threadIdx.x] = threadIdx.x;
  if (threadIdx.x < 8) flags[threadIdx.x] = 1;
  __syncthreads();
  out[threadIdx.x] = buf[255 - threadIdx.x] + flags[threadIdx.x % 8];
}
"""


def test_static_shared_size_from_ptx(cu: ModuleType, ctx: Any) -> None:
    mod = ok(cu.cuModuleLoadData(nvrtc_ptx(SHARED_SRC, "shared.cu")))
    try:
        fn = ok(cu.cuModuleGetFunction(mod, b"uses_shared"))
        attr = cu.CUfunction_attribute.CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES
        assert ok(cu.cuFuncGetAttribute(attr, fn)) == 256 * 4 + 8 * 4
    finally:
        ok(cu.cuModuleUnload(mod))
