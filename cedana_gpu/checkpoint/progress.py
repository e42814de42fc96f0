"""Progress of long checkpoint phases: one updating line on a terminal, nothing otherwise.

    with Progress("gpu dump", total_bytes) as p:
        ...  # any thread: p.add(n)

draws ``gpu dump  1.2 GiB / 4.0 GiB  30%  2.1 GiB/s`` on stderr when stderr is
a terminal, at most ``interval`` seconds apart, and ends the line when done.
Safe to call from several threads (the shard threads report as they go).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Protocol, TextIO


class ProgressSink(Protocol):
    """What the checkpoint functions report to: bytes done, from any thread."""

    def add(self, nbytes: int) -> None: ...


def human_bytes(n: float) -> str:
    """``1536`` → ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - unreachable


class Progress:
    """Bytes done out of ``total``, with throughput; draws only on a TTY.

    ``enabled`` None: draw if ``stream`` (default stderr) is a terminal.
    The counters work either way: ``done``, ``elapsed``, ``throughput``.
    """

    def __init__(
        self,
        label: str,
        total: int,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        interval: float = 0.2,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.interval = interval
        self.done = 0
        self.start = time.monotonic()
        self.end: float | None = None
        self._lock = threading.Lock()
        self._last_draw = 0.0
        self._drawn = False

    @property
    def elapsed(self) -> float:
        return (self.end if self.end is not None else time.monotonic()) - self.start

    @property
    def throughput(self) -> float:
        """Bytes per second so far."""
        t = self.elapsed
        return self.done / t if t > 0 else 0.0

    def line(self) -> str:
        parts = [self.label, f"{human_bytes(self.done)} / {human_bytes(self.total)}"]
        if self.total > 0:
            parts.append(f"{min(100, 100 * self.done // self.total)}%")
        parts.append(f"{human_bytes(self.throughput)}/s")
        return "  ".join(parts)

    def add(self, nbytes: int) -> None:
        with self._lock:
            self.done += nbytes
            if not self.enabled:
                return
            now = time.monotonic()
            if now - self._last_draw < self.interval:
                return
            self._last_draw = now
            self._draw()

    def _draw(self) -> None:
        try:
            self.stream.write("\r" + self.line() + "\x1b[K")
            self.stream.flush()
            self._drawn = True
        except (OSError, ValueError):  # terminal gone or stream closed: stop drawing
            self.enabled = False

    def close(self) -> None:
        """Stop the clock; on a terminal draw the final line and end it."""
        with self._lock:
            if self.end is None:
                self.end = time.monotonic()
            if self.enabled and (self._drawn or self.done):
                self._draw()
                try:
                    self.stream.write("\n")
                    self.stream.flush()
                except (OSError, ValueError):
                    pass
                self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
