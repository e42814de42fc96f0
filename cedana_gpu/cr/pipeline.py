"""The generic runner of checkpoint and restore: named phases, each with an undo.

A dump or a restore is a list of ``Phase``s run in order on one context
object (what the phases share), as CRIU structures its own dump and restore.
When a phase fails, or the run is interrupted (Ctrl-C, or SIGTERM, which the
runner turns into ``Terminated`` while it runs), the undos of the phases
that started are called in reverse order and the original exception goes
on. Rules:

- The failing phase's own undo runs too: a phase can fail halfway (CRIU
  stopped the tree, then failed), so every undo must be safe to call after
  its phase ran partly, or not at all (it looks at the context to see what
  was done).
- An undo that fails is reported (one line, and a note on the exception that
  goes on) and the remaining undos still run: one stuck undo must not leave
  the rest of the job frozen or stopped.
- A phase marked ``irreversible`` is a point of no return: once it has
  completed, nothing before it is undone any more (after a dumped job was
  killed, removing its checkpoint would lose the job).
- A phase with a ``timing`` key records how long it took under that key.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Generic, TypeVar

C = TypeVar("C")


class Terminated(BaseException):
    """SIGTERM arrived while a pipeline ran.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception``
    in a phase swallows it on its way to the runner's undos."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signal.Signals(signum).name}")
        self.signum = signum


@dataclass(frozen=True)
class Phase(Generic[C]):
    name: str
    run: Callable[[C], object]
    undo: Callable[[C], object] | None = None
    timing: str | None = None
    """The key of ``Pipeline.timings`` its duration goes under (None: not timed)."""
    when: Callable[[C], bool] | None = None
    """Run only when this says so (a skipped phase has nothing to undo)."""
    irreversible: bool = False
    """Once done, the phases before it (and it) are not undone any more."""


@dataclass
class UndoFailure:
    phase: str
    error: BaseException

    def __str__(self) -> str:
        return f"undoing {self.phase} failed: {self.error or type(self.error).__name__}"


def _stderr_line(line: str) -> None:
    print(f"cedana: {line}", file=sys.stderr)


@dataclass
class Pipeline(Generic[C]):
    """Phases to run in order on one context; ``run`` runs them once."""

    phases: Sequence[Phase[C]]
    handle_sigterm: bool = True
    """Turn SIGTERM into ``Terminated`` while running (main thread only). A
    process with its own SIGTERM handling (the controller) says False."""
    report: Callable[[str], None] = _stderr_line
    """Where a failed undo is reported, one line each."""
    timings: dict[str, float] = field(default_factory=dict)
    started: list[str] = field(default_factory=list)
    """The phases that started, in order (the last one may have failed)."""
    undone: list[str] = field(default_factory=list)
    """The phases whose undo was called, in the order it was."""
    undo_failures: list[UndoFailure] = field(default_factory=list)

    def run(self, ctx: C) -> dict[str, float]:
        """Run every phase on ``ctx``; the timings. On any exception, undo and re-raise it."""
        to_undo: list[Phase[C]] = []
        with _sigterm_raises(self.handle_sigterm) as undoing:
            try:
                for phase in self.phases:
                    if phase.when is not None and not phase.when(ctx):
                        continue
                    self.started.append(phase.name)
                    to_undo.append(phase)
                    t0 = time.monotonic()
                    phase.run(ctx)
                    if phase.timing is not None:
                        self.timings[phase.timing] = time.monotonic() - t0
                    if phase.irreversible:
                        to_undo.clear()
            except BaseException as exc:
                undoing.set()  # a SIGTERM now must not cut the undos short
                self._undo(reversed(to_undo), ctx, exc)
                raise
        return self.timings

    def _undo(self, phases: Iterator[Phase[C]], ctx: C, exc: BaseException) -> None:
        for phase in phases:
            if phase.undo is None:
                continue
            self.undone.append(phase.name)
            try:
                phase.undo(ctx)
            except BaseException as e:  # report it and go on: the other undos matter more
                failure = UndoFailure(phase.name, e)
                self.undo_failures.append(failure)
                self.report(str(failure))
                exc.add_note(str(failure))


@contextmanager
def _sigterm_raises(enabled: bool) -> Iterator[threading.Event]:
    """While the body runs, SIGTERM raises ``Terminated`` (until the event is set:
    then it is only remembered and raised once the body is done)."""
    undoing = threading.Event()
    if not enabled or threading.current_thread() is not threading.main_thread():
        # Only the main thread can have signal handlers.
        yield undoing
        return
    pending: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        if undoing.is_set():
            pending.append(signum)
            return
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield undoing
    finally:
        signal.signal(signal.SIGTERM, previous)
    if pending:
        # Asked to stop while undoing: stop now that the undos are done.
        raise Terminated(pending[0])
