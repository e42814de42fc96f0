"""A job that mints more handles than one handle region holds (events made
and destroyed, as a loop that times each step does), then uses handles made
after that: a process takes another region when one is full. Prints the
first and last event handles and "many ok"."""

from __future__ import annotations

import sys

from cuda.bindings import driver as cu

OK = cu.CUresult.CUDA_SUCCESS


def main() -> None:
    n = int(sys.argv[1])
    assert cu.cuInit(0)[0] == OK
    dev = cu.cuDeviceGet(0)[1]
    ctx = cu.cuDevicePrimaryCtxRetain(dev)[1]
    assert cu.cuCtxSetCurrent(ctx)[0] == OK
    first = last = 0
    for i in range(n):
        err, e = cu.cuEventCreate(0)
        assert err == OK, (i, err)
        if i == 0:
            first = int(e)
        last = int(e)
        assert cu.cuEventDestroy(e)[0] == OK
    err, stream = cu.cuStreamCreate(0)
    assert err == OK, err
    err, event = cu.cuEventCreate(0)
    assert err == OK, err
    assert cu.cuEventRecord(event, stream)[0] == OK
    assert cu.cuEventSynchronize(event)[0] == OK
    assert cu.cuStreamSynchronize(stream)[0] == OK
    print(f"first={first:#x} last={last:#x} stream={int(stream):#x}", flush=True)
    print("many ok", flush=True)


if __name__ == "__main__":
    main()
