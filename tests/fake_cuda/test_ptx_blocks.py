"""Kernels compiled to PTX by NVRTC, run by the driver: shared memory and
barriers, dynamic shared memory, atomics under contention, warp shuffles and
votes, device functions, module variables, 3D indices, local memory.

Each result is computed again with numpy; on the fake driver this checks the
PTX interpreter, on NVIDIA's driver the same PTX runs on the GPU.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from ptx_build import DeviceArrays, PtxModule, kernel_ptx, loaded


@pytest.fixture
def mod(cu: ModuleType, ctx: Any) -> Iterator[PtxModule]:
    with loaded(cu, kernel_ptx("ptx_blocks")) as m:
        yield m


@pytest.fixture
def dev(cu: ModuleType, ctx: Any) -> Iterator[DeviceArrays]:
    d = DeviceArrays(cu)
    yield d
    d.free()


def test_saxpy(mod: PtxModule, dev: DeviceArrays) -> None:
    n = 1000
    rng = np.random.default_rng(1)
    x = rng.standard_normal(n).astype(np.float32)
    y = rng.standard_normal(n).astype(np.float32)
    dx, dy = dev.put(x), dev.put(y)
    mod.launch(
        "saxpy", ctypes.c_float(2.5), dx, dy, ctypes.c_int(n), grid=(4, 1, 1), block=(256, 1, 1)
    )
    # fma.rn on the device: compute the same single rounding in float64
    want = (np.float64(2.5) * x.astype(np.float64) + y.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(dev.get(dy, n, np.float32), want)


def test_block_reduction_with_shared_memory_and_barriers(mod: PtxModule, dev: DeviceArrays) -> None:
    n = 256 * 5 - 17
    x = np.arange(n, dtype=np.float32) % 13
    dx, dout = dev.put(x), dev.empty(5, np.float32)
    mod.launch("block_sum", dx, dout, ctypes.c_int(n), grid=(5, 1, 1), block=(256, 1, 1))
    want = [x[i * 256 : (i + 1) * 256].sum() for i in range(5)]
    np.testing.assert_array_equal(dev.get(dout, 5, np.float32), np.array(want, np.float32))


def test_tiled_matrix_multiply(mod: PtxModule, dev: DeviceArrays) -> None:
    n = 40  # not a multiple of the tile: the edges take the padded path
    rng = np.random.default_rng(2)
    a = rng.integers(-4, 5, (n, n)).astype(np.float32)
    b = rng.integers(-4, 5, (n, n)).astype(np.float32)
    da, db, dc = dev.put(a), dev.put(b), dev.empty((n, n), np.float32)
    tiles = (n + 15) // 16
    mod.launch(
        "matmul_tiled", da, db, dc, ctypes.c_int(n), grid=(tiles, tiles, 1), block=(16, 16, 1)
    )
    np.testing.assert_array_equal(dev.get(dc, (n, n), np.float32), a @ b)


def test_dynamic_shared_memory(mod: PtxModule, dev: DeviceArrays) -> None:
    block, blocks = 96, 3
    x = np.arange(block * blocks, dtype=np.int32) * 3
    dx, dout = dev.put(x), dev.empty(block * blocks, np.int32)
    mod.launch(
        "reverse_dynamic", dx, dout, grid=(blocks, 1, 1), block=(block, 1, 1), shared=block * 4
    )
    want = np.concatenate([x[i * block : (i + 1) * block][::-1] for i in range(blocks)])
    np.testing.assert_array_equal(dev.get(dout, block * blocks, np.int32), want)


def test_atomics_under_contention(mod: PtxModule, dev: DeviceArrays) -> None:
    n, nbins = 10_000, 37
    x = np.random.default_rng(3).integers(0, 1 << 30, n).astype(np.uint32)
    dx, dbins = dev.put(x), dev.empty(nbins, np.uint32)
    before = _read_u32(mod, dev, "launches")
    mod.launch(
        "histogram",
        dx,
        dbins,
        ctypes.c_int(n),
        ctypes.c_int(nbins),
        grid=(7, 1, 1),
        block=(128, 1, 1),
    )
    np.testing.assert_array_equal(
        dev.get(dbins, nbins, np.uint32), np.bincount(x % nbins, minlength=nbins)
    )
    assert _read_u32(mod, dev, "launches") == before + 1


def _read_u32(mod: PtxModule, dev: DeviceArrays, name: str) -> int:
    ptr, size = mod.global_(name)
    assert size == 4
    return int(dev.get(ctypes.c_uint64(ptr), 1, np.uint32)[0])


def test_atomic_operations(mod: PtxModule, dev: DeviceArrays) -> None:
    threads = 4 * 96
    imax = dev.put(np.array([-1], np.int32))
    imin = dev.put(np.array([1000], np.int32))
    fsum = dev.put(np.array([0.0], np.float32))
    u64 = dev.put(np.array([5], np.uint64))
    cas = dev.put(np.array([0], np.uint32))
    inc = dev.put(np.array([0], np.uint32))
    mod.launch("atomics_mixed", imax, imin, fsum, u64, cas, inc, grid=(4, 1, 1), block=(96, 1, 1))
    i = np.arange(threads)
    assert dev.get(imax, 1, np.int32)[0] == (i * 7 % 1001).max()
    assert dev.get(imin, 1, np.int32)[0] == (500 - i).min()
    assert dev.get(fsum, 1, np.float32)[0] == threads * 0.5
    assert dev.get(u64, 1, np.uint64)[0] == 5 + threads * (1 << 33)
    assert dev.get(cas, 1, np.uint32)[0] == threads
    # atomicInc wraps to 0 after 9: 384 increments end at 384 % 10
    assert dev.get(inc, 1, np.uint32)[0] == threads % 10


def test_warp_shuffles_and_votes(mod: PtxModule, dev: DeviceArrays) -> None:
    warps = 4
    n = 32 * warps
    v = np.random.default_rng(4).integers(0, 100, n).astype(np.int32)
    v[32:64] = np.abs(v[32:64]) % 90  # a warp where nothing is > 90
    dv = dev.put(v)
    sums, ballots = dev.empty(warps, np.int32), dev.empty(warps, np.uint32)
    anyall, bcast = dev.empty(2 * warps, np.int32), dev.empty(warps, np.int32)
    active, scan = dev.empty(warps, np.uint32), dev.empty(n, np.int32)
    mod.launch(
        "warp_ops", dv, sums, ballots, anyall, bcast, active, scan, grid=(2, 1, 1), block=(64, 1, 1)
    )
    w = v.reshape(warps, 32)
    np.testing.assert_array_equal(dev.get(sums, warps, np.int32), w.sum(axis=1))
    bits = (w % 2 == 0).astype(np.uint64) << np.arange(32, dtype=np.uint64)
    np.testing.assert_array_equal(
        dev.get(ballots, warps, np.uint32), bits.sum(axis=1).astype(np.uint32)
    )
    aa = dev.get(anyall, 2 * warps, np.int32).reshape(warps, 2)
    np.testing.assert_array_equal(aa[:, 0] != 0, (w > 90).any(axis=1))
    np.testing.assert_array_equal(aa[:, 1] != 0, (w >= 0).all(axis=1))
    np.testing.assert_array_equal(dev.get(bcast, warps, np.int32), w[:, 3])
    np.testing.assert_array_equal(
        dev.get(active, warps, np.uint32), np.full(warps, (1 << 20) - 1, np.uint32)
    )
    np.testing.assert_array_equal(dev.get(scan, n, np.int32), np.cumsum(w, axis=1).reshape(n))


def test_device_function_call_and_module_variables(mod: PtxModule, dev: DeviceArrays) -> None:
    n = 50
    x = np.linspace(-2, 2, n).astype(np.float32)
    dx, dy = dev.put(x), dev.empty(n, np.float32)
    mod.launch("call_device_fn", dx, dy, ctypes.c_int(n), grid=(1, 1, 1), block=(64, 1, 1))
    table = np.array([1, 1, 2, 3, 5, 8, 13, 21], np.float32)
    want = np.zeros(n, np.float32)
    for i in range(n):
        r = np.float32(0)
        for c in (4.0, 3.0, 2.0, 1.0):
            r = np.float32(np.float64(r) * np.float64(x[i]) + c)  # fma: one rounding
        want[i] = r + table[i & 7]
    np.testing.assert_array_equal(dev.get(dy, n, np.float32), want)
    ptr, size = mod.global_("coeffs")
    assert size == 16
    np.testing.assert_array_equal(dev.get(ctypes.c_uint64(ptr), 4, np.float32), [1, 2, 3, 4])


def test_divergent_loops_reconverge(mod: PtxModule, dev: DeviceArrays) -> None:
    out = dev.empty(33, np.int32)
    mod.launch("diverge", out, block=(32, 1, 1))
    lane = np.arange(32)
    acc = lane * (lane - 1) // 2
    acc = np.where(lane & 1, -acc, acc * 2)
    got = dev.get(out, 33, np.int32)
    np.testing.assert_array_equal(got[:32], acc)
    assert got[32] == int(((acc > 0).astype(np.uint64) << lane.astype(np.uint64)).sum())


def test_3d_grid_and_block(mod: PtxModule, dev: DeviceArrays) -> None:
    grid, block = (3, 2, 2), (4, 3, 2)
    total = int(np.prod(grid) * np.prod(block))
    out = dev.empty(total, np.int32)
    mod.launch("indices3d", out, grid=grid, block=block)
    want = []
    for bz in range(grid[2]):
        for by in range(grid[1]):
            for bx in range(grid[0]):
                for tz in range(block[2]):
                    for ty in range(block[1]):
                        for tx in range(block[0]):
                            want.append(
                                (bz << 24) | (by << 16) | (bx << 12) | (tz << 8) | (ty << 4) | tx
                            )
    np.testing.assert_array_equal(dev.get(out, total, np.int32), want)


def test_local_memory(mod: PtxModule, dev: DeviceArrays) -> None:
    idx = np.arange(64, dtype=np.int32)[::-1].copy() * 5
    didx, out = dev.put(idx), dev.empty(64, np.int32)
    mod.launch("local_array", didx, out, block=(64, 1, 1))
    t = np.arange(64)
    np.testing.assert_array_equal(dev.get(out, 64, np.int32), (idx & 15) * t)


def test_barrier_reductions(mod: PtxModule, dev: DeviceArrays) -> None:
    blocks, threads = 3, 96
    v = np.random.default_rng(9).integers(-5, 100, blocks * threads).astype(np.int32)
    v[threads : 2 * threads] = np.abs(v[threads : 2 * threads]) % 50  # all >= 0, none > 90
    dv, out = dev.put(v), dev.empty(3 * blocks, np.int32)
    mod.launch("sync_reductions", dv, out, grid=(blocks, 1, 1), block=(threads, 1, 1))
    got = dev.get(out, 3 * blocks, np.int32).reshape(blocks, 3)
    w = v.reshape(blocks, threads)
    np.testing.assert_array_equal(got[:, 0], (w > 10).sum(axis=1))
    np.testing.assert_array_equal(got[:, 1] != 0, (w >= 0).all(axis=1))
    np.testing.assert_array_equal(got[:, 2] != 0, (w > 90).any(axis=1))


def test_threads_that_wait_for_each_other(mod: PtxModule, dev: DeviceArrays) -> None:
    v = np.arange(1, 129, dtype=np.int32)
    lock, total = dev.empty(1, np.int32), dev.empty(1, np.int32)
    mod.launch("spin_lock_sum", lock, total, dev.put(v), grid=(2, 1, 1), block=(64, 1, 1))
    assert dev.get(total, 1, np.int32)[0] == v.sum()
    out = dev.empty(1, np.int32)
    mod.launch("warp_handoff", out, block=(64, 1, 1))
    assert dev.get(out, 1, np.int32)[0] == 42
