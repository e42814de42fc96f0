#!/usr/bin/env python3
"""Compute on the GPU in a loop: the driver engine's workload (and any engine's).

A state buffer of --device-mib MiB is filled on the device, then every step
rewrites all of it from its old values (samples/kernels/loop.cu, loop_step)
and prints a digest of it read back from the device: each step's output
depends on every earlier step having run exactly once, in order, on the
memory the last one left, so a run that was checkpointed and restored prints
exactly the lines of one that was not. The last line is
`checksum: <sha256>` of every step's digest.

--hold-while PATH: after each step, wait while PATH exists (a test holds the
job between steps, then lets it go; the output is the same).

--busy-at STEP --busy-rounds N: at that step, before its work, the job
prints `busy` and sits in one long kernel (N rounds of hashing on one
thread) and a synchronize: a job "stuck in a kernel", whose CUDA calls do
not return for a while (the driver engine's lock times out on it). With
--busy-while PATH it goes on queueing such kernels, eight at a time, and
synchronizing while PATH exists (a test ends it by removing PATH).

--runtime-first: before anything else, ask NVIDIA's runtime (cuda-bindings'
runtime module) for the device count, as a PyTorch job does at start, and
ignore its answer (on the fake driver it refuses; through the interposer
under ``--gpu-engine auto`` this hands the job to the driver engine).

Otherwise it uses the CUDA driver API only (cuda-bindings), so it runs on
NVIDIA's driver, on the fake driver, through the interposer and under the
driver engine alike.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time

import cudrv
import numpy as np
from cuda.bindings import driver as cu
from cudrv import ptr, u32, u64

BLOCK = 128
FILL_WORDS = 1 << 14  # words per thread of the fill
STEP_THREADS = 256  # threads of a step's sweep
DIGEST_WORDS = 1 << 16  # words per digest chunk
KERNELS = ("loop_fill", "loop_step", "loop_digest", "loop_spin")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device-mib", type=int, default=4, help="MiB of device state (>= 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sleep-per-step", type=float, default=0.0, metavar="SECONDS")
    ap.add_argument("--hold-while", metavar="PATH", help="after each step, wait while PATH exists")
    ap.add_argument("--busy-at", type=int, default=-1, metavar="STEP")
    ap.add_argument("--busy-rounds", type=int, default=1 << 32)
    ap.add_argument("--busy-while", metavar="PATH", help="stay busy while PATH exists")
    ap.add_argument("--runtime-first", action="store_true", help="touch NVIDIA's runtime first")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.device_mib < 1:
        ap.error("--steps and --device-mib must be at least 1")
    if args.sleep_per_step < 0 or args.busy_rounds < 0:
        ap.error("--sleep-per-step and --busy-rounds cannot be negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.runtime_first:
        from cuda.bindings import runtime

        runtime.cudaGetDeviceCount()  # its answer does not matter, asking does
    cudrv.init()
    fns = cudrv.functions(cudrv.load_module("loop"), KERNELS)
    stream = cudrv.stream_create()
    words = args.device_mib * (1 << 20) // 4
    state = cudrv.alloc(words * 4)
    nchunks = cudrv.blocks_for(words, DIGEST_WORDS)
    digests = cudrv.alloc(nchunks * 8)
    spin_out = cudrv.alloc(4)
    fill_threads = cudrv.blocks_for(words, FILL_WORDS)
    cudrv.launch(
        fns["loop_fill"],
        cudrv.blocks_for(fill_threads, BLOCK),
        BLOCK,
        ptr(state),
        u64(words),
        u64(FILL_WORDS),
        u32(args.seed & 0xFFFFFFFF),
        stream=stream,
    )
    host = np.empty(nchunks, dtype=np.uint64)
    total = hashlib.sha256()
    for step in range(args.steps):
        if step == args.busy_at:
            print("busy", flush=True)
            spin = fns["loop_spin"]
            while True:
                for _ in range(8 if args.busy_while else 1):
                    cudrv.launch(spin, 1, 1, ptr(spin_out), u64(args.busy_rounds), stream=stream)
                cudrv.call(cu.cuStreamSynchronize, stream)
                if not (args.busy_while and os.path.exists(args.busy_while)):
                    break
        cudrv.launch(
            fns["loop_step"],
            cudrv.blocks_for(STEP_THREADS, BLOCK),
            BLOCK,
            ptr(state),
            u64(words),
            u32(STEP_THREADS),
            u32(step),
            stream=stream,
        )
        cudrv.launch(
            fns["loop_digest"],
            cudrv.blocks_for(nchunks, BLOCK),
            BLOCK,
            ptr(state),
            u64(words),
            u64(DIGEST_WORDS),
            ptr(digests),
            u64(nchunks),
            stream=stream,
        )
        cudrv.dtoh(host, digests, host.nbytes, stream)
        digest = hashlib.sha256(host.tobytes()).hexdigest()
        total.update(digest.encode())
        print(f"step {step} digest {digest[:16]}", flush=True)
        if args.sleep_per_step:
            time.sleep(args.sleep_per_step)
        while args.hold_while and os.path.exists(args.hold_while):
            time.sleep(0.01)
    print(f"checksum: {total.hexdigest()}", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (cudrv.CudaError, OSError, RuntimeError) as e:
        print(f"gpu_loop: {e}", file=sys.stderr)
        sys.exit(1)
