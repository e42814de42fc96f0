"""Fixtures of the driver conformance tests.

The tests hold the driver to what NVIDIA's driver does: the same results,
the same error codes, the same asynchrony. They reach it only through the
fixtures of tests/conftest.py (``cu``, ``ctx``, ``run_on_driver``), so the
same tests run on every driver path.

Every test owns what it creates (memory, streams, events, modules) and frees
it, so tests can run in parallel workers and in any order.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import native_build
import pytest
from driver_helpers import KERNELS, Gate, HostWord, Kernels, ok
from ptx_build import kernel_ptx


@pytest.fixture(scope="session")
def kernels_path(driver_path: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The conformance kernels as the driver under test takes them: the fake
    driver's module on the fake-backed paths, PTX on NVIDIA's driver, and on
    the fake driver too with CEDANA_TEST_KERNELS=ptx (its PTX interpreter
    then runs the whole suite). Test files, not in the wheel:
    tests/native_build.py finds them; PTX is nvcc's where the build had nvcc,
    else NVRTC's (ptx_build.py).

    driver_path: tests/conftest.py's DriverPath of this run."""
    if not driver_path.real_gpu and os.environ.get("CEDANA_TEST_KERNELS", "host") != "ptx":
        return native_build.kernels(f"{KERNELS}.fake.so")
    ptx = native_build.kernels_if_built(f"{KERNELS}.ptx")
    if ptx is None:
        ptx = tmp_path_factory.mktemp("ptx") / f"{KERNELS}.ptx"
        ptx.write_bytes(kernel_ptx(KERNELS).rstrip(b"\x00"))
    return ptx


@pytest.fixture
def kernels(cu: ModuleType, ctx: Any, kernels_path: Path) -> Iterator[Kernels]:
    module = ok(cu.cuModuleLoad(str(kernels_path).encode()))
    yield Kernels(cu, module)
    ok(cu.cuCtxSynchronize())
    ok(cu.cuModuleUnload(module))


@pytest.fixture
def dmem(cu: ModuleType, ctx: Any) -> Iterator[Callable[[int], int]]:
    """Allocate device memory (freed after the test): dmem(size) -> address."""
    owned: list[int] = []

    def alloc(size: int) -> int:
        ptr = int(ok(cu.cuMemAlloc(size)))
        owned.append(ptr)
        return ptr

    yield alloc
    ok(cu.cuCtxSynchronize())
    for ptr in owned:
        ok(cu.cuMemFree(ptr))


@pytest.fixture
def hostword(cu: ModuleType, ctx: Any) -> Iterator[Callable[[], HostWord]]:
    """Pinned host ints (freed after the test): hostword() -> HostWord."""
    owned: list[HostWord] = []

    def make() -> HostWord:
        w = HostWord(cu)
        owned.append(w)
        return w

    yield make
    ok(cu.cuCtxSynchronize())
    for w in owned:
        w.free()


@pytest.fixture
def pinned(cu: ModuleType, ctx: Any) -> Iterator[Callable[[int], int]]:
    """Pinned host memory (freed after the test): pinned(size) -> address."""
    owned: list[int] = []

    def alloc(size: int) -> int:
        ptr = int(ok(cu.cuMemAllocHost(size)))
        ctypes.memset(ptr, 0, size)
        owned.append(ptr)
        return ptr

    yield alloc
    ok(cu.cuCtxSynchronize())
    for ptr in owned:
        ok(cu.cuMemFreeHost(ptr))


@pytest.fixture
def stream(cu: ModuleType, ctx: Any) -> Iterator[Callable[..., Any]]:
    """Create streams (destroyed after the test): stream(flags=0, priority=None)."""
    owned: list[Any] = []

    def create(flags: int = 0, priority: int | None = None) -> Any:
        if priority is None:
            s = ok(cu.cuStreamCreate(flags))
        else:
            s = ok(cu.cuStreamCreateWithPriority(flags, priority))
        owned.append(s)
        return s

    yield create
    for s in owned:
        ok(cu.cuStreamSynchronize(s))
        ok(cu.cuStreamDestroy(s))


@pytest.fixture
def event(cu: ModuleType, ctx: Any) -> Iterator[Callable[[int], Any]]:
    """Create events (destroyed after the test): event(flags=0)."""
    owned: list[Any] = []

    def create(flags: int = 0) -> Any:
        e = ok(cu.cuEventCreate(flags))
        owned.append(e)
        return e

    yield create
    ok(cu.cuCtxSynchronize())
    for e in owned:
        ok(cu.cuEventDestroy(e))


@pytest.fixture
def gate(
    kernels: Kernels,
    hostword: Callable[[], HostWord],
    stream: Callable[..., Any],
    event: Callable[[int], Any],
    dmem: Callable[[int], int],
    pinned: Callable[[int], int],
) -> Iterator[Callable[[Any], Gate]]:
    """Hold streams until released: gate(stream) -> Gate. Every gate is
    released at the end, before the streams, events and memory of the test go
    away (it depends on their fixtures so that it is torn down first)."""
    gates: list[Gate] = []

    def make(s: Any) -> Gate:
        g = Gate(kernels, s, hostword(), hostword())
        gates.append(g)
        return g

    yield make
    for g in gates:
        g.release()
