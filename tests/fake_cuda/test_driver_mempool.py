"""Stream-ordered allocation and memory pools: the default and current pool
of a device, pools made by the application, their attributes (release
threshold, reuse, reserved and used memory and their high watermarks),
trimming, and destruction with allocations still outstanding."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from driver_helpers import err_of, ok, read_ints

MiB = 1 << 20
U64_MAX = (1 << 64) - 1


def _attr(cu: ModuleType, name: str) -> Any:
    return getattr(cu.CUmemPool_attribute, f"CU_MEMPOOL_ATTR_{name}")


def get(cu: ModuleType, pool: Any, name: str) -> int:
    return int(ok(cu.cuMemPoolGetAttribute(pool, _attr(cu, name))))


def put(cu: ModuleType, pool: Any, name: str, value: int) -> Any:
    """cuMemPoolSetAttribute with the attribute's own value type; its result."""
    v = value if name.startswith("REUSE") else cu.cuuint64_t(value)
    return cu.cuMemPoolSetAttribute(pool, _attr(cu, name), v)


def props(cu: ModuleType, device: int = 0) -> Any:
    p = cu.CUmemPoolProps()
    p.allocType = cu.CUmemAllocationType.CU_MEM_ALLOCATION_TYPE_PINNED
    p.location.type = cu.CUmemLocationType.CU_MEM_LOCATION_TYPE_DEVICE
    p.location.id = device
    return p


class Pools:
    """Pools and stream-ordered allocations of one test, undone at the end."""

    def __init__(self, cu: ModuleType) -> None:
        self.cu = cu
        self.pools: list[Any] = []
        self.ptrs: list[int] = []
        self.stream = ok(cu.cuStreamCreate(cu.CUstream_flags.CU_STREAM_NON_BLOCKING))

    def create(self, threshold: int | None = None) -> Any:
        pool = ok(self.cu.cuMemPoolCreate(props(self.cu)))
        self.pools.append(pool)
        if threshold is not None:
            ok(put(self.cu, pool, "RELEASE_THRESHOLD", threshold))
        return pool

    def alloc(self, size: int, pool: Any = None) -> int:
        if pool is None:
            ptr = int(ok(self.cu.cuMemAllocAsync(size, self.stream)))
        else:
            ptr = int(ok(self.cu.cuMemAllocFromPoolAsync(size, pool, self.stream)))
        self.ptrs.append(ptr)
        return ptr

    def free(self, ptr: int) -> None:
        ok(self.cu.cuMemFreeAsync(ptr, self.stream))
        self.ptrs.remove(ptr)

    def sync(self) -> None:
        ok(self.cu.cuStreamSynchronize(self.stream))

    def close(self) -> None:
        for ptr in list(self.ptrs):
            self.free(ptr)
        self.sync()
        for pool in self.pools:
            ok(self.cu.cuMemPoolDestroy(pool))
        ok(self.cu.cuStreamDestroy(self.stream))


@pytest.fixture
def pools(cu: ModuleType, ctx: Any) -> Iterator[Pools]:
    p = Pools(cu)
    yield p
    p.close()


def pool_of(cu: ModuleType, ptr: int) -> int:
    attr = cu.CUpointer_attribute.CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE
    return int(ok(cu.cuPointerGetAttribute(attr, ptr)))


def test_device_reports_memory_pools(cu: ModuleType, ctx: Any) -> None:
    attr = cu.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED
    assert ok(cu.cuDeviceGetAttribute(attr, 0)) == 1


def test_alloc_async_comes_from_the_current_pool(cu: ModuleType, pools: Pools) -> None:
    default = ok(cu.cuDeviceGetDefaultMemPool(0))
    assert int(ok(cu.cuDeviceGetMemPool(0))) == int(default)
    n = 3 * MiB + 5
    ptr = pools.alloc(n)
    assert pool_of(cu, ptr) == int(default)
    # Stream-ordered: filled and read back on the allocating stream.
    data = os.urandom(n)
    src = ctypes.create_string_buffer(data, n)
    out = ctypes.create_string_buffer(n)
    ok(cu.cuMemcpyHtoDAsync(ptr, ctypes.addressof(src), n, pools.stream))
    ok(cu.cuMemcpyDtoHAsync(ctypes.addressof(out), ptr, n, pools.stream))
    pools.free(ptr)
    pools.sync()
    assert out.raw == data


def test_attributes_defaults_and_limits(cu: ModuleType, pools: Pools) -> None:
    pool = pools.create()
    assert get(cu, pool, "RELEASE_THRESHOLD") == 0
    for name in ("REUSE_FOLLOW_EVENT_DEPENDENCIES", "REUSE_ALLOW_OPPORTUNISTIC"):
        assert get(cu, pool, name) == 1
    assert get(cu, pool, "REUSE_ALLOW_INTERNAL_DEPENDENCIES") == 1
    assert get(cu, pool, "RESERVED_MEM_CURRENT") == get(cu, pool, "USED_MEM_CURRENT") == 0
    ok(put(cu, pool, "RELEASE_THRESHOLD", 64 * MiB))
    assert get(cu, pool, "RELEASE_THRESHOLD") == 64 * MiB
    ok(put(cu, pool, "REUSE_ALLOW_OPPORTUNISTIC", 0))
    assert get(cu, pool, "REUSE_ALLOW_OPPORTUNISTIC") == 0
    inval = cu.CUresult.CUDA_ERROR_INVALID_VALUE
    # High watermarks can only be reset; the current values not set at all.
    assert err_of(put(cu, pool, "RESERVED_MEM_HIGH", 5)) == inval
    assert err_of(put(cu, pool, "USED_MEM_HIGH", 5)) == inval
    assert err_of(put(cu, pool, "USED_MEM_CURRENT", 0)) == inval


def test_used_and_reserved_memory(cu: ModuleType, pools: Pools) -> None:
    pool = pools.create(threshold=U64_MAX)
    ptr = pools.alloc(4 * MiB, pool)
    assert pool_of(cu, ptr) == int(pool)
    used = get(cu, pool, "USED_MEM_CURRENT")
    reserved = get(cu, pool, "RESERVED_MEM_CURRENT")
    assert used >= 4 * MiB and reserved >= used
    assert get(cu, pool, "USED_MEM_HIGH") >= used
    pools.free(ptr)
    pools.sync()
    # Freed memory stays in the pool below its release threshold ...
    assert get(cu, pool, "USED_MEM_CURRENT") == 0
    assert get(cu, pool, "RESERVED_MEM_CURRENT") == reserved
    assert get(cu, pool, "USED_MEM_HIGH") >= used
    ok(put(cu, pool, "USED_MEM_HIGH", 0))
    assert get(cu, pool, "USED_MEM_HIGH") == 0
    # ... until trimmed.
    ok(cu.cuMemPoolTrimTo(pool, 0))
    assert get(cu, pool, "RESERVED_MEM_CURRENT") == 0
    assert get(cu, pool, "RESERVED_MEM_HIGH") >= reserved
    ok(put(cu, pool, "RESERVED_MEM_HIGH", 0))
    assert get(cu, pool, "RESERVED_MEM_HIGH") == 0


def test_release_threshold_zero_gives_memory_back(cu: ModuleType, pools: Pools) -> None:
    pool = pools.create()
    free0 = ok(cu.cuMemGetInfo())[0]
    ptr = pools.alloc(8 * MiB, pool)
    assert ok(cu.cuMemGetInfo())[0] <= free0 - 8 * MiB
    pools.free(ptr)
    pools.sync()
    assert get(cu, pool, "RESERVED_MEM_CURRENT") == 0
    assert ok(cu.cuMemGetInfo())[0] == free0


def test_freed_memory_is_reused_on_the_same_stream(cu: ModuleType, pools: Pools) -> None:
    pool = pools.create(threshold=U64_MAX)
    first = pools.alloc(2 * MiB, pool)
    reserved = get(cu, pool, "RESERVED_MEM_CURRENT")
    pools.free(first)
    second = pools.alloc(2 * MiB, pool)
    # The free is ordered before the allocation on one stream: no new memory.
    pools.sync()
    assert get(cu, pool, "RESERVED_MEM_CURRENT") == reserved
    ok(cu.cuMemsetD32Async(second, 7, 4, pools.stream))
    pools.sync()
    assert read_ints(cu, second, 4) == [7] * 4


def test_set_mem_pool_and_destroy(cu: ModuleType, pools: Pools) -> None:
    default = ok(cu.cuDeviceGetDefaultMemPool(0))
    pool = ok(cu.cuMemPoolCreate(props(cu)))
    ok(cu.cuDeviceSetMemPool(0, pool))
    try:
        assert int(ok(cu.cuDeviceGetMemPool(0))) == int(pool)
        ptr = pools.alloc(1 * MiB)
        assert pool_of(cu, ptr) == int(pool)
    finally:
        ok(cu.cuDeviceSetMemPool(0, default))
    # Destroyed with an allocation outstanding: the allocation stays usable
    # and its free completes.
    ok(cu.cuMemPoolDestroy(pool))
    ok(cu.cuMemsetD32Async(ptr, 9, 2, pools.stream))
    pools.sync()
    assert read_ints(cu, ptr, 2) == [9, 9]
    pools.free(ptr)
    pools.sync()
    inval = cu.CUresult.CUDA_ERROR_INVALID_VALUE
    assert err_of(cu.cuMemPoolDestroy(pool)) == inval
    assert err_of(cu.cuMemPoolDestroy(default)) == inval
    assert err_of(cu.cuMemAllocFromPoolAsync(4096, pool, pools.stream)) == inval


def test_destroying_the_current_pool_restores_the_default(cu: ModuleType, ctx: Any) -> None:
    default = ok(cu.cuDeviceGetDefaultMemPool(0))
    pool = ok(cu.cuMemPoolCreate(props(cu)))
    ok(cu.cuDeviceSetMemPool(0, pool))
    ok(cu.cuMemPoolDestroy(pool))
    assert int(ok(cu.cuDeviceGetMemPool(0))) == int(default)


def test_pool_access(cu: ModuleType, pools: Pools) -> None:
    pool = pools.create()
    loc = cu.CUmemLocation()
    loc.type = cu.CUmemLocationType.CU_MEM_LOCATION_TYPE_DEVICE
    loc.id = 0
    rw = cu.CUmemAccess_flags.CU_MEM_ACCESS_FLAGS_PROT_READWRITE
    assert ok(cu.cuMemPoolGetAccess(pool, loc)) == rw


def test_bad_pool_arguments(cu: ModuleType, ctx: Any) -> None:
    inval = cu.CUresult.CUDA_ERROR_INVALID_VALUE
    p = props(cu)
    p.allocType = cu.CUmemAllocationType.CU_MEM_ALLOCATION_TYPE_INVALID
    assert err_of(cu.cuMemPoolCreate(p)) == inval
    count = ok(cu.cuDeviceGetCount())
    # Properties naming no device are an invalid value; an ordinal, a wrong device.
    assert err_of(cu.cuMemPoolCreate(props(cu, count))) == inval
    assert err_of(cu.cuDeviceGetDefaultMemPool(count)) == cu.CUresult.CUDA_ERROR_INVALID_DEVICE
