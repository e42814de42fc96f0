"""A job that holds the newer kinds of CUDA state across a checkpoint.

Before the checkpoint it maps physical memory of its own into an address
reservation (VMM), takes a block from a memory pool it made (and frees
another, which the pool caches), writes managed memory from the CPU, fills
all of them, captures a graph of a kernel over the mapped vectors into the
pool's block and instantiates it, prints "before" and waits for the file
named by its argument.
After the restore it checks the bytes at the same addresses, runs a kernel
on the mapped memory and one on the managed memory (whose result the CPU
reads in place), checks the pool's attributes and that its cached block is
reused, launches the graph instantiated before the checkpoint, undoes
everything and prints "after ... ok".
"""

from __future__ import annotations

import ctypes
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "samples"))

import cudrv
from cuda.bindings import driver as cu

N = 1024  # floats per vector
BLOCK = 1 << 20  # bytes per pool block


def pattern(seed: int, n: int) -> ctypes.Array[ctypes.c_float]:
    return (ctypes.c_float * n)(*(float(seed * 1000 + i) for i in range(n)))


def pool_attr(pool: cu.CUmemoryPool, name: str) -> int:
    attr = getattr(cu.CUmemPool_attribute, f"CU_MEMPOOL_ATTR_{name}")
    return int(cudrv.call(cu.cuMemPoolGetAttribute, pool, attr))


def main() -> None:
    go = Path(sys.argv[1])
    cudrv.init()
    stream = cudrv.stream_create()
    mod = cudrv.load_module("vector_add")
    add = cudrv.function(mod, "vector_add")

    # VMM: two vectors in one physical allocation, mapped in a reservation.
    prop = cu.CUmemAllocationProp()
    prop.type = cu.CUmemAllocationType.CU_MEM_ALLOCATION_TYPE_PINNED
    prop.location.type = cu.CUmemLocationType.CU_MEM_LOCATION_TYPE_DEVICE
    prop.location.id = 0
    minimum = cu.CUmemAllocationGranularity_flags.CU_MEM_ALLOC_GRANULARITY_MINIMUM
    gran = int(cudrv.call(cu.cuMemGetAllocationGranularity, prop, minimum))
    base = int(cudrv.call(cu.cuMemAddressReserve, 2 * gran, 0, 0, 0))
    phys = cudrv.call(cu.cuMemCreate, gran, prop, 0)
    cudrv.call(cu.cuMemMap, base, gran, 0, phys, 0)
    access = cu.CUmemAccessDesc()
    access.location.type = cu.CUmemLocationType.CU_MEM_LOCATION_TYPE_DEVICE
    access.location.id = 0
    access.flags = cu.CUmemAccess_flags.CU_MEM_ACCESS_FLAGS_PROT_READWRITE
    cudrv.call(cu.cuMemSetAccess, base, gran, [access], 1)
    va, vb = base, base + 4 * N
    cudrv.htod(va, pattern(1, N), 4 * N, stream)
    cudrv.htod(vb, pattern(2, N), 4 * N, stream)

    # A pool that keeps what is freed: one live block, one cached.
    props = cu.CUmemPoolProps()
    props.allocType = cu.CUmemAllocationType.CU_MEM_ALLOCATION_TYPE_PINNED
    props.location.type = cu.CUmemLocationType.CU_MEM_LOCATION_TYPE_DEVICE
    props.location.id = 0
    pool = cudrv.call(cu.cuMemPoolCreate, props)
    threshold = cu.CUmemPool_attribute.CU_MEMPOOL_ATTR_RELEASE_THRESHOLD
    cudrv.call(cu.cuMemPoolSetAttribute, pool, threshold, cu.cuuint64_t((1 << 64) - 1))
    live = int(cudrv.call(cu.cuMemAllocFromPoolAsync, BLOCK, pool, stream))
    cached = int(cudrv.call(cu.cuMemAllocFromPoolAsync, BLOCK, pool, stream))
    cudrv.htod(live, pattern(3, N), 4 * N, stream)
    cudrv.call(cu.cuMemFreeAsync, cached, stream)
    cudrv.call(cu.cuStreamSynchronize, stream)
    used, reserved = pool_attr(pool, "USED_MEM_CURRENT"), pool_attr(pool, "RESERVED_MEM_CURRENT")

    # Managed memory, written by the CPU in place.
    managed = int(
        cudrv.call(cu.cuMemAllocManaged, 3 * 4 * N, cu.CUmemAttach_flags.CU_MEM_ATTACH_GLOBAL)
    )
    mview = (ctypes.c_float * (3 * N)).from_address(managed)
    mview[:N] = list(pattern(4, N))
    mview[N : 2 * N] = list(pattern(5, N))

    # A graph, captured and instantiated: vector_add(va, vb) into the live block.
    mode = cu.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_GLOBAL
    cudrv.call(cu.cuStreamBeginCapture, stream, mode)
    args = (cudrv.ptr(va), cudrv.ptr(vb), cudrv.ptr(live), cudrv.i32(N))
    cudrv.launch(add, 1, N, *args, stream=stream)
    graph = cudrv.call(cu.cuStreamEndCapture, stream)
    gexec = cudrv.call(cu.cuGraphInstantiate, graph, 0)

    print(
        f"before vmm={base:#x} pool={int(pool):#x} live={live:#x} managed={managed:#x}", flush=True
    )
    while not go.exists():
        time.sleep(0.05)

    # VMM: the bytes are where they were, and a kernel reaches them.
    out = (ctypes.c_float * N)()
    cudrv.dtoh(out, vb, 4 * N, stream)
    assert list(out) == list(pattern(2, N)), list(out)[:4]
    vc = base + 8 * N
    args = (cudrv.ptr(va), cudrv.ptr(vb), cudrv.ptr(vc), cudrv.i32(N))
    cudrv.launch(add, 1, N, *args, stream=stream)
    cudrv.dtoh(out, vc, 4 * N, stream)
    want = [a + b for a, b in zip(pattern(1, N), pattern(2, N), strict=True)]
    assert list(out) == want, list(out)[:4]

    # The pool: its block's bytes, its accounting, its cached block reused.
    cudrv.dtoh(out, live, 4 * N, stream)
    assert list(out) == list(pattern(3, N)), list(out)[:4]
    assert (pool_attr(pool, "USED_MEM_CURRENT"), pool_attr(pool, "RESERVED_MEM_CURRENT")) == (
        used,
        reserved,
    )
    again = int(cudrv.call(cu.cuMemAllocFromPoolAsync, BLOCK, pool, stream))
    assert again == cached, (hex(again), hex(cached))
    assert pool_attr(pool, "RESERVED_MEM_CURRENT") == reserved

    # Managed memory: the CPU's bytes are there; a kernel's result the CPU
    # reads in place.
    assert list(mview[:N]) == list(pattern(4, N))
    ma, mb, mc = managed, managed + 4 * N, managed + 8 * N
    args = (cudrv.ptr(ma), cudrv.ptr(mb), cudrv.ptr(mc), cudrv.i32(N))
    cudrv.launch(add, 1, N, *args, stream=stream)
    cudrv.call(cu.cuStreamSynchronize, stream)
    want = [a + b for a, b in zip(pattern(4, N), pattern(5, N), strict=True)]
    assert list(mview[2 * N :]) == want, list(mview[2 * N : 2 * N + 4])
    cudrv.call(cu.cuMemFree, managed)

    # The graph instantiated before the checkpoint runs after it.
    cudrv.call(cu.cuGraphLaunch, gexec, stream)
    cudrv.dtoh(out, live, 4 * N, stream)
    want = [a + b for a, b in zip(pattern(1, N), pattern(2, N), strict=True)]
    assert list(out) == want, list(out)[:4]
    cudrv.call(cu.cuGraphExecDestroy, gexec)
    cudrv.call(cu.cuGraphDestroy, graph)

    for p in (live, again):
        cudrv.call(cu.cuMemFreeAsync, p, stream)
    cudrv.call(cu.cuStreamSynchronize, stream)
    cudrv.call(cu.cuMemPoolDestroy, pool)
    cudrv.call(cu.cuMemUnmap, base, gran)
    cudrv.call(cu.cuMemRelease, phys)
    cudrv.call(cu.cuMemAddressFree, base, 2 * gran)
    print(
        f"after vmm={base:#x} pool={int(pool):#x} live={live:#x} managed={managed:#x} ok",
        flush=True,
    )


if __name__ == "__main__":
    main()
