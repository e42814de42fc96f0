"""Streams and events, and above all their asynchrony.

Work on a stream runs later, in order, on its own: most tests hold a stream
with a kernel that waits for the host (``gate``) and check what did and did
not run meanwhile. A driver that ran work at submission would fail them
(the held kernel would give up waiting and report it), and so would a driver
whose streams waited for each other when they must not. No test depends on
how long anything takes, except that a kernel told to spin for N ms makes
event timings at least N ms.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

from driver_helpers import UNDEFINED_ON_NVIDIA, Gate, HostWord, Kernels, err_of, ok, read_ints

MakeGate = Callable[[Any], Gate]
MakeStream = Callable[..., Any]
MakeEvent = Callable[..., Any]
MakeWord = Callable[[], HostWord]
Alloc = Callable[[int], int]

CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def _host_fn(cu: ModuleType, cb: Any) -> Any:
    return cu.CUhostFn(ctypes.cast(cb, ctypes.c_void_p).value)


def _not_ready(cu: ModuleType, result: tuple[Any, ...]) -> bool:
    return err_of(result) == cu.CUresult.CUDA_ERROR_NOT_READY


def _spin(kernels: Kernels, ms: int, stream: Any, done: int = 0) -> None:
    err = kernels.launch("spin_ms", ctypes.c_uint(ms), ctypes.c_uint64(done), stream=stream)
    assert int(err) == 0, err


def test_launch_returns_before_the_kernel_runs(
    cu: ModuleType, stream: MakeStream, gate: MakeGate
) -> None:
    s = stream()
    g = gate(s)
    assert _not_ready(cu, cu.cuStreamQuery(s))
    assert not g.finished
    g.release()
    ok(cu.cuStreamSynchronize(s))
    assert g.passed
    ok(cu.cuStreamQuery(s))


def test_work_on_a_stream_runs_in_order(
    cu: ModuleType,
    kernels: Kernels,
    stream: MakeStream,
    gate: MakeGate,
    dmem: Alloc,
    hostword: MakeWord,
) -> None:
    s = stream()
    n = 64
    a, b = dmem(4 * n), dmem(4 * n)
    out = hostword()
    out.set(-1)
    g = gate(s)
    ok(cu.cuMemsetD32Async(a, 1, n, s))
    assert (
        kernels.launch(
            "add_one",
            ctypes.c_uint64(a),
            ctypes.c_uint64(b),
            ctypes.c_int(n),
            grid=(2, 1, 1),
            block=(32, 1, 1),
            stream=s,
        )
        == cu.CUresult.CUDA_SUCCESS
    )
    ok(cu.cuMemcpyDtoHAsync(out.address, b + 4 * (n - 1), 4, s))
    assert _not_ready(cu, cu.cuStreamQuery(s))
    assert out.value == -1, "work behind the held kernel already ran"
    g.release()
    ok(cu.cuStreamSynchronize(s))
    assert g.passed
    assert out.value == 2
    assert read_ints(cu, b, n) == [2] * n


def test_kernel_arguments_are_copied_at_launch(
    cu: ModuleType, kernels: Kernels, stream: MakeStream, gate: MakeGate, dmem: Alloc
) -> None:
    s = stream()
    d = dmem(4)
    g = gate(s)
    ptr, value = ctypes.c_uint64(d), ctypes.c_int(5)
    assert kernels.launch("write_value", ptr, value, stream=s) == cu.CUresult.CUDA_SUCCESS
    value.value = 6  # too late: the launch took its copy
    g.release()
    ok(cu.cuStreamSynchronize(s))
    assert read_ints(cu, d, 1) == [5]


def test_independent_streams_run_concurrently(
    cu: ModuleType, stream: MakeStream, gate: MakeGate, dmem: Alloc, hostword: MakeWord
) -> None:
    """Without a cuStreamWaitEvent, a second stream does not wait for the
    first: it reads the buffer before the first stream writes it."""
    s1 = stream(cu.CUstream_flags.CU_STREAM_NON_BLOCKING)
    s2 = stream(cu.CUstream_flags.CU_STREAM_NON_BLOCKING)
    d = dmem(4)
    ok(cu.cuMemsetD32(d, 0, 1))
    ok(cu.cuCtxSynchronize())  # a memset of device memory is asynchronous
    seen = hostword()
    seen.set(-1)
    g = gate(s1)
    ok(cu.cuMemsetD32Async(d, 1, 1, s1))
    ok(cu.cuMemcpyDtoHAsync(seen.address, d, 4, s2))
    ok(cu.cuStreamSynchronize(s2))
    assert seen.value == 0, "s2 waited for s1"
    assert _not_ready(cu, cu.cuStreamQuery(s1))
    g.release()
    ok(cu.cuStreamSynchronize(s1))
    assert read_ints(cu, d, 1) == [1]


def test_stream_wait_event_orders_streams(
    cu: ModuleType,
    stream: MakeStream,
    event: MakeEvent,
    gate: MakeGate,
    dmem: Alloc,
    hostword: MakeWord,
) -> None:
    s1 = stream(cu.CUstream_flags.CU_STREAM_NON_BLOCKING)
    s2 = stream(cu.CUstream_flags.CU_STREAM_NON_BLOCKING)
    e = event()
    d = dmem(4)
    ok(cu.cuMemsetD32(d, 0, 1))
    ok(cu.cuCtxSynchronize())  # a memset of device memory is asynchronous
    seen = hostword()
    seen.set(-1)
    g = gate(s1)
    ok(cu.cuMemsetD32Async(d, 1, 1, s1))
    ok(cu.cuEventRecord(e, s1))
    ok(cu.cuStreamWaitEvent(s2, e, 0))
    ok(cu.cuMemcpyDtoHAsync(seen.address, d, 4, s2))
    assert _not_ready(cu, cu.cuStreamQuery(s2))
    assert seen.value == -1
    g.release()
    ok(cu.cuStreamSynchronize(s2))
    assert seen.value == 1


def test_stream_wait_event_uses_the_record_at_call_time(
    cu: ModuleType, stream: MakeStream, event: MakeEvent, gate: MakeGate
) -> None:
    """A wait is for the event's latest record when cuStreamWaitEvent is
    called; recording the event again later does not move it."""
    held = stream(cu.CUstream_flags.CU_STREAM_NON_BLOCKING)
    idle = stream(cu.CUstream_flags.CU_STREAM_NON_BLOCKING)
    waiter = stream(cu.CUstream_flags.CU_STREAM_NON_BLOCKING)
    e = event()
    g = gate(held)
    ok(cu.cuEventRecord(e, held))
    ok(cu.cuStreamWaitEvent(waiter, e, 0))
    ok(cu.cuEventRecord(e, idle))
    ok(cu.cuEventSynchronize(e))  # the new record completes at once
    assert _not_ready(cu, cu.cuStreamQuery(waiter))  # still behind the old one
    g.release()
    ok(cu.cuStreamSynchronize(waiter))


def test_wait_on_an_unrecorded_event_is_a_no_op(
    cu: ModuleType, stream: MakeStream, event: MakeEvent
) -> None:
    s = stream()
    ok(cu.cuStreamWaitEvent(s, event(), 0))
    ok(cu.cuStreamSynchronize(s))


def test_legacy_stream_waits_for_blocking_streams(
    cu: ModuleType, stream: MakeStream, gate: MakeGate, dmem: Alloc
) -> None:
    blocking = stream(cu.CUstream_flags.CU_STREAM_DEFAULT)
    d = dmem(4)
    g = gate(blocking)
    for legacy in (0, cu.CU_STREAM_LEGACY):
        ok(cu.cuMemsetD32Async(d, 3, 1, legacy))
        assert _not_ready(cu, cu.cuStreamQuery(legacy))
    g.release()
    ok(cu.cuStreamSynchronize(0))
    assert g.passed


def test_blocking_streams_wait_for_the_legacy_stream(
    cu: ModuleType, stream: MakeStream, gate: MakeGate, dmem: Alloc
) -> None:
    blocking = stream(cu.CUstream_flags.CU_STREAM_DEFAULT)
    d = dmem(4)
    g = gate(0)
    ok(cu.cuMemsetD32Async(d, 3, 1, blocking))
    assert _not_ready(cu, cu.cuStreamQuery(blocking))
    g.release()
    ok(cu.cuStreamSynchronize(blocking))


def test_non_blocking_streams_ignore_the_legacy_stream(
    cu: ModuleType, stream: MakeStream, gate: MakeGate, dmem: Alloc
) -> None:
    free = stream(cu.CUstream_flags.CU_STREAM_NON_BLOCKING)
    d = dmem(4)
    ok(cu.cuMemsetD32(d, 0, 1))
    ok(cu.cuCtxSynchronize())  # a memset of device memory is asynchronous
    g = gate(0)
    ok(cu.cuMemsetD32Async(d, 4, 1, free))
    ok(cu.cuStreamSynchronize(free))
    assert _not_ready(cu, cu.cuStreamQuery(0))
    g.release()
    ok(cu.cuStreamSynchronize(0))
    assert read_ints(cu, d, 1) == [4]


def test_per_thread_stream_handle(
    cu: ModuleType, stream: MakeStream, gate: MakeGate, dmem: Alloc
) -> None:
    """CU_STREAM_PER_THREAD is an ordinary blocking stream of the calling
    thread: it waits for the legacy stream, not for other blocking streams."""
    per_thread = cu.CU_STREAM_PER_THREAD
    d = dmem(4)
    blocking = stream(cu.CUstream_flags.CU_STREAM_DEFAULT)
    g = gate(blocking)
    ok(cu.cuMemsetD32Async(d, 5, 1, per_thread))
    ok(cu.cuStreamSynchronize(per_thread))
    g.release()
    ok(cu.cuStreamSynchronize(blocking))
    g2 = gate(0)
    ok(cu.cuMemsetD32Async(d, 6, 1, per_thread))
    assert _not_ready(cu, cu.cuStreamQuery(per_thread))
    g2.release()
    ok(cu.cuStreamSynchronize(per_thread))
    assert read_ints(cu, d, 1) == [6]


def test_synchronous_calls_wait_for_earlier_work(
    cu: ModuleType, kernels: Kernels, stream: MakeStream, dmem: Alloc, hostword: MakeWord
) -> None:
    """cuStreamSynchronize, cuCtxSynchronize, cuEventSynchronize and a
    synchronous copy return only after the work before them is done."""
    s = stream(cu.CUstream_flags.CU_STREAM_DEFAULT)
    d = dmem(4)
    done = hostword()

    def queue(value: int) -> None:
        done.set(0)
        _spin(kernels, 20, s, done.address)
        ok(cu.cuMemsetD32Async(d, value, 1, s))

    queue(1)
    ok(cu.cuStreamSynchronize(s))
    assert done.value == 1
    queue(2)
    ok(cu.cuCtxSynchronize())
    assert done.value == 1
    queue(3)
    e = ok(cu.cuEventCreate(0))
    ok(cu.cuEventRecord(e, s))
    ok(cu.cuEventSynchronize(e))
    ok(cu.cuEventDestroy(e))
    assert done.value == 1
    queue(4)
    # A synchronous copy runs on the legacy stream, which waits for `s`.
    buf = ctypes.c_int(-1)
    ok(cu.cuMemcpyDtoH(ctypes.addressof(buf), d, 4))
    assert buf.value == 4


def test_async_copy_from_pageable_memory_is_staged(
    cu: ModuleType, stream: MakeStream, gate: MakeGate, dmem: Alloc
) -> None:
    """An async copy from pageable host memory takes its bytes at the call, so
    the caller may reuse the buffer at once."""
    s = stream()
    d = dmem(4)
    buf = ctypes.c_int(7)
    g = gate(s)
    ok(cu.cuMemcpyHtoDAsync(d, ctypes.addressof(buf), 4, s))
    buf.value = 8
    g.release()
    ok(cu.cuStreamSynchronize(s))
    assert read_ints(cu, d, 1) == [7]


def test_async_copy_to_pageable_memory_completes_before_returning(
    cu: ModuleType, kernels: Kernels, stream: MakeStream, dmem: Alloc
) -> None:
    s = stream()
    d = dmem(4)
    _spin(kernels, 20, s)
    ok(cu.cuMemsetD32Async(d, 9, 1, s))
    buf = ctypes.c_int(-1)
    ok(cu.cuMemcpyDtoHAsync(ctypes.addressof(buf), d, 4, s))
    assert buf.value == 9


def test_destroying_a_busy_stream_lets_its_work_finish(
    cu: ModuleType, gate: MakeGate, dmem: Alloc
) -> None:
    s = ok(cu.cuStreamCreate(0))
    d = dmem(4)
    ok(cu.cuMemsetD32(d, 0, 1))
    ok(cu.cuCtxSynchronize())  # a memset of device memory is asynchronous
    g = gate(s)
    ok(cu.cuMemsetD32Async(d, 10, 1, s))
    ok(cu.cuStreamDestroy(s))  # returns at once
    assert not g.finished
    g.release()
    ok(cu.cuCtxSynchronize())
    assert g.passed
    assert read_ints(cu, d, 1) == [10]


def test_host_function_runs_in_stream_order(
    cu: ModuleType, stream: MakeStream, gate: MakeGate, hostword: MakeWord
) -> None:
    s = stream()
    word = hostword()
    calls: list[tuple[int, int]] = []

    def record(_: Any) -> None:
        calls.append((threading.get_ident(), word.value))

    cb = CB(record)
    g = gate(s)
    ok(cu.cuMemsetD32Async(word.address, 4, 1, s))
    ok(cu.cuLaunchHostFunc(s, _host_fn(cu, cb), 0))
    ok(cu.cuMemsetD32Async(word.address, 5, 1, s))
    assert calls == []
    g.release()
    ok(cu.cuStreamSynchronize(s))
    # It saw the work before it and none of the work after it, and ran on a
    # thread of the driver's.
    assert [v for _, v in calls] == [4]
    assert calls[0][0] != threading.get_ident()
    assert word.value == 5


def test_host_function_holds_the_stream(cu: ModuleType, stream: MakeStream) -> None:
    s = stream()
    release = threading.Event()
    cb = CB(lambda _: release.wait(60) and None)
    ok(cu.cuLaunchHostFunc(s, _host_fn(cu, cb), 0))
    assert _not_ready(cu, cu.cuStreamQuery(s))
    release.set()
    ok(cu.cuStreamSynchronize(s))
    ok(cu.cuStreamQuery(s))


def test_stream_properties(cu: ModuleType, ctx: Any, stream: MakeStream) -> None:
    least, greatest = ok(cu.cuCtxGetStreamPriorityRange())
    nb = int(cu.CUstream_flags.CU_STREAM_NON_BLOCKING)
    s = stream(nb, greatest)
    assert ok(cu.cuStreamGetPriority(s)) == greatest
    assert ok(cu.cuStreamGetFlags(s)) == nb
    assert int(ok(cu.cuStreamGetCtx(s))) == int(ctx)
    # Priorities outside the range are clamped to it.
    assert ok(cu.cuStreamGetPriority(stream(0, greatest - 100))) == greatest
    assert ok(cu.cuStreamGetPriority(stream(0, least + 100))) == least
    assert ok(cu.cuStreamGetPriority(stream())) == least  # the default: lowest
    assert ok(cu.cuStreamGetId(s)) != ok(cu.cuStreamGetId(stream()))


@UNDEFINED_ON_NVIDIA
def test_destroyed_and_forged_streams(cu: ModuleType, ctx: Any, dmem: Alloc) -> None:
    bad = cu.CUresult.CUDA_ERROR_INVALID_HANDLE
    s = ok(cu.cuStreamCreate(0))
    ok(cu.cuStreamDestroy(s))
    d = dmem(4)
    forged = cu.CUstream(0x7FFF_DEAD_0000)
    for h in (s, forged):
        assert err_of(cu.cuStreamQuery(h)) == bad
        assert err_of(cu.cuStreamSynchronize(h)) == bad
        assert err_of(cu.cuMemsetD32Async(d, 0, 1, h)) == bad
        assert err_of(cu.cuStreamDestroy(h)) == bad


def test_event_query_and_synchronize(
    cu: ModuleType, stream: MakeStream, event: MakeEvent, gate: MakeGate
) -> None:
    s = stream()
    e = event()
    # An event that was never recorded counts as complete.
    ok(cu.cuEventQuery(e))
    ok(cu.cuEventSynchronize(e))
    g = gate(s)
    ok(cu.cuEventRecord(e, s))
    assert _not_ready(cu, cu.cuEventQuery(e))
    g.release()
    ok(cu.cuEventSynchronize(e))
    ok(cu.cuEventQuery(e))
    assert g.passed
    # Recording again makes it pending again.
    g2 = gate(s)
    ok(cu.cuEventRecord(e, s))
    assert _not_ready(cu, cu.cuEventQuery(e))
    g2.release()
    ok(cu.cuEventSynchronize(e))


def test_event_elapsed_time_is_real_time(
    cu: ModuleType, kernels: Kernels, stream: MakeStream, event: MakeEvent
) -> None:
    s = stream()
    start, stop = event(), event()
    ms = 20
    ok(cu.cuEventRecord(start, s))
    _spin(kernels, ms, s)
    ok(cu.cuEventRecord(stop, s))
    ok(cu.cuEventSynchronize(stop))
    elapsed = ok(cu.cuEventElapsedTime(start, stop))
    assert elapsed >= ms


def test_event_elapsed_time_errors(
    cu: ModuleType, stream: MakeStream, event: MakeEvent, gate: MakeGate
) -> None:
    s = stream()
    start, stop = event(), event()
    never = event()
    untimed = event(int(cu.CUevent_flags.CU_EVENT_DISABLE_TIMING))
    ok(cu.cuEventRecord(start, s))
    ok(cu.cuEventRecord(untimed, s))
    ok(cu.cuStreamSynchronize(s))
    bad = cu.CUresult.CUDA_ERROR_INVALID_HANDLE
    assert err_of(cu.cuEventElapsedTime(start, never)) == bad
    assert err_of(cu.cuEventElapsedTime(start, untimed)) == bad
    g = gate(s)
    ok(cu.cuEventRecord(stop, s))
    assert _not_ready(cu, cu.cuEventElapsedTime(start, stop))
    g.release()
    ok(cu.cuEventSynchronize(stop))
    assert ok(cu.cuEventElapsedTime(start, stop)) >= 0


def test_event_destroyed_while_pending(cu: ModuleType, stream: MakeStream, gate: MakeGate) -> None:
    s = stream()
    e = ok(cu.cuEventCreate(0))
    g = gate(s)
    ok(cu.cuEventRecord(e, s))
    ok(cu.cuEventDestroy(e))  # returns at once; the record completes later
    g.release()
    ok(cu.cuStreamSynchronize(s))
    assert g.passed


@UNDEFINED_ON_NVIDIA  # driver 580: CUDA_ERROR_CONTEXT_IS_DESTROYED for both
def test_destroyed_and_forged_events(cu: ModuleType, ctx: Any, stream: MakeStream) -> None:
    bad = cu.CUresult.CUDA_ERROR_INVALID_HANDLE
    s = stream()
    live = ok(cu.cuEventCreate(0))
    e = ok(cu.cuEventCreate(0))
    ok(cu.cuEventDestroy(e))
    forged = cu.CUevent(0x7FFF_BEEF_0000)
    try:
        for h in (e, forged):
            assert err_of(cu.cuEventQuery(h)) == bad
            assert err_of(cu.cuEventSynchronize(h)) == bad
            assert err_of(cu.cuEventRecord(h, s)) == bad
            assert err_of(cu.cuEventElapsedTime(live, h)) == bad
            assert err_of(cu.cuStreamWaitEvent(s, h, 0)) == bad
            assert err_of(cu.cuEventDestroy(h)) == bad
    finally:
        ok(cu.cuEventDestroy(live))
