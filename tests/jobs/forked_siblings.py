"""Processes of one job that share its controller: a parent that never
initialised CUDA forks two children, which then see the same address space
as each other and each initialise the driver, create a context, a stream and
an event, and run work through them. Each prints its handles; the parent
prints "siblings ok" when both succeeded."""

from __future__ import annotations

import os
import sys
import traceback

from cuda.bindings import driver as cu


def ok(result: object) -> object:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if err != cu.CUresult.CUDA_SUCCESS:
        raise SystemExit(f"driver call failed: {err!r}")
    return rest[0] if len(rest) == 1 else None


def child(r: int) -> None:
    ok(cu.cuInit(0))
    dev = ok(cu.cuDeviceGet(0))
    ctx = ok(cu.cuCtxCreate(None, 0, dev))
    stream = ok(cu.cuStreamCreate(0))
    event = ok(cu.cuEventCreate(0))
    buf = ok(cu.cuMemAlloc(1 << 16))
    ok(cu.cuMemsetD8Async(buf, 1, 1 << 16, stream))
    ok(cu.cuEventRecord(event, stream))
    ok(cu.cuEventSynchronize(event))
    handles = {"ctx": ctx, "stream": stream, "event": event}
    os.write(r, (" ".join(f"{k}={int(v):#x}" for k, v in handles.items()) + "\n").encode())
    ok(cu.cuMemFree(buf))
    ok(cu.cuEventDestroy(event))
    ok(cu.cuStreamDestroy(stream))
    ok(cu.cuCtxDestroy(ctx))


def main() -> None:
    pids = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                child(sys.stdout.fileno())
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        pids.append(pid)
    codes = [os.waitpid(p, 0)[1] for p in pids]
    assert codes == [0, 0], codes
    print("siblings ok", flush=True)


if __name__ == "__main__":
    main()
