"""cuda.core as a user runs it: a device, its context, a stream, an event,
device memory. cuda.core holds handles as pointer-sized integers, so each one
must be a user-space pointer. Prints only what is the same on every driver."""

from __future__ import annotations

from typing import Any

from cuda.core import Device

USER_SPACE_END = 1 << 47


def user_space(handle: Any) -> bool:
    return 0 < int(handle) < USER_SPACE_END


def main() -> None:
    dev = Device(0)
    dev.set_current()
    stream = dev.create_stream()
    event = stream.record()
    event.sync()
    print("context handle user-space:", user_space(dev.context.handle))
    print("stream handle user-space:", user_space(stream.handle))
    print("event handle user-space:", user_space(event.handle))
    buf = dev.memory_resource.allocate(1 << 16, stream=stream)
    print("buffer size:", buf.size)
    buf.close(stream)
    stream.sync()
    stream.close()
    print("cuda.core ok")


if __name__ == "__main__":
    main()
