"""A standby controller's reserved device range (``cgc_reserve``), taken over by
the dispatcher of the job it is adopted for (``cgc_config.va_reserved``).

Each scenario runs in a process of its own on the fake driver (a reservation
belongs to a process). Whether a range was really given back is seen the way
a driver shows it: the next reservation lands on the same base again, where
it would land elsewhere while the first still held it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from dispatcher_proto import Segment
from preload import set_child_preload

from cedana_gpu.controller import reservation
from cedana_gpu.controller.native import Reservation
from cedana_gpu.paths import native_dir

REPO = Path(__file__).resolve().parent.parent
CTX = 0x0C00_0000_0000_0001
CUDA_SUCCESS = 0

SCRIPT = r"""
import json, sys
from cedana_gpu import gpu_info
from cedana_gpu.controller import native

gpu_info.load_driver("fake")
jid, mode = sys.argv[1], sys.argv[2]

def say(**kw):
    print(json.dumps(kw), flush=True)

def open_(job_id, r=None, **kw):
    d = native.Dispatcher()
    if r is not None:
        kw.update(va_base=r.va_base, va_size=r.va_size, va_reserved=True)
    d.open(native.DispatcherConfig(job_id=job_id, **kw))
    return d

def failed(fn):
    try:
        fn().close()
    except native.NativeError as e:
        return str(e)
    return None

if mode == "fresh":
    d = open_(jid)
    info = d.info()
    d.close()
    say(range=[info["va_base"], info["va_size"]])
    raise SystemExit(0)

r = native.reserve()
seen = {"reserved": [r.va_base, r.va_size]}
# Held: a dispatcher without the reservation gets another range.
d = open_(jid + "-other")
seen["beside"] = d.info()["va_base"]
d.close()
# A failed open that was given the range gives it back.
seen["bad_id"] = failed(lambda: open_(".bad", r))
r = native.reserve()
seen["after_bad_id"] = r.va_base
# Numbers cgc_reserve did not return are refused in one line.
odd = native.Reservation(r.va_base, r.va_size - 4096)
seen["odd_size"] = failed(lambda: open_(jid + "-odd", odd))
r = native.reserve()
seen["after_odd_size"] = r.va_base
# Given back unused.
native.release_reserved(r)
r = native.reserve()
seen["after_release"] = r.va_base
# Taken over: the dispatcher serves in exactly that range.
d = open_(jid, r)
d.start()
info = d.info()
seen["serving"] = [info["va_base"], info["va_size"]]
say(**seen)
sys.stdin.read()
d.close()
# Closed: the range is free again.
again = native.reserve()
say(after_close=again.va_base)
"""


def run_script(jid: str, mode: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_CUDA_")}
    env["CEDANA_GPU_NATIVE_DIR"] = str(native_dir())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    set_child_preload(env)  # the sanitizers' runtimes under make check-native
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, jid, mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def said(proc: subprocess.Popen[str]) -> dict[str, object]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"exit {proc.wait()}: {proc.stderr.read() if proc.stderr else ''}"
    return dict(json.loads(line))


@pytest.mark.usefixtures("native_parts")
def test_a_reserved_range_is_taken_over_given_back_and_freed() -> None:
    jid = f"t-resv-{uuid.uuid4().hex[:10]}"
    fresh = run_script(jid + "-fresh", "fresh")
    fresh_range = said(fresh)["range"]
    assert fresh.wait(timeout=60) == 0

    proc = run_script(jid, "reserve")
    try:
        seen = said(proc)
        base, size = seen["reserved"]  # type: ignore[misc]
        # What a fresh controller reserves, where it reserves it: a checkpoint
        # made on a fresh controller fits a standby's range.
        assert [base, size] == fresh_range
        assert seen["beside"] != base
        assert seen["bad_id"] and "invalid job id" in str(seen["bad_id"])
        assert seen["after_bad_id"] == base
        assert seen["odd_size"] and "is not one cgc_reserve returned" in str(seen["odd_size"])
        assert seen["after_odd_size"] == base
        assert seen["after_release"] == base
        assert seen["serving"] == [base, size]

        seg = Segment(jid)
        try:
            assert (seg.va_base, seg.va_size) == (base, size)
            seg.post("PRIMARY_RETAIN", CTX, 0, 0)
            reply = seg.call("MEM_ALLOC", 0, 1 << 20, ctx=CTX)
            assert reply.result == CUDA_SUCCESS, reply
            assert base <= reply.ret[0] < base + size
        finally:
            seg.close()
        assert proc.stdin is not None
        proc.stdin.close()
        assert said(proc)["after_close"] == base
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    ("va_base", "va_size", "fits"),
    [
        (0, 0, True),  # a new job: any range will do
        (1 << 40, 0, True),
        (1 << 40, 1 << 30, True),  # a restore of a checkpoint with a smaller range
        (1 << 40, 1 << 34, True),
        (1 << 40, (1 << 34) + 4096, False),  # larger than the standby's
        (2 << 40, 1 << 30, False),  # elsewhere
    ],
)
def test_which_ranges_a_standby_reservation_serves(va_base: int, va_size: int, fits: bool) -> None:
    assert reservation.fits(Reservation(1 << 40, 1 << 34), va_base, va_size) is fits
