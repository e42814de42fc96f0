#!/usr/bin/env python3
"""Streams, pinned memory and events.

The input is cut into chunks dealt round-robin to several streams; each chunk
goes host-to-device asynchronously from pinned memory, through a kernel and
back. A separate combining stream waits on each chunk's event
(cuStreamWaitEvent) and adds the chunks up in order. Timing events measure
each stream. The host checks every result, then prints the timings,
`result: ok` and `checksum: <sha256>` of the results (the timings vary from
run to run; the checksum does not).
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import sys

import cudrv
import numpy as np
from cuda.bindings import driver as cu
from cudrv import f32, i32, ptr

BLOCK = 256
F32 = 4


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunks", type=int, default=12)
    ap.add_argument("--size", type=int, default=1 << 16, help="floats per chunk")
    ap.add_argument("--streams", type=int, default=3)
    args = ap.parse_args(argv)
    if args.chunks < 1 or args.size < 1 or args.streams < 1:
        ap.error("--chunks, --size and --streams must be at least 1")
    return args


def pinned_array(addr: int, count: int) -> np.ndarray:
    """A numpy view of pinned host memory."""
    return np.ctypeslib.as_array((ctypes.c_float * count).from_address(addr))


def chunk_factors(c: int) -> tuple[float, float]:
    return 1.0 + c / 8.0, c / 4.0 - 1.0  # exact in float


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cudrv.init()
    mod = cudrv.load_module("streams")
    scale_shift = cudrv.function(mod, "scale_shift")
    accumulate = cudrv.function(mod, "accumulate")

    chunk_bytes = args.size * F32
    total_bytes = args.chunks * chunk_bytes
    # Pinned host memory, both ways of asking for it.
    h_in_addr = int(cudrv.call(cu.cuMemAllocHost, total_bytes))
    h_out_addr = int(cudrv.call(cu.cuMemHostAlloc, total_bytes, cu.CU_MEMHOSTALLOC_PORTABLE))
    h_total_addr = int(cudrv.call(cu.cuMemHostAlloc, chunk_bytes, 0))
    h_in = pinned_array(h_in_addr, args.chunks * args.size)
    h_out = pinned_array(h_out_addr, args.chunks * args.size)
    h_total = pinned_array(h_total_addr, args.size)
    h_in[:] = np.random.default_rng(args.seed).standard_normal(h_in.size, dtype=np.float32)
    h_out[:] = np.nan

    d_in = cudrv.alloc(total_bytes)
    d_out = cudrv.alloc(total_bytes)
    d_total = cudrv.alloc(chunk_bytes)

    streams = [cudrv.stream_create() for _ in range(args.streams)]
    combine = cudrv.stream_create()
    timing = cu.CUevent_flags.CU_EVENT_DEFAULT
    starts = [cudrv.call(cu.cuEventCreate, timing) for _ in range(args.streams + 1)]
    stops = [cudrv.call(cu.cuEventCreate, timing) for _ in range(args.streams + 1)]
    done = [
        cudrv.call(cu.cuEventCreate, cu.CUevent_flags.CU_EVENT_DISABLE_TIMING)
        for _ in range(args.chunks)
    ]

    for s, st in enumerate(streams):
        cudrv.call(cu.cuEventRecord, starts[s], st)
    cudrv.call(cu.cuEventRecord, starts[-1], combine)
    cudrv.call(cu.cuMemsetD32Async, d_total, 0, args.size, combine)

    grid = cudrv.blocks_for(args.size, BLOCK)
    for c in range(args.chunks):
        st = streams[c % args.streams]
        off = c * chunk_bytes
        a, b = chunk_factors(c)
        cudrv.call(cu.cuMemcpyHtoDAsync, d_in + off, h_in_addr + off, chunk_bytes, st)
        cudrv.launch(
            scale_shift,
            grid,
            BLOCK,
            ptr(d_in + off),
            ptr(d_out + off),
            f32(a),
            f32(b),
            i32(args.size),
            stream=st,
        )
        cudrv.call(cu.cuEventRecord, done[c], st)
        cudrv.call(cu.cuMemcpyDtoHAsync, h_out_addr + off, d_out + off, chunk_bytes, st)
    # The combining stream adds chunk c once chunk c's stream has produced it.
    for c in range(args.chunks):
        cudrv.call(cu.cuStreamWaitEvent, combine, done[c], 0)
        cudrv.launch(
            accumulate,
            grid,
            BLOCK,
            ptr(d_total),
            ptr(d_out + c * chunk_bytes),
            i32(args.size),
            stream=combine,
        )
    cudrv.call(cu.cuMemcpyDtoHAsync, h_total_addr, d_total, chunk_bytes, combine)

    for s, st in enumerate(streams):
        cudrv.call(cu.cuEventRecord, stops[s], st)
    cudrv.call(cu.cuEventRecord, stops[-1], combine)
    for ev in stops:
        cudrv.call(cu.cuEventSynchronize, ev)
    times = [
        float(cudrv.call(cu.cuEventElapsedTime, starts[i], stops[i])) for i in range(len(stops))
    ]

    # Check on the host.
    want_total = np.zeros(args.size, dtype=np.float32)
    for c in range(args.chunks):
        a, b = chunk_factors(c)
        part = slice(c * args.size, (c + 1) * args.size)
        want = h_in[part].astype(np.float64) * a + b
        if not np.allclose(h_out[part], want, rtol=1e-6, atol=1e-6):
            bad = int(np.argmax(~np.isclose(h_out[part], want, rtol=1e-6, atol=1e-6)))
            got = h_out[part][bad]
            print(
                f"streams_events: chunk {c} element {bad}: got {got}, expected {want[bad]}",
                file=sys.stderr,
            )
            return 1
        want_total += h_out[part]
    if not np.allclose(h_total, want_total, rtol=1e-5, atol=1e-5):
        print("streams_events: the combined sum differs from the host's", file=sys.stderr)
        return 1

    checksum = hashlib.sha256(h_out.tobytes() + h_total.tobytes()).hexdigest()
    for s in range(args.streams):
        n = len(range(s, args.chunks, args.streams))
        print(f"stream {s}: {n} chunks in {times[s]:.3f} ms")
    print(f"combine: {args.chunks} chunks in {times[-1]:.3f} ms")

    for ev in starts + stops + done:
        cudrv.call(cu.cuEventDestroy, ev)
    for st in [*streams, combine]:
        cudrv.call(cu.cuStreamDestroy, st)
    for d in (d_in, d_out, d_total):
        cudrv.free(d)
    del h_in, h_out, h_total  # views of the pinned memory freed here
    for addr in (h_in_addr, h_out_addr, h_total_addr):
        cudrv.call(cu.cuMemFreeHost, addr)
    print("result: ok")
    print(f"checksum: {checksum}", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (cudrv.CudaError, OSError, RuntimeError) as e:
        print(f"streams_events: {e}", file=sys.stderr)
        sys.exit(1)
