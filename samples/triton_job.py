#!/usr/bin/env python3
"""Triton kernels in a loop, with Triton's cache in a folder of the job's.

The JIT workload of tests/gpu: kernels compiled by Triton at run time, their
cache in ``TRITON_CACHE_DIR`` (a persistent mount when run under cedana, so
the cache travels with the checkpoint). Each step runs a fused
scale-add-tanh kernel and a row softmax on device tensors. Halfway through,
the job starts using a second specialisation of the first kernel (another
block size), compiled then: after a restore that compile must find the
cache folder as it was and write into it.

The last lines are `cache: <n> entries` (what Triton's cache folder holds)
and `checksum: <sha256>` of the final tensors.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import torch
import triton
import triton.language as tl


@triton.jit
def scale_add_tanh(x_ptr, y_ptr, out_ptr, n, alpha, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    y = tl.load(y_ptr + offs, mask=mask)
    v = x * alpha + y
    # tanh from exp: the same instructions on every Triton version.
    e = tl.exp(2.0 * v)
    tl.store(out_ptr + offs, (e - 1.0) / (e + 1.0), mask=mask)


@triton.jit
def row_softmax(x_ptr, out_ptr, cols, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    mask = offs < cols
    x = tl.load(x_ptr + row * cols + offs, mask=mask, other=-float("inf"))
    x = x - tl.max(x, axis=0)
    e = tl.exp(x)
    tl.store(out_ptr + row * cols + offs, e / tl.sum(e, axis=0), mask=mask)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--print-every", type=int, default=10)
    ap.add_argument("--sleep-per-step", type=float, default=0.0)
    ap.add_argument("--n", type=int, default=1 << 16)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--cols", type=int, default=256)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cache = os.environ.get("TRITON_CACHE_DIR", "")
    print(f"triton cache: {cache or '(default)'}", flush=True)
    gen = torch.Generator(device="cuda").manual_seed(7)
    x = torch.rand(args.n, device="cuda", generator=gen)
    y = torch.rand(args.n, device="cuda", generator=gen)
    out = torch.empty_like(x)
    m = torch.rand(args.rows, args.cols, device="cuda", generator=gen)
    sm = torch.empty_like(m)
    block_cols = triton.next_power_of_2(args.cols)
    for step in range(1, args.steps + 1):
        block = 1024 if step <= args.steps // 2 else 256  # a second specialisation halfway
        grid = (triton.cdiv(args.n, block),)
        scale_add_tanh[grid](x, y, out, args.n, 0.5, BLOCK=block)
        x, out = out, x
        row_softmax[(args.rows,)](m, sm, args.cols, BLOCK=block_cols)
        m, sm = sm * float(args.cols) - 0.5, m
        if step % args.print_every == 0 or step == args.steps:
            print(f"step {step} mean {x.mean().item():.6f} {m.mean().item():.6f}", flush=True)
        if args.sleep_per_step:
            time.sleep(args.sleep_per_step)
    torch.cuda.synchronize()
    entries = sum(1 for p in Path(cache).rglob("*") if p.is_file()) if cache else -1
    print(f"cache: {entries} entries", flush=True)
    h = hashlib.sha256()
    for t in (x, m):
        h.update(t.cpu().numpy().tobytes())
    print(f"checksum: {h.hexdigest()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
