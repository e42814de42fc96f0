"""The device address range a standby controller reserved before it knew its job.

``standby.prepare`` reserves it (``native.reserve``: device 0's primary context
and the range a new job's dispatcher would reserve) and ``hold``s it here;
after adoption the controller's ``open_segment`` ``take``s it once, and gives
it to the dispatcher when it ``fits`` what the job wants (a new job: any
range; a restore: its checkpoint's base). Whatever is not taken is
``release``d: a driver-engine job runs on a driver of its own, and a context
nobody uses would only hold device memory. A controller started fresh holds
nothing, and every function here is then a no-op.
"""

from __future__ import annotations

from cedana_gpu.controller import native

_held: native.Reservation | None = None


def hold(r: native.Reservation) -> None:
    global _held
    _held = r


def held() -> native.Reservation | None:
    """What is held, without taking it."""
    return _held


def take() -> native.Reservation | None:
    """The held range, once (None in a controller started fresh)."""
    global _held
    r, _held = _held, None
    return r


def release() -> None:
    """Give the held range and its context back, if nobody took them."""
    r = take()
    if r is not None:
        native.release_reserved(r)


def fits(r: native.Reservation, va_base: int, va_size: int) -> bool:
    """Whether a dispatcher that wants ``va_base``/``va_size`` (0: any) can have
    ``r``: a restore needs its checkpoint's base and at least its size."""
    return va_base in (0, r.va_base) and va_size <= r.va_size
