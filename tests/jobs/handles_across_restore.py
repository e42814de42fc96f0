"""A job that holds one handle of every kind across a checkpoint.

It mints a created context, a stream, an event, a module and a function,
prints their values, waits for the file named by its argument, then uses
every one of those same values (the restored process holds them in its
memory) and prints them again with the result of a kernel run through them.
Then it starts a second process, which attaches to the same controller and
prints the handles it mints: they must differ from every handle of the first.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "samples"))

import cudrv
from cuda.bindings import driver as cu

N = 256


def child() -> None:
    ctx = cudrv.init()
    stream = cudrv.call(cu.cuStreamCreate, 0)
    event = cudrv.call(cu.cuEventCreate, 0)
    cudrv.call(cu.cuEventRecord, event, stream)
    cudrv.call(cu.cuEventSynchronize, event)
    print(f"child ctx={int(ctx):#x} stream={int(stream):#x} event={int(event):#x}", flush=True)


def main() -> None:
    if sys.argv[1] == "--child":
        child()
        return
    go = Path(sys.argv[1])
    cudrv.init()
    dev = cudrv.call(cu.cuDeviceGet, 0)
    ctx = cudrv.call(cu.cuCtxCreate, None, 0, dev)
    stream = cudrv.call(cu.cuStreamCreate, 0)
    event = cudrv.call(cu.cuEventCreate, 0)
    mod = cudrv.load_module("vector_add")
    fn = cudrv.function(mod, "vector_add")
    handles = {"ctx": ctx, "stream": stream, "event": event, "module": mod, "function": fn}
    primary = cudrv.call(cu.cuDevicePrimaryCtxRetain, dev)
    handles["primary"] = primary
    values = " ".join(f"{k}={int(v):#x}" for k, v in handles.items())
    print(f"before {values}", flush=True)
    while not go.exists():
        time.sleep(0.05)

    # The same handle values, now served by the restored controller.
    assert int(cudrv.call(cu.cuCtxGetCurrent)) == int(ctx)
    a, b, c = (cudrv.alloc(4 * N) for _ in range(3))
    host_a = (ctypes.c_float * N)(*range(N))
    host_b = (ctypes.c_float * N)(*(2.0 * i for i in range(N)))
    cudrv.htod(a, host_a, 4 * N, stream)
    cudrv.htod(b, host_b, 4 * N, stream)
    cudrv.launch(fn, 1, N, cudrv.ptr(a), cudrv.ptr(b), cudrv.ptr(c), cudrv.i32(N), stream=stream)
    cudrv.call(cu.cuEventRecord, event, stream)
    cudrv.call(cu.cuEventSynchronize, event)
    out = (ctypes.c_float * N)()
    cudrv.dtoh(out, c, 4 * N, stream)
    assert list(out) == [3.0 * i for i in range(N)], list(out)[:8]
    for p in (a, b, c):
        cudrv.free(p)
    cudrv.call(cu.cuEventDestroy, event)
    cudrv.call(cu.cuStreamDestroy, stream)
    cudrv.call(cu.cuModuleUnload, mod)
    cudrv.call(cu.cuCtxDestroy, ctx)
    print(f"after {values} ok", flush=True)
    subprocess.run([sys.executable, __file__, "--child"], check=True)


if __name__ == "__main__":
    main()
