"""numba-cuda's driver layer as a user runs it: the current context, a
stream, device arrays copied both ways, an event, pinned and mapped host
memory. Prints only what is the same on every driver."""

from __future__ import annotations

import numpy as np
from numba import cuda


def main() -> None:
    ctx = cuda.current_context()
    print("context handle user-space:", 0 < int(ctx.handle) < 1 << 47)
    stream = cuda.stream()
    host = np.arange(4096, dtype=np.float32)
    dev = cuda.to_device(host, stream=stream)
    back = dev.copy_to_host(stream=stream)
    stream.synchronize()
    print("device array round trip:", bool((back == host).all()))
    event = cuda.event()
    event.record(stream)
    event.synchronize()
    print("event query:", event.query())
    pinned = cuda.pinned_array(64, dtype=np.int32)
    pinned[:] = np.arange(64)
    dpinned = cuda.to_device(pinned, stream=stream)
    stream.synchronize()
    print("pinned round trip:", dpinned.copy_to_host().tolist() == list(range(64)))
    mapped = cuda.mapped_array(16, dtype=np.int64)
    mapped[:] = 5
    print("mapped sum:", int(mapped.sum()))
    print("free memory reported:", ctx.get_memory_info().free > 0)
    print("numba-cuda ok")


if __name__ == "__main__":
    main()
