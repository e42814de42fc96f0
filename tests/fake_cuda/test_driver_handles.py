"""Handles look like the driver's: user-space pointers.

NVIDIA's driver answers pointers to its own objects, and clients rely on it:
cuda.core (and numba-cuda through it) turns a handle into a signed
pointer-sized integer, which a value with bit 63 set overflows. So every
handle is non-null, canonical user space (below 2^47), pointer-aligned, and
distinct from every other live handle."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from driver_helpers import Kernels, ok

USER_SPACE_END = 1 << 47


def _check(handles: dict[str, Any]) -> None:
    values = {name: int(h) for name, h in handles.items()}
    for name, v in values.items():
        assert 0 < v < USER_SPACE_END, f"{name} handle {v:#x} is not a user-space pointer"
        assert v % 8 == 0, f"{name} handle {v:#x} is not pointer-aligned"
        assert v not in (1, 2), name  # CU_STREAM_LEGACY, CU_STREAM_PER_THREAD
    assert len(set(values.values())) == len(values), values


def test_handles_are_user_space_pointers(
    cu: ModuleType, ctx: Any, kernels: Kernels, kernels_path: Path
) -> None:
    dev = ok(cu.cuDeviceGet(0))
    created = ok(cu.cuCtxCreate(None, 0, dev))
    try:
        stream = ok(cu.cuStreamCreate(0))
        event = ok(cu.cuEventCreate(0))
        lib = ok(cu.cuLibraryLoadFromFile(str(kernels_path).encode(), [], [], 0, [], [], 0))
        try:
            kernel = ok(cu.cuLibraryGetKernel(lib, b"noop"))
            handles = {
                "primary context": ctx,
                "created context": created,
                "stream": stream,
                "event": event,
                "module": kernels.module,
                "function": kernels.fn("noop"),
                "library": lib,
                "kernel": kernel,
            }
            _check(handles)
            # What the handle names still works when given back.
            ok(cu.cuEventRecord(event, stream))
            ok(cu.cuStreamSynchronize(stream))
            ok(cu.cuEventSynchronize(event))
        finally:
            ok(cu.cuLibraryUnload(lib))
        ok(cu.cuEventDestroy(event))
        ok(cu.cuStreamDestroy(stream))
    finally:
        ok(cu.cuCtxPopCurrent())
        ok(cu.cuCtxDestroy(created))


def test_nothing_is_minted_before_init(
    run_on_driver: Callable[..., subprocess.CompletedProcess[str]], kernels_path: Path
) -> None:
    # A library is the one handle made without a context: before cuInit the
    # driver refuses it as it refuses every other call.
    r = run_on_driver(
        f"""
        err, lib = cu.cuLibraryLoadFromFile({str(kernels_path).encode()!r}, [], [], 0, [], [], 0)
        print(int(err))
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["3"]  # CUDA_ERROR_NOT_INITIALIZED
