"""Modules (from a file and from memory, functions, globals, unload, refused
GPU images) and kernel launches (kernelParams, the `extra` buffer,
cuLaunchKernelEx, the whole grid, parameter layout)."""

from __future__ import annotations

import ctypes
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from driver_helpers import (
    FAKE_PATHS,
    UNDEFINED_ON_NVIDIA,
    Kernels,
    ParamArray,
    Triple,
    err_of,
    ok,
    read_ints,
    write_ints,
)

Alloc = Callable[[int], int]

# mixed_params(char c, double d, triple v, short s, double *out): each
# parameter at its natural alignment, as CUDA lays out kernel arguments.
MIXED_LAYOUT = [(0, 1), (8, 8), (16, 12), (28, 2), (32, 8)]
MIXED_SIZE = 40

# What the real driver answers for an image it cannot run on the device.
REFUSALS = {
    "CUDA_ERROR_NO_BINARY_FOR_GPU",
    "CUDA_ERROR_INVALID_PTX",
    "CUDA_ERROR_UNSUPPORTED_PTX_VERSION",
    "CUDA_ERROR_JIT_COMPILER_NOT_FOUND",
    "CUDA_ERROR_INVALID_IMAGE",
}


def _cubin() -> bytes:
    """The ELF header of a cubin: ELF64, little-endian, machine EM_CUDA (190)."""
    ident = b"\x7fELF" + bytes([2, 1, 1, 0x33, 7]) + bytes(7)
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH", 2, 190, 1, 0, 64, 0, 0x5A055A, 64, 56, 0, 64, 0, 0
    )
    return header + bytes(256)


def _fatbin() -> bytes:
    """A fatbin header (magic 0xBA55ED50, version 1, header size 16) and an
    empty entry list."""
    return struct.pack("<IHHQ", 0xBA55ED50, 1, 16, 0) + bytes(64)


# PTX is run by the fake driver's interpreter (test_ptx_*.py): not refused.
IMAGES = {
    "cubin": _cubin(),
    "fatbin": _fatbin(),
    "garbage": b"this is not a module at all\n\x00" + bytes(64),
}


def _load_data(cu: ModuleType, image: bytes) -> tuple[Any, Any]:
    buf = ctypes.create_string_buffer(image, len(image))
    return cu.cuModuleLoadData(ctypes.addressof(buf))


def _mixed_args(out: int) -> list[Any]:
    return [
        ctypes.c_char(b"\xfd"),  # -3
        ctypes.c_double(2.5),
        Triple(7, -8, 9),
        ctypes.c_short(300),
        ctypes.c_uint64(out),
    ]


def _read_doubles(cu: ModuleType, dptr: int, n: int) -> list[float]:
    buf = (ctypes.c_double * n)()
    ok(cu.cuMemcpyDtoH(ctypes.addressof(buf), dptr, ctypes.sizeof(buf)))
    return list(buf)


MIXED_RESULT = [-3.0, 2.5, 7.0, -8.0, 9.0, 300.0]


@pytest.mark.only_paths(
    "fake",
    "system",
    reason="cuModuleGetFunctionCount is not forwarded: the dispatcher has no request that "
    "counts a module's functions",
)
def test_module_from_file(cu: ModuleType, ctx: Any, kernels_path: Path) -> None:
    mod = ok(cu.cuModuleLoad(str(kernels_path).encode()))
    try:
        assert ok(cu.cuModuleGetFunction(mod, b"noop"))
        dptr, size = ok(cu.cuModuleGetGlobal(mod, b"conformance_global"))
        assert size == 4
        assert read_ints(cu, int(dptr), 1) == [42]
        _, table_size = ok(cu.cuModuleGetGlobal(mod, b"conformance_table"))
        assert table_size == 64
        assert ok(cu.cuModuleGetFunctionCount(mod)) == 9
    finally:
        ok(cu.cuModuleUnload(mod))


def test_module_from_memory(cu: ModuleType, ctx: Any, kernels_path: Path, dmem: Alloc) -> None:
    image = kernels_path.read_bytes()
    if kernels_path.suffix == ".ptx":
        image += b"\x00"  # PTX in memory is a C string
    mod = ok(_load_data(cu, image))
    buf = ctypes.create_string_buffer(image, len(image))
    mod_ex = ok(cu.cuModuleLoadDataEx(ctypes.addressof(buf), 0, None, None))
    try:
        out = dmem(8)
        k = Kernels(cu, mod)
        assert k.launch("write_global", ctypes.c_int(7)) == cu.CUresult.CUDA_SUCCESS
        assert k.launch("read_global", ctypes.c_uint64(out)) == cu.CUresult.CUDA_SUCCESS
        ok(cu.cuCtxSynchronize())
        assert read_ints(cu, out, 1) == [7]
        # Each load is a module of its own, with its own globals.
        other, _ = ok(cu.cuModuleGetGlobal(mod_ex, b"conformance_global"))
        assert read_ints(cu, int(other), 1) == [42]
    finally:
        ok(cu.cuModuleUnload(mod))
        ok(cu.cuModuleUnload(mod_ex))


# NVIDIA's driver runs GPU images.
REFUSING = "refusing GPU images is the fake driver's part: NVIDIA's driver runs them"


@pytest.mark.only_paths(*FAKE_PATHS, reason=REFUSING)
@pytest.mark.parametrize("kind", sorted(IMAGES))
def test_gpu_images_are_refused(cu: ModuleType, ctx: Any, kind: str, tmp_path: Path) -> None:
    image = IMAGES[kind]
    err, _ = _load_data(cu, image)
    assert err.name in REFUSALS, err
    path = tmp_path / f"image.{kind}"
    path.write_bytes(image)
    err_file, _ = cu.cuModuleLoad(str(path).encode())
    assert err_file == err
    if kind == "garbage":
        assert err == cu.CUresult.CUDA_ERROR_INVALID_IMAGE


def test_missing_module_file(cu: ModuleType, ctx: Any, tmp_path: Path) -> None:
    err, _ = cu.cuModuleLoad(str(tmp_path / "absent.so").encode())
    assert err == cu.CUresult.CUDA_ERROR_FILE_NOT_FOUND


def test_unknown_names(cu: ModuleType, kernels: Kernels) -> None:
    nf = cu.CUresult.CUDA_ERROR_NOT_FOUND
    assert err_of(cu.cuModuleGetFunction(kernels.module, b"no_such_kernel")) == nf
    assert err_of(cu.cuModuleGetGlobal(kernels.module, b"no_such_global")) == nf
    # A kernel is not a global (NVIDIA's driver: an invalid value, for a name it
    # knows as something else), nor a global a kernel.
    assert (
        err_of(cu.cuModuleGetGlobal(kernels.module, b"noop"))
        == cu.CUresult.CUDA_ERROR_INVALID_VALUE
    )
    assert err_of(cu.cuModuleGetFunction(kernels.module, b"conformance_global")) == nf


def test_names_of_functions_and_kernels(
    cu: ModuleType, kernels: Kernels, kernels_path: Path
) -> None:
    inval = cu.CUresult.CUDA_ERROR_INVALID_VALUE
    assert ok(cu.cuFuncGetName(kernels.fn("noop"))) == b"noop"
    # No handle at all is an invalid value to the driver, not an invalid
    # handle (cuda-bindings' own tests hold it to that).
    assert err_of(cu.cuFuncGetName(0)) == inval
    assert err_of(cu.cuKernelGetName(0)) == inval
    lib = ok(cu.cuLibraryLoadFromFile(str(kernels_path).encode(), [], [], 0, [], [], 0))
    try:
        assert ok(cu.cuKernelGetName(ok(cu.cuLibraryGetKernel(lib, b"noop")))) == b"noop"
    finally:
        ok(cu.cuLibraryUnload(lib))


def test_unloaded_module_and_its_functions(cu: ModuleType, ctx: Any, kernels_path: Path) -> None:
    bad = cu.CUresult.CUDA_ERROR_INVALID_HANDLE
    mod = ok(cu.cuModuleLoad(str(kernels_path).encode()))
    fn = ok(cu.cuModuleGetFunction(mod, b"noop"))
    ok(cu.cuModuleUnload(mod))
    assert err_of(cu.cuModuleGetFunction(mod, b"noop")) == bad
    assert err_of(cu.cuModuleGetGlobal(mod, b"conformance_global")) == bad
    assert err_of(cu.cuModuleUnload(mod)) == bad
    assert err_of(cu.cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0)) == bad
    assert err_of(cu.cuFuncGetParamInfo(fn, 0)) == bad


@UNDEFINED_ON_NVIDIA
def test_forged_module_and_function(cu: ModuleType, ctx: Any) -> None:
    bad = cu.CUresult.CUDA_ERROR_INVALID_HANDLE
    mod = cu.CUmodule(0x7FFF_0BAD_0000)
    fn = cu.CUfunction(0x7FFF_0BAD_1000)
    assert err_of(cu.cuModuleGetFunction(mod, b"noop")) == bad
    assert err_of(cu.cuModuleUnload(mod)) == bad
    assert err_of(cu.cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0)) == bad


def test_param_info(cu: ModuleType, kernels: Kernels) -> None:
    mixed = kernels.fn("mixed_params")
    got = [tuple(ok(cu.cuFuncGetParamInfo(mixed, i))) for i in range(len(MIXED_LAYOUT))]
    assert got == MIXED_LAYOUT
    inval = cu.CUresult.CUDA_ERROR_INVALID_VALUE
    assert err_of(cu.cuFuncGetParamInfo(mixed, len(MIXED_LAYOUT))) == inval
    assert err_of(cu.cuFuncGetParamInfo(kernels.fn("noop"), 0)) == inval
    assert tuple(ok(cu.cuFuncGetParamInfo(kernels.fn("wait_flag"), 2))) == (16, 8)


def test_launch_with_kernel_params(cu: ModuleType, kernels: Kernels, dmem: Alloc) -> None:
    out = dmem(6 * 8)
    assert kernels.launch("mixed_params", *_mixed_args(out)) == cu.CUresult.CUDA_SUCCESS
    ok(cu.cuCtxSynchronize())
    assert _read_doubles(cu, out, 6) == MIXED_RESULT


def _packed(out: int) -> ctypes.Array[ctypes.c_char]:
    buf = ctypes.create_string_buffer(MIXED_SIZE)
    for (offset, size), arg in zip(MIXED_LAYOUT, _mixed_args(out), strict=True):
        ctypes.memmove(ctypes.addressof(buf) + offset, ctypes.addressof(arg), size)
    return buf


def _extra(buf: ctypes.Array[ctypes.c_char], size: int) -> tuple[Any, ...]:
    """A CU_LAUNCH_PARAM_* list (and what it points to, to keep alive)."""
    size_box = ctypes.c_size_t(size)
    extra = (ctypes.c_void_p * 5)(
        1,  # CU_LAUNCH_PARAM_BUFFER_POINTER
        ctypes.addressof(buf),
        2,  # CU_LAUNCH_PARAM_BUFFER_SIZE
        ctypes.addressof(size_box),
        0,  # CU_LAUNCH_PARAM_END
    )
    return extra, size_box, buf


def test_launch_with_extra_buffer(cu: ModuleType, kernels: Kernels, dmem: Alloc) -> None:
    out = dmem(6 * 8)
    keep = _extra(_packed(out), MIXED_SIZE)
    fn = kernels.fn("mixed_params")
    ok(cu.cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, 0, 0, ctypes.addressof(keep[0])))
    ok(cu.cuCtxSynchronize())
    assert _read_doubles(cu, out, 6) == MIXED_RESULT


@pytest.mark.only_paths(
    *FAKE_PATHS,
    reason="NVIDIA's driver (580) does not check the size of an argument buffer: it "
    "launches, the kernel reads past the buffer and faults, and the context is lost",
)
def test_an_argument_buffer_of_the_wrong_size_is_refused(
    cu: ModuleType, kernels: Kernels, dmem: Alloc
) -> None:
    out = dmem(6 * 8)
    fn = kernels.fn("mixed_params")
    wrong_size = _extra(_packed(out), MIXED_SIZE - 8)
    assert (
        err_of(cu.cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, 0, 0, ctypes.addressof(wrong_size[0])))
        == cu.CUresult.CUDA_ERROR_INVALID_VALUE
    )


def test_launch_argument_errors(cu: ModuleType, kernels: Kernels, dmem: Alloc) -> None:
    inval = cu.CUresult.CUDA_ERROR_INVALID_VALUE
    out = dmem(6 * 8)
    fn = kernels.fn("mixed_params")
    params = ParamArray(_mixed_args(out))
    both = _extra(_packed(out), MIXED_SIZE)
    assert (
        err_of(
            cu.cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, 0, params.address, ctypes.addressof(both[0]))
        )
        == inval
    )
    noop = kernels.fn("noop")
    for grid, block in [
        ((0, 1, 1), (1, 1, 1)),
        ((1, 1, 1), (0, 1, 1)),
        ((1, 1, 1), (2048, 1, 1)),
        ((1, 1, 1), (32, 32, 2)),
        ((1, 1, 1), (1, 1, 128)),
        ((1, 1 << 16, 1), (1, 1, 1)),
    ]:
        assert err_of(cu.cuLaunchKernel(noop, *grid, *block, 0, 0, 0, 0)) == inval, (grid, block)
    # More dynamic shared memory than a block can have.
    assert err_of(cu.cuLaunchKernel(noop, 1, 1, 1, 1, 1, 1, 1 << 30, 0, 0, 0)) == inval


def test_launch_covers_the_whole_grid(cu: ModuleType, kernels: Kernels, dmem: Alloc) -> None:
    grid, block = (3, 2, 2), (4, 2, 3)
    n = 3 * 2 * 2 * 4 * 2 * 3
    ids, count = dmem(4 * n), dmem(4)
    ok(cu.cuMemsetD32(ids, 0xFFFFFFFF, n))
    ok(cu.cuMemsetD32(count, 0, 1))
    err = kernels.launch(
        "fill_index", ctypes.c_uint64(ids), ctypes.c_uint64(count), grid=grid, block=block
    )
    assert err == cu.CUresult.CUDA_SUCCESS
    ok(cu.cuCtxSynchronize())
    assert read_ints(cu, ids, n) == list(range(n))
    assert read_ints(cu, count, 1) == [n]


def test_launch_kernel_ex(
    cu: ModuleType, kernels: Kernels, dmem: Alloc, stream: Callable[..., Any]
) -> None:
    s = stream()
    n = 96
    src, dst = dmem(4 * n), dmem(4 * n)
    write_ints(cu, src, list(range(n)))
    config = cu.CUlaunchConfig()
    config.gridDimX, config.gridDimY, config.gridDimZ = 3, 1, 1
    config.blockDimX, config.blockDimY, config.blockDimZ = 32, 1, 1
    config.sharedMemBytes = 0
    config.hStream = s
    config.numAttrs = 0
    args = ParamArray([ctypes.c_uint64(src), ctypes.c_uint64(dst), ctypes.c_int(n)])
    ok(cu.cuLaunchKernelEx(config, kernels.fn("add_one"), args.address, 0))
    # The extra form through cuLaunchKernelEx.
    out = dmem(6 * 8)
    keep = _extra(_packed(out), MIXED_SIZE)
    config.gridDimX, config.blockDimX = 1, 1
    ok(cu.cuLaunchKernelEx(config, kernels.fn("mixed_params"), 0, ctypes.addressof(keep[0])))
    ok(cu.cuStreamSynchronize(s))
    assert read_ints(cu, dst, n) == list(range(1, n + 1))
    assert _read_doubles(cu, out, 6) == MIXED_RESULT


def test_module_globals(cu: ModuleType, kernels: Kernels, dmem: Alloc) -> None:
    out = dmem(8)
    gptr, _ = ok(cu.cuModuleGetGlobal(kernels.module, b"conformance_global"))
    tptr, _ = ok(cu.cuModuleGetGlobal(kernels.module, b"conformance_table"))
    write_ints(cu, int(gptr), [1234])
    write_ints(cu, int(tptr) + 15 * 4, [-77])
    assert kernels.launch("read_global", ctypes.c_uint64(out)) == cu.CUresult.CUDA_SUCCESS
    ok(cu.cuCtxSynchronize())
    assert read_ints(cu, out, 2) == [1234, -77]
    assert kernels.launch("write_global", ctypes.c_int(-5)) == cu.CUresult.CUDA_SUCCESS
    ok(cu.cuCtxSynchronize())
    assert read_ints(cu, int(gptr), 1) == [-5]
    attr = cu.CUpointer_attribute.CU_POINTER_ATTRIBUTE_MEMORY_TYPE
    assert ok(cu.cuPointerGetAttribute(attr, int(gptr))) == int(
        cu.CUmemorytype.CU_MEMORYTYPE_DEVICE
    )


def test_function_attributes(cu: ModuleType, kernels: Kernels) -> None:
    fa = cu.CUfunction_attribute
    fn = kernels.fn("add_one")
    assert ok(cu.cuFuncGetAttribute(fa.CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, fn)) >= 1
    assert ok(cu.cuFuncGetAttribute(fa.CU_FUNC_ATTRIBUTE_NUM_REGS, fn)) >= 0


def test_launch_needs_a_current_context(cu: ModuleType, kernels: Kernels) -> None:
    fn = kernels.fn("noop")
    seen: list[Any] = []
    t = threading.Thread(
        target=lambda: seen.append(err_of(cu.cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0)))
    )
    t.start()
    t.join()
    assert seen == [cu.CUresult.CUDA_ERROR_INVALID_CONTEXT]


def test_function_of_another_context(cu: ModuleType, kernels: Kernels) -> None:
    fn = kernels.fn("noop")
    dev = ok(cu.cuDeviceGet(0))
    other = ok(cu.cuCtxCreate(None, 0, dev))
    try:
        err = err_of(cu.cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0))
        assert err == cu.CUresult.CUDA_ERROR_INVALID_HANDLE
    finally:
        ok(cu.cuCtxDestroy(other))
