"""Managed memory: one address the host and kernels both read and write,
its pointer attributes, and the advice and prefetch calls that take it."""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from driver_helpers import Kernels, err_of, ok, read_ints

GLOBAL = 1  # CU_MEM_ATTACH_GLOBAL


@pytest.fixture
def managed(cu: ModuleType, ctx: Any) -> Iterator[Callable[[int], int]]:
    """Managed memory (freed after the test): managed(size) -> address."""
    owned: list[int] = []

    def alloc(size: int) -> int:
        ptr = int(ok(cu.cuMemAllocManaged(size, GLOBAL)))
        owned.append(ptr)
        return ptr

    yield alloc
    ok(cu.cuCtxSynchronize())
    for ptr in owned:
        ok(cu.cuMemFree(ptr))


def attr(cu: ModuleType, name: str, ptr: int) -> int:
    a = getattr(cu.CUpointer_attribute, f"CU_POINTER_ATTRIBUTE_{name}")
    return int(ok(cu.cuPointerGetAttribute(a, ptr)))


def location(cu: ModuleType, device: int | None) -> Any:
    loc = cu.CUmemLocation()
    if device is None:
        loc.type = cu.CUmemLocationType.CU_MEM_LOCATION_TYPE_HOST
    else:
        loc.type = cu.CUmemLocationType.CU_MEM_LOCATION_TYPE_DEVICE
        loc.id = device
    return loc


def test_device_reports_managed_memory(cu: ModuleType, ctx: Any) -> None:
    attr_ = cu.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY
    assert ok(cu.cuDeviceGetAttribute(attr_, 0)) == 1


def test_host_and_kernel_share_the_bytes(
    cu: ModuleType, managed: Callable[[int], int], kernels: Kernels
) -> None:
    n = 64
    ptr = managed(4 * n)
    host = (ctypes.c_int * n).from_address(ptr)
    for i in range(n):
        host[i] = 3 * i
    # What the host wrote, the device reads ...
    assert read_ints(cu, ptr, n) == [3 * i for i in range(n)]
    # ... and what a kernel writes, the host reads at the same address.
    err = kernels.launch("write_value", ctypes.c_uint64(ptr + 4 * 5), ctypes.c_int(-7))
    assert err == cu.CUresult.CUDA_SUCCESS
    ok(cu.cuCtxSynchronize())
    assert host[5] == -7 and host[4] == 12 and host[6] == 18
    # A memset of device memory may return before it ran: the host waits.
    ok(cu.cuMemsetD32(ptr, 0x01010101, n))
    ok(cu.cuCtxSynchronize())
    assert list(host) == [0x01010101] * n


def test_pointer_attributes(
    cu: ModuleType, managed: Callable[[int], int], dmem: Callable[[int], int]
) -> None:
    ptr = managed(1000)
    assert attr(cu, "IS_MANAGED", ptr) == 1
    assert attr(cu, "IS_MANAGED", dmem(1000)) == 0
    assert attr(cu, "MEMORY_TYPE", ptr) == int(cu.CUmemorytype.CU_MEMORYTYPE_DEVICE)
    assert attr(cu, "HOST_POINTER", ptr + 8) == ptr + 8
    assert attr(cu, "DEVICE_POINTER", ptr + 8) == ptr + 8
    base, size = ok(cu.cuMemGetAddressRange(ptr + 10))
    assert int(base) == ptr and size >= 1000


def test_advice_and_prefetch(
    cu: ModuleType, managed: Callable[[int], int], dmem: Callable[[int], int]
) -> None:
    ptr = managed(1 << 16)
    advise = cu.CUmem_advise
    ok(cu.cuMemAdvise(ptr, 1 << 16, advise.CU_MEM_ADVISE_SET_READ_MOSTLY, location(cu, 0)))
    ok(cu.cuMemAdvise(ptr, 4096, advise.CU_MEM_ADVISE_SET_PREFERRED_LOCATION, location(cu, 0)))
    ok(cu.cuMemAdvise(ptr, 4096, advise.CU_MEM_ADVISE_SET_ACCESSED_BY, location(cu, None)))
    stream = ok(cu.cuStreamCreate(0))
    try:
        ok(cu.cuMemPrefetchAsync(ptr, 1 << 16, location(cu, 0), 0, stream))
        ok(cu.cuMemPrefetchAsync(ptr, 4096, location(cu, None), 0, stream))
        ok(cu.cuStreamSynchronize(stream))
        inval = cu.CUresult.CUDA_ERROR_INVALID_VALUE
        # Only managed memory takes them, and only inside it.
        plain = dmem(4096)
        assert err_of(cu.cuMemPrefetchAsync(plain, 4096, location(cu, 0), 0, stream)) == inval
        read_mostly = advise.CU_MEM_ADVISE_SET_READ_MOSTLY
        assert err_of(cu.cuMemAdvise(plain, 4096, read_mostly, location(cu, 0))) == inval
        assert err_of(cu.cuMemAdvise(ptr, 1 << 17, read_mostly, location(cu, 0))) == inval
        count = ok(cu.cuDeviceGetCount())
        preferred = advise.CU_MEM_ADVISE_SET_PREFERRED_LOCATION
        # A location naming no device is an invalid value (NVIDIA's driver 580).
        assert err_of(cu.cuMemAdvise(ptr, 4096, preferred, location(cu, count))) == inval
    finally:
        ok(cu.cuStreamDestroy(stream))


def test_bad_allocations(cu: ModuleType, ctx: Any) -> None:
    inval = cu.CUresult.CUDA_ERROR_INVALID_VALUE
    assert err_of(cu.cuMemAllocManaged(0, GLOBAL)) == inval
    assert err_of(cu.cuMemAllocManaged(4096, 0)) == inval
    assert err_of(cu.cuMemAllocManaged(4096, 4)) == inval  # CU_MEM_ATTACH_SINGLE
    ptr = int(ok(cu.cuMemAllocManaged(4096, 2)))  # CU_MEM_ATTACH_HOST
    ok(cu.cuMemFree(ptr))
    assert err_of(cu.cuMemFree(ptr)) == inval
