"""A caller of the process checkpoint API in a process of its own.

    python ckpt_caller.py PID OP [OP ...] [--no-init] [--pair OLD=NEW ...]

OP is state, lock, checkpoint, custom-checkpoint (to custom storage, which
is then completed at once), restore, unlock or tid, done in that order;
OLD and NEW are GPU UUIDs (32 hex digits, dashes allowed) for restore's
gpuPairs. Prints one line per operation, "<op> <CUresult name> [value]",
and exits 0 (the result codes are the output, not the exit status).

The tests run it where the test process cannot serve as the caller: on
"another machine" (the caller's driver configured with other GPUs through
FAKE_CUDA_*), without cuInit, or as a fresh process after a CRIU restore.
"""

from __future__ import annotations

import ctypes
import sys


def parse_uuid(text: str) -> bytes:
    raw = bytes.fromhex(text.replace("-", "").removeprefix("GPU"))
    if len(raw) != 16:
        raise SystemExit(f"not a UUID: {text}")
    return raw


def main(argv: list[str]) -> int:
    from cuda.bindings import driver as cu

    pid = int(argv[0])
    ops: list[str] = []
    pairs: list[tuple[bytes, bytes]] = []
    init = True
    args = iter(argv[1:])
    for a in args:
        if a == "--no-init":
            init = False
        elif a == "--pair":
            old, new = next(args).split("=")
            pairs.append((parse_uuid(old), parse_uuid(new)))
        else:
            ops.append(a)
    if init:
        (err,) = cu.cuInit(0)
        print(f"init {err.name}", flush=True)
    for op in ops:
        value = ""
        if op == "state":
            err, st = cu.cuCheckpointProcessGetState(pid)
            value = st.name if st is not None else ""
        elif op == "tid":
            err, tid = cu.cuCheckpointProcessGetRestoreThreadId(pid)
            value = str(tid)
        elif op == "lock":
            (err,) = cu.cuCheckpointProcessLock(pid, None)
        elif op == "checkpoint":
            (err,) = cu.cuCheckpointProcessCheckpoint(pid, None)
        elif op == "custom-checkpoint":
            out = ctypes.c_void_p(0)
            ca = cu.CUcheckpointCheckpointArgs()
            ca.customStorageInfo_out = ctypes.addressof(out)
            (err,) = cu.cuCheckpointProcessCheckpoint(pid, ca)
            if err == cu.CUresult.CUDA_SUCCESS and out.value:
                # CUcheckpointCustomStorageInfo starts with its handle.
                handle = ctypes.c_void_p.from_address(out.value).value
                (err,) = cu.cuCheckpointOperationComplete(cu.CUcheckpointOperationHandle(handle))
        elif op == "unlock":
            (err,) = cu.cuCheckpointProcessUnlock(pid, None)
        elif op == "restore":
            ra = None
            if pairs:
                ra = cu.CUcheckpointRestoreArgs()
                gp = []
                for old, new in pairs:
                    p = cu.CUcheckpointGpuPair()
                    # CUuuid.bytes is read-only in the bindings: write the struct.
                    ctypes.memmove(p.oldUuid.getPtr(), old, 16)
                    ctypes.memmove(p.newUuid.getPtr(), new, 16)
                    gp.append(p)
                ra.gpuPairs = gp
                ra.gpuPairsCount = len(gp)
            (err,) = cu.cuCheckpointProcessRestore(pid, ra)
        else:
            raise SystemExit(f"unknown operation {op}")
        print(f"{op} {err.name} {value}".rstrip(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
