"""The JIT linker (cuLinkCreate .. cuLinkDestroy) over PTX inputs: inputs
given as data and as files are linked into an image that loads and runs, the
image stays valid until the link state is destroyed (through the interposer
it comes back from the controller in pieces when it is larger than the
staging area), and the error log given at create receives the link's errors.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from driver_helpers import FAKE_PATHS, UNDEFINED_ON_NVIDIA, err_of, ok
from ptx_build import DeviceArrays, loaded, nvrtc_ptx
from test_ptx_load import UNSUPPORTED

HELPER_SRC = r"""
extern "C" __device__ float twice(float x) { return 2.0f * x; }
"""

KERNEL_SRC = r"""
extern "C" __device__ float twice(float x);
extern "C" __global__ void apply(const float *in, float *out, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = twice(in[i]) + 1.0f;
}
"""

RDC = ("-rdc=true",)


def _ptx_inputs() -> tuple[bytes, bytes]:
    """A helper function and a kernel that declares it .extern."""
    return nvrtc_ptx(HELPER_SRC, "helper.cu", RDC), nvrtc_ptx(KERNEL_SRC, "apply.cu", RDC)


def _run_apply(cu: ModuleType, image: bytes) -> None:
    x = np.linspace(-3, 3, 300, dtype=np.float32)
    mem = DeviceArrays(cu)
    try:
        src, out = mem.put(x), mem.empty(x.size, np.float32)
        with loaded(cu, image) as m:
            m.launch("apply", src, out, ctypes.c_int(x.size), grid=(3, 1, 1), block=(128, 1, 1))
        np.testing.assert_array_equal(mem.get(out, x.size, np.float32), 2 * x + 1)
    finally:
        mem.free()


def _complete(cu: ModuleType, state: Any) -> bytes:
    ptr, size = ok(cu.cuLinkComplete(state))
    assert size > 0
    return ctypes.string_at(int(ptr), int(size))


def test_link_ptx_data_inputs(cu: ModuleType, ctx: Any) -> None:
    helper, kernel = _ptx_inputs()
    ptx = cu.CUjitInputType.CU_JIT_INPUT_PTX
    state = ok(cu.cuLinkCreate(0, [], []))
    try:
        # the definition first: the kernel's later .extern declaration keeps its layout
        ok(cu.cuLinkAddData(state, ptx, helper, len(helper), b"helper.ptx", 0, [], []))
        ok(cu.cuLinkAddData(state, ptx, kernel, len(kernel), b"apply.ptx", 0, [], []))
        image = _complete(cu, state)
    finally:
        ok(cu.cuLinkDestroy(state))
    _run_apply(cu, image)


def test_link_ptx_files(cu: ModuleType, ctx: Any, tmp_path: Path) -> None:
    helper, kernel = _ptx_inputs()
    paths = []
    # the declaration first, the definition after
    for name, text in (("apply.ptx", kernel), ("helper.ptx", helper)):
        p = tmp_path / name
        p.write_bytes(text.rstrip(b"\x00"))  # a file without the NUL
        paths.append(p)
    ptx = cu.CUjitInputType.CU_JIT_INPUT_PTX
    state = ok(cu.cuLinkCreate(0, [], []))
    try:
        for p in paths:
            ok(cu.cuLinkAddFile(state, ptx, str(p).encode(), 0, [], []))
        missing = str(tmp_path / "missing.ptx").encode()
        assert err_of(cu.cuLinkAddFile(state, ptx, missing, 0, [], [])) == (
            cu.CUresult.CUDA_ERROR_FILE_NOT_FOUND
        )
        image = _complete(cu, state)
    finally:
        ok(cu.cuLinkDestroy(state))
    _run_apply(cu, image)


@pytest.mark.only_paths(
    *FAKE_PATHS, reason="NVIDIA's image is a cubin, not the inputs' text padded with comments"
)
def test_large_image_comes_back_whole(cu: ModuleType, ctx: Any) -> None:
    """An image larger than any staging area: the interposer reads it in pieces."""
    helper, kernel = _ptx_inputs()
    padding = b"".join(b"// padding line %07d\n" % i for i in range(150_000))  # ~3 MiB
    helper = helper.rstrip(b"\x00") + b"\n" + padding
    ptx = cu.CUjitInputType.CU_JIT_INPUT_PTX
    state = ok(cu.cuLinkCreate(0, [], []))
    try:
        ok(cu.cuLinkAddData(state, ptx, kernel, len(kernel), b"apply.ptx", 0, [], []))
        ok(cu.cuLinkAddData(state, ptx, helper, len(helper), b"helper.ptx", 0, [], []))
        image = _complete(cu, state)
        assert len(image) > len(padding)
        assert padding in image
    finally:
        ok(cu.cuLinkDestroy(state))
    _run_apply(cu, image)


@pytest.mark.only_paths(
    *FAKE_PATHS, reason="NVIDIA's driver runs every valid PTX; refusing is the fake's limit"
)
def test_link_error_goes_to_the_create_error_log(cu: ModuleType, ctx: Any) -> None:
    log = bytes(512)  # cuda-bindings hands the driver this buffer to fill
    opts = [
        cu.CUjit_option.CU_JIT_ERROR_LOG_BUFFER,
        cu.CUjit_option.CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
    ]
    state = ok(cu.cuLinkCreate(2, opts, [log, len(log)]))
    try:
        ptx = cu.CUjitInputType.CU_JIT_INPUT_PTX
        ok(cu.cuLinkAddData(state, ptx, UNSUPPORTED, len(UNSUPPORTED), b"bad.ptx", 0, [], []))
        err = err_of(cu.cuLinkComplete(state))
        assert err == cu.CUresult.CUDA_ERROR_NOT_SUPPORTED
        text = log.rstrip(b"\x00")
        assert b"tex.1d.v4.f32.s32" in text
    finally:
        ok(cu.cuLinkDestroy(state))


@UNDEFINED_ON_NVIDIA
def test_destroyed_link_state_is_an_invalid_handle(cu: ModuleType, ctx: Any) -> None:
    state = ok(cu.cuLinkCreate(0, [], []))
    ok(cu.cuLinkDestroy(state))
    assert err_of(cu.cuLinkDestroy(state)) == cu.CUresult.CUDA_ERROR_INVALID_HANDLE
    helper, _ = _ptx_inputs()
    ptx = cu.CUjitInputType.CU_JIT_INPUT_PTX
    err = err_of(cu.cuLinkAddData(state, ptx, helper, len(helper), b"h", 0, [], []))
    assert err == cu.CUresult.CUDA_ERROR_INVALID_HANDLE


@pytest.mark.only_paths(*FAKE_PATHS, reason="the fake links PTX only")
def test_non_ptx_inputs_are_refused(cu: ModuleType, ctx: Any) -> None:
    state = ok(cu.cuLinkCreate(0, [], []))
    try:
        cubin = cu.CUjitInputType.CU_JIT_INPUT_CUBIN
        err = err_of(cu.cuLinkAddData(state, cubin, b"\x7fELF" + bytes(60), 64, b"x", 0, [], []))
        assert err == cu.CUresult.CUDA_ERROR_NOT_SUPPORTED
        # nothing was added: nothing to link
        assert err_of(cu.cuLinkComplete(state)) == cu.CUresult.CUDA_ERROR_INVALID_VALUE
    finally:
        ok(cu.cuLinkDestroy(state))


@pytest.mark.only_paths(
    *FAKE_PATHS, reason="NVIDIA does not document a link state whose context is gone"
)
def test_link_state_outlives_its_context(cu: ModuleType, ctx: Any) -> None:
    """Destroying the context a link state was created in leaves cuLinkDestroy
    working, and the image completed before stays readable until then."""
    helper, kernel = _ptx_inputs()
    ptx = cu.CUjitInputType.CU_JIT_INPUT_PTX
    dev = ok(cu.cuDeviceGet(0))
    c = ok(cu.cuCtxCreate(None, 0, dev))
    state = ok(cu.cuLinkCreate(0, [], []))
    ok(cu.cuLinkAddData(state, ptx, kernel, len(kernel), b"apply.ptx", 0, [], []))
    ok(cu.cuLinkAddData(state, ptx, helper, len(helper), b"helper.ptx", 0, [], []))
    ptr, size = ok(cu.cuLinkComplete(state))
    ok(cu.cuCtxDestroy(c))
    image = ctypes.string_at(int(ptr), int(size))
    ok(cu.cuLinkDestroy(state))
    _run_apply(cu, image)
