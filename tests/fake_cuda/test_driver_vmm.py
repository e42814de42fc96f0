"""Virtual memory management: address reservation (honouring a free fixed
address), physical allocations, mapping, access, release, granularity."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from driver_helpers import UNDEFINED_ON_NVIDIA, Kernels, err_of, ok, read_ints

# Through the interposer the calls are forwarded: the controller takes the
# job's reservations from its own device address range and maps the job's
# physical memory at the addresses the job asked for (gpu/controller/vmm.c),
# so the same tests hold on every path.


def _prop(cu: ModuleType) -> Any:
    prop = cu.CUmemAllocationProp()
    prop.type = cu.CUmemAllocationType.CU_MEM_ALLOCATION_TYPE_PINNED
    prop.location.type = cu.CUmemLocationType.CU_MEM_LOCATION_TYPE_DEVICE
    prop.location.id = 0
    return prop


def _rw(cu: ModuleType) -> Any:
    desc = cu.CUmemAccessDesc()
    desc.location.type = cu.CUmemLocationType.CU_MEM_LOCATION_TYPE_DEVICE
    desc.location.id = 0
    desc.flags = cu.CUmemAccess_flags.CU_MEM_ACCESS_FLAGS_PROT_READWRITE
    return desc


@pytest.fixture
def gran(cu: ModuleType, ctx: Any) -> int:
    return int(
        ok(
            cu.cuMemGetAllocationGranularity(
                _prop(cu), cu.CUmemAllocationGranularity_flags.CU_MEM_ALLOC_GRANULARITY_MINIMUM
            )
        )
    )


class Vmm:
    """Reservations and physical allocations of one test, undone at the end."""

    def __init__(self, cu: ModuleType) -> None:
        self.cu = cu
        self.reserved: list[tuple[int, int]] = []
        self.handles: list[Any] = []
        self.mapped: list[tuple[int, int]] = []

    def reserve(self, size: int, addr: int = 0, alignment: int = 0) -> int:
        ptr = int(ok(self.cu.cuMemAddressReserve(size, alignment, addr, 0)))
        self.reserved.append((ptr, size))
        return ptr

    def free_reservation(self, ptr: int) -> None:
        size = next(s for p, s in self.reserved if p == ptr)
        ok(self.cu.cuMemAddressFree(ptr, size))
        self.reserved.remove((ptr, size))

    def create(self, size: int) -> Any:
        h = ok(self.cu.cuMemCreate(size, _prop(self.cu), 0))
        self.handles.append(h)
        return h

    def release(self, h: Any) -> None:
        ok(self.cu.cuMemRelease(h))
        self.handles.remove(h)

    def map(self, ptr: int, size: int, h: Any, access: bool = True) -> None:
        ok(self.cu.cuMemMap(ptr, size, 0, h, 0))
        self.mapped.append((ptr, size))
        if access:
            ok(self.cu.cuMemSetAccess(ptr, size, [_rw(self.cu)], 1))

    def unmap(self, ptr: int, size: int) -> None:
        ok(self.cu.cuMemUnmap(ptr, size))
        self.mapped.remove((ptr, size))

    def close(self) -> None:
        ok(self.cu.cuCtxSynchronize())
        for ptr, size in list(self.mapped):
            self.unmap(ptr, size)
        for h in list(self.handles):
            self.release(h)
        for ptr, _ in list(self.reserved):
            self.free_reservation(ptr)


@pytest.fixture
def vmm(cu: ModuleType, ctx: Any) -> Iterator[Vmm]:
    v = Vmm(cu)
    yield v
    v.close()


def test_granularity(cu: ModuleType, ctx: Any, gran: int) -> None:
    assert gran > 0 and gran & (gran - 1) == 0
    rec = int(
        ok(
            cu.cuMemGetAllocationGranularity(
                _prop(cu),
                cu.CUmemAllocationGranularity_flags.CU_MEM_ALLOC_GRANULARITY_RECOMMENDED,
            )
        )
    )
    assert rec >= gran and rec % gran == 0


def test_map_two_allocations_back_to_back(cu: ModuleType, vmm: Vmm, gran: int) -> None:
    base = vmm.reserve(2 * gran)
    first, second = vmm.create(gran), vmm.create(gran)
    vmm.map(base, gran, first)
    vmm.map(base + gran, gran, second)
    # One copy and one memset across the seam between the two allocations.
    n = 4096
    data = os.urandom(n)
    buf = ctypes.create_string_buffer(data, n)
    ok(cu.cuMemcpyHtoD(base + gran - n // 2, ctypes.addressof(buf), n))
    ok(cu.cuMemsetD32(base + gran - 8, 0x7F7F7F7F, 4))
    out = ctypes.create_string_buffer(n)
    ok(cu.cuMemcpyDtoH(ctypes.addressof(out), base + gran - n // 2, n))
    half = n // 2
    assert out.raw == data[: half - 8] + b"\x7f" * 16 + data[half + 8 :]
    attr = cu.CUpointer_attribute.CU_POINTER_ATTRIBUTE_MEMORY_TYPE
    assert ok(cu.cuPointerGetAttribute(attr, base + gran)) == int(
        cu.CUmemorytype.CU_MEMORYTYPE_DEVICE
    )
    loc = cu.CUmemLocation()
    loc.type = cu.CUmemLocationType.CU_MEM_LOCATION_TYPE_DEVICE
    loc.id = 0
    assert ok(cu.cuMemGetAccess(loc, base)) == int(
        cu.CUmemAccess_flags.CU_MEM_ACCESS_FLAGS_PROT_READWRITE
    )


def test_reserve_honours_a_freed_range_asked_for_by_its_base(vmm: Vmm, gran: int) -> None:
    # What a restore into a warm controller does when the standby's range is
    # not the checkpoint's: give a range back and ask for one by its address.
    probe = vmm.reserve(64 * gran)
    vmm.free_reservation(probe)
    assert vmm.reserve(64 * gran, addr=probe) == probe


@pytest.mark.only_paths(
    "fake", "interposer", reason="NVIDIA's driver (580) gave another range for a free part of one"
)
def test_reserve_honours_a_free_fixed_address(vmm: Vmm, gran: int) -> None:
    # Find a free range, give it back, and ask for a part of it by address.
    probe = vmm.reserve(64 * gran)
    vmm.free_reservation(probe)
    want = probe + 16 * gran
    assert vmm.reserve(8 * gran, addr=want) == want


def test_reserve_at_a_taken_address_gives_another(vmm: Vmm, gran: int) -> None:
    taken = vmm.reserve(4 * gran)
    other = vmm.reserve(4 * gran, addr=taken)
    # The address is a hint: the driver picks another range, never an overlap.
    assert other != taken
    assert other + 4 * gran <= taken or taken + 4 * gran <= other


def test_reserve_alignment(vmm: Vmm, gran: int) -> None:
    align = 16 * gran
    assert vmm.reserve(gran, alignment=align) % align == 0


def test_sizes_must_be_granular(cu: ModuleType, vmm: Vmm, gran: int) -> None:
    inval = cu.CUresult.CUDA_ERROR_INVALID_VALUE
    assert err_of(cu.cuMemCreate(gran + 1, _prop(cu), 0)) == inval
    assert err_of(cu.cuMemAddressReserve(gran + 1, 0, 0, 0)) == inval
    base = vmm.reserve(2 * gran)
    h = vmm.create(gran)
    assert err_of(cu.cuMemMap(base + 1, gran, 0, h, 0)) == inval
    # Part of a granule is not supported, rather than invalid (NVIDIA's driver 580).
    assert err_of(cu.cuMemMap(base, gran // 2, 0, h, 0)) == cu.CUresult.CUDA_ERROR_NOT_SUPPORTED


def test_map_outside_a_reservation(cu: ModuleType, vmm: Vmm, gran: int) -> None:
    gone = vmm.reserve(gran)
    vmm.free_reservation(gone)
    h = vmm.create(gran)
    assert err_of(cu.cuMemMap(gone, gran, 0, h, 0)) == cu.CUresult.CUDA_ERROR_INVALID_VALUE


def test_release_while_mapped_keeps_the_mapping(cu: ModuleType, vmm: Vmm, gran: int) -> None:
    base = vmm.reserve(gran)
    h = vmm.create(gran)
    vmm.map(base, gran, h)
    ok(cu.cuMemsetD32(base, 5, 16))
    # The physical memory lives on until its last mapping goes.
    vmm.release(h)
    ok(cu.cuMemsetD32(base + 64, 6, 16))
    assert read_ints(cu, base, 32) == [5] * 16 + [6] * 16
    vmm.unmap(base, gran)


def test_unmapped_range_is_not_memory(cu: ModuleType, vmm: Vmm, gran: int) -> None:
    # Refused up front, the context unharmed (NVIDIA's driver 580 too).
    base = vmm.reserve(gran)
    h = vmm.create(gran)
    vmm.map(base, gran, h)
    vmm.unmap(base, gran)
    buf = ctypes.create_string_buffer(16)
    assert (
        err_of(cu.cuMemcpyDtoH(ctypes.addressof(buf), base, 16))
        == cu.CUresult.CUDA_ERROR_INVALID_VALUE
    )
    # The same physical memory can be mapped again, and keeps its contents.
    ok(cu.cuMemMap(base, gran, 0, h, 0))
    vmm.mapped.append((base, gran))
    ok(cu.cuMemSetAccess(base, gran, [_rw(cu)], 1))
    ok(cu.cuMemsetD8(base, 1, 16))


def test_physical_memory_is_accounted(cu: ModuleType, vmm: Vmm, gran: int) -> None:
    free0, total = ok(cu.cuMemGetInfo())
    h = vmm.create(4 * gran)
    free1, _ = ok(cu.cuMemGetInfo())
    assert free1 <= free0 - 4 * gran
    vmm.release(h)
    assert ok(cu.cuMemGetInfo())[0] == free0
    too_big = (total // gran + 1) * gran
    assert err_of(cu.cuMemCreate(too_big, _prop(cu), 0)) == cu.CUresult.CUDA_ERROR_OUT_OF_MEMORY


def test_kernel_writes_mapped_memory(cu: ModuleType, vmm: Vmm, gran: int, kernels: Kernels) -> None:
    base = vmm.reserve(gran)
    vmm.map(base, gran, vmm.create(gran))
    target = base + gran - 4
    assert kernels.launch("write_value", ctypes.c_uint64(target), ctypes.c_int(99)) == (
        cu.CUresult.CUDA_SUCCESS
    )
    ok(cu.cuCtxSynchronize())
    assert read_ints(cu, target, 1) == [99]


@UNDEFINED_ON_NVIDIA
def test_vmm_calls_on_unknown_handles(cu: ModuleType, vmm: Vmm, gran: int) -> None:
    base = vmm.reserve(gran)
    h = vmm.create(gran)
    vmm.release(h)
    # A released handle cannot be mapped or released again.
    assert err_of(cu.cuMemMap(base, gran, 0, h, 0)) == cu.CUresult.CUDA_ERROR_INVALID_VALUE
    assert err_of(cu.cuMemRelease(h)) == cu.CUresult.CUDA_ERROR_INVALID_VALUE
