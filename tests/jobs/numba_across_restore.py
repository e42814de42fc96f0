"""numba-cuda holding a context, a stream, an event and device arrays across
a checkpoint: it prints its context handle, waits for the file named by its
argument, then uses all of them (the restored process holds the same handle
values and device addresses) and prints the same handle and "numba ok"."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from numba import cuda


def main() -> None:
    go = Path(sys.argv[1])
    ctx = cuda.current_context()
    stream = cuda.stream()
    host = np.arange(1 << 14, dtype=np.float32)
    dev = cuda.to_device(host, stream=stream)
    stream.synchronize()
    print(f"before ctx={int(ctx.handle):#x}", flush=True)
    while not go.exists():
        time.sleep(0.05)
    event = cuda.event()
    back = dev.copy_to_host(stream=stream)
    event.record(stream)
    event.synchronize()
    assert (back == host).all()
    again = cuda.to_device(back * 2, stream=stream)
    assert (again.copy_to_host(stream=stream) == host * 2).all()
    print(f"after ctx={int(cuda.current_context().handle):#x}", flush=True)
    print("numba ok", flush=True)


if __name__ == "__main__":
    main()
