"""The checksum every dumped and restored byte goes through, against baselines in the same run.

Every byte of GPU state written to a checkpoint, and read back before a
restore resumes the job, is checksummed (CRC32C, ``cgc_checksum`` in the
controller's native library: SSE4.2 where the CPU has it). Its speed bounds
the dump and restore bars (DESIGN.md, "Bars": dump >= 70% of a plain write), so
it is measured here against two baselines on the same buffer in the same run:
a plain ``memmove`` of the bytes (the least any dump does to them) and zlib's
CRC32 (the checksum Python would offer instead).

    .venv/bin/python bench/checksum.py            # 256 MiB, median of 5
    .venv/bin/python bench/checksum.py --mib 64 --rounds 3

Moved here from a test that only printed these numbers: timings are never
asserted in tests.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time
import zlib
from collections.abc import Callable

from cedana_gpu.controller import native


def _median_seconds(fn: Callable[[], object], rounds: int) -> float:
    fn()  # warm: first touch of the pages is not what is measured
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256, help="buffer size in MiB (default 256)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds, median kept (default 5)")
    args = ap.parse_args(argv)
    n = args.mib << 20
    src = (ctypes.c_char * n)()
    dst = (ctypes.c_char * n)()
    ctypes.memset(src, 0x5A, n)
    lib = native.load_library()  # declares cgc_checksum's types
    view = memoryview(src)
    rows = [
        ("memmove (baseline)", _median_seconds(lambda: ctypes.memmove(dst, src, n), args.rounds)),
        ("zlib.crc32 (baseline)", _median_seconds(lambda: zlib.crc32(view), args.rounds)),
        ("cgc_checksum", _median_seconds(lambda: lib.cgc_checksum(src, n, 0), args.rounds)),
    ]
    base = rows[0][1]
    hw = bool(lib.cgc_checksum_hardware())
    print(f"{args.mib} MiB, median of {args.rounds}; hardware CRC32C: {hw}")
    print(f"{'what':24} {'GB/s':>8} {'x memmove time':>15}")
    for name, secs in rows:
        print(f"{name:24} {n / secs / 1e9:8.1f} {secs / base:15.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
