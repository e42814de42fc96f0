#!/usr/bin/env python3
"""The fake driver's PTX interpreter against host modules, on the same kernels.

bench/kernels/ptx_bench.cu is built twice: to PTX with NVRTC (what a real
compiler emits, run by the interpreter in gpu/fake/ptx/) and to a host module
with tools/gen_module.py (the host C++ compiler's code). Both run on the fake
driver in one child process; each kernel is timed (median of --rounds
launches) and the interpreter's executed instructions are counted
(FAKE_CUDA_PTX_STATS=1), which gives PTX thread-instructions per second for
both: the host module runs the same program, so its rate is the same count
over its own time. Prints a table (or --json) with the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "bench" / "kernels" / "ptx_bench.cu"
STATS = re.compile(r"ptx stats: (\w+) warp_instructions=(\d+) thread_instructions=(\d+)")


class BenchError(RuntimeError):
    pass


def build_ptx(out: Path) -> Path:
    from cuda.bindings import nvrtc

    err, prog = nvrtc.nvrtcCreateProgram(SOURCE.read_bytes(), b"ptx_bench.cu", 0, [], [])
    opts = [b"-arch=compute_90"]
    (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise BenchError(f"NVRTC: {err}")
    _, size = nvrtc.nvrtcGetPTXSize(prog)
    ptx = b" " * size
    nvrtc.nvrtcGetPTX(prog, ptx)
    nvrtc.nvrtcDestroyProgram(prog)
    path = out / "ptx_bench.ptx"
    path.write_bytes(ptx.rstrip(b"\x00"))
    return path


def build_host_module(out: Path) -> Path:
    so = out / "ptx_bench.fake.so"
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_module.py"), str(SOURCE),
         "-o", str(out / "ptx_bench.fake.cpp"), "--compile-to", str(so),
         "--include-dir", str(ROOT / "gpu" / "fake" / "include")],
        check=True,
    )  # fmt: skip
    return so


def fake_libdir() -> str:
    out = subprocess.run(
        [sys.executable, "-m", "cedana_gpu", "gpu", "libdir", "--driver", "fake"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise BenchError(f"cedana gpu libdir --driver fake failed: {out.stderr.strip()}")
    return out.stdout.strip()


# ---- the child: runs on the fake driver ------------------------------------------------


def child(images: list[str], rounds: int, threads: int, iters: int, n: int) -> None:
    import ctypes

    import numpy as np
    from cuda.bindings import driver as cu

    def ok(r: Any) -> Any:
        err, *rest = r
        if err != cu.CUresult.CUDA_SUCCESS:
            raise BenchError(f"driver call failed: {err!r}")
        return rest[0] if len(rest) == 1 else None

    ok(cu.cuInit(0))
    ctx = ok(cu.cuDevicePrimaryCtxRetain(ok(cu.cuDeviceGet(0))))
    ok(cu.cuCtxSetCurrent(ctx))
    out = int(ok(cu.cuMemAlloc(threads * 4)))
    a, b, c = (int(ok(cu.cuMemAlloc(n * 4))) for _ in range(3))
    host = np.arange(n, dtype=np.float32)
    for p in (a, b):
        ok(cu.cuMemcpyHtoD(p, host.ctypes.data, host.nbytes))
    for image in images:
        mod = ok(cu.cuModuleLoad(image.encode()))
        cases = {
            "fma_chain": ((threads // 256, 1, 1), [ctypes.c_uint64(out), ctypes.c_int(iters)]),
            "triad": (
                ((n + 255) // 256, 1, 1),
                [ctypes.c_uint64(a), ctypes.c_uint64(b), ctypes.c_uint64(c),
                 ctypes.c_float(0.5), ctypes.c_int(n)],
            ),
        }  # fmt: skip
        for name, (grid, args) in cases.items():
            fn = ok(cu.cuModuleGetFunction(mod, name.encode()))
            arr = (ctypes.c_void_p * len(args))(*(ctypes.addressof(x) for x in args))
            times = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                ok(cu.cuLaunchKernel(fn, *grid, 256, 1, 1, 0, 0, ctypes.addressof(arr), 0))
                ok(cu.cuCtxSynchronize())
                times.append(time.perf_counter() - t0)
            times.sort()
            kind = "ptx" if image.endswith(".ptx") else "host"
            print(json.dumps({"kind": kind, "kernel": name, "seconds": times[len(times) // 2]}))
            sys.stdout.flush()
        ok(cu.cuModuleUnload(mod))


# ---- the parent -------------------------------------------------------------------------


def run(rounds: int, threads: int, iters: int, n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ptx-bench-") as tmp:
        out = Path(tmp)
        images = [str(build_ptx(out)), str(build_host_module(out))]
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            filter(None, [fake_libdir(), env.get("LD_LIBRARY_PATH")])
        )
        env["FAKE_CUDA_PTX_STATS"] = "1"
        argv = [sys.executable, __file__, "--child", *images]
        argv += [
            "--rounds",
            str(rounds),
            "--threads",
            str(threads),
            "--iters",
            str(iters),
            "--n",
            str(n),
        ]
        r = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise BenchError(f"benchmark child failed:\n{r.stderr}")
    times: dict[tuple[str, str], float] = {}
    for line in r.stdout.splitlines():
        doc = json.loads(line)
        times[(doc["kind"], doc["kernel"])] = doc["seconds"]
    counts: dict[str, int] = {}
    for m in STATS.finditer(r.stderr):
        counts[m.group(1)] = int(m.group(3))  # every launch executes the same count
    rows = []
    for kernel in ("fma_chain", "triad"):
        ins = counts[kernel]
        ptx_t, host_t = times[("ptx", kernel)], times[("host", kernel)]
        rows.append(
            {
                "kernel": kernel,
                "bound": "compute" if kernel == "fma_chain" else "memory",
                "thread_instructions": ins,
                "ptx_seconds": ptx_t,
                "host_seconds": host_t,
                "ptx_ips": ins / ptx_t,
                "host_ips": ins / host_t,
                "host_over_ptx": ptx_t / host_t,
            }
        )
    return {"rounds": rounds, "threads": threads, "iters": iters, "n": n, "rows": rows}


def table(res: dict[str, Any]) -> str:
    lines = [
        f"{'kernel':<10} {'bound':<8} {'PTX instr':>12} {'PTX s':>9} {'host s':>9} "
        f"{'PTX instr/s':>12} {'host instr/s':>13} {'host/PTX':>9}"
    ]
    for r in res["rows"]:
        lines.append(
            f"{r['kernel']:<10} {r['bound']:<8} {r['thread_instructions']:>12} "
            f"{r['ptx_seconds']:>9.4f} {r['host_seconds']:>9.4f} {r['ptx_ips']:>12.3g} "
            f"{r['host_ips']:>13.3g} {r['host_over_ptx']:>8.1f}x"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=8192, help="threads of fma_chain")
    ap.add_argument("--iters", type=int, default=256, help="loop iterations of fma_chain")
    ap.add_argument("--n", type=int, default=1 << 20, help="elements of triad")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.rounds, args.threads, args.iters, args.n)
        return 0
    try:
        res = run(args.rounds, args.threads, args.iters, args.n)
    except BenchError as e:
        print(f"ptx.py: {e}", file=sys.stderr)
        return 1
    print(json.dumps(res, indent=2) if args.json else table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
