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

Test-only hook (``CEDANA_TEST_PHASE_HOOK``, for the fault matrix in
tests/test_fault_matrix.py; never set in production). When the variable
names a directory, the runner, before each phase it runs:

- creates ``<dir>/<pipeline>.<phase>.reached`` (atomically; it holds the
  runner's pid), so a test knows where the run is without sleeping;
- while ``<dir>/<pipeline>.<phase>.pause`` exists, waits (polling every 10 ms,
  without limit: the test removes it once it has done its harm, e.g. killed
  a process; a SIGTERM still interrupts the wait like any phase);
- if ``<dir>/<pipeline>.<phase>.fault`` holds an errno name (``ENOSPC``,
  ``EIO``), the phase's own I/O fails with that error: the phase calls
  ``fault_point()`` where its I/O is, inside the handling that turns that
  I/O's errors into the phase's one-line error, and ``fault_point`` raises
  ``OSError(errno, strerror)`` there, once (it removes the file). I/O that
  another process does for a phase (the controller writing a dump's GPU
  state) names the phase: ``fault_point("dump.gpu_dump")``. A phase that
  finishes with its fault still armed fails with ``HookError``: it does file
  I/O without a ``fault_point``, or says ``io=False`` and should not have
  been armed.

Without the variable the runner reads the environment once per run and
``fault_point`` once per call: nothing else.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Generic, TypeVar

from cedana_gpu.errors import CedanaError

C = TypeVar("C")

PHASE_HOOK_ENV = "CEDANA_TEST_PHASE_HOOK"
"""Test-only: a directory through which a test stops at, and fails, named phases."""

_PAUSE_POLL_S = 0.01

# "<pipeline>.<phase>" of the phase running in this thread, while the hook is on.
_running: ContextVar[str | None] = ContextVar("cedana_running_phase", default=None)


class HookError(RuntimeError):
    """Test hook: a fault was armed for a phase that never reached a ``fault_point``."""


class Terminated(BaseException):
    """SIGTERM arrived while a pipeline ran.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception``
    in a phase swallows it on its way to the runner's undos."""

    def __init__(self, signum: int, outcome: str = "") -> None:
        message = f"interrupted by signal {signal.Signals(signum).name}"
        super().__init__(f"{message}; {outcome}" if outcome else message)
        self.signum = signum
        self.outcome = outcome
        """What became of the job, once the pipeline's caller knows (for the one line)."""


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
    io: bool = True
    """The phase reads or writes files and calls ``fault_point`` where that
    I/O can fail (the test hook fails it with ENOSPC or EIO there). False for
    a phase whose only I/O is a control connection or signals. True by
    default so that a new phase is in the fault matrix until it says why not."""


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
    name: str = "pipeline"
    """What the test hook's files call this pipeline (``dump``, ``restore``,
    ``controller-restore``)."""
    handle_sigterm: bool = True
    """Turn SIGTERM into ``Terminated`` while running (main thread only). A
    process with its own SIGTERM handling (the controller) says False."""
    report: Callable[[str], None] = _stderr_line
    """Where a failed undo is reported, one line each."""
    observer: Callable[[str], None] | None = None
    """Told the name of each phase as it starts (the daemon's progress events)."""
    timings: dict[str, float] = field(default_factory=dict)
    started: list[str] = field(default_factory=list)
    """The phases that started, in order (the last one may have failed)."""
    undone: list[str] = field(default_factory=list)
    """The phases whose undo was called, in the order it was."""
    undo_failures: list[UndoFailure] = field(default_factory=list)

    def run(self, ctx: C) -> dict[str, float]:
        """Run every phase on ``ctx``; the timings. On any exception, undo and re-raise it."""
        to_undo: list[Phase[C]] = []
        hook = _Hook.from_env(self.name)
        with _sigterm_raises(self.handle_sigterm) as undoing:
            try:
                for phase in self.phases:
                    if phase.when is not None and not phase.when(ctx):
                        continue
                    if hook is not None:
                        hook.before(phase.name)
                    self.started.append(phase.name)
                    to_undo.append(phase)
                    if self.observer is not None:
                        self.observer(phase.name)
                    t0 = time.monotonic()
                    if hook is None:
                        phase.run(ctx)
                    else:
                        hook.run(phase, ctx)
                    if phase.timing is not None:
                        self.timings[phase.timing] = time.monotonic() - t0
                    if phase.irreversible:
                        to_undo.clear()
            except BaseException as exc:
                undoing.set()  # a SIGTERM now must not cut the undos short
                self._undo(reversed(to_undo), ctx, exc)
                raise
        return self.timings

    def run_telling(
        self, ctx: C, outcome: Callable[[C], str], error: type[CedanaError]
    ) -> dict[str, float]:
        """``run``, and a failure ends in one line that says what became of the job.

        ``outcome(ctx)``, called once the undos are done, says it in a clause;
        a ``CedanaError`` is raised again as ``error`` with that clause after
        its first line; SIGTERM and Ctrl-C (both unwound alike) as
        ``Terminated`` carrying it."""
        try:
            return self.run(ctx)
        except CedanaError as e:
            text = str(e)
            first = text.splitlines()[0] if text else type(e).__name__
            raise error(f"{first}; {outcome(ctx)}") from None
        except Terminated as e:
            raise Terminated(e.signum, outcome(ctx)) from None
        except KeyboardInterrupt:
            raise Terminated(signal.SIGINT, outcome(ctx)) from None

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


def fault_point(phase: str | None = None) -> None:
    """Test-only: where a phase's own I/O can fail (see the module's docstring).

    Raises the ``OSError`` a test armed for the phase running in this thread,
    or for ``phase`` ("<pipeline>.<phase>": I/O this process does for another
    process's phase); otherwise does nothing. Call it inside the ``try`` whose
    ``except OSError`` turns the phase's real I/O errors into its one line."""
    key = phase or _running.get()
    if key is None:
        return
    directory = os.environ.get(PHASE_HOOK_ENV)
    if not directory:
        return
    armed = Path(directory) / f"{key}.fault"
    try:
        name = armed.read_text().strip()
    except FileNotFoundError:
        return
    code = getattr(errno, name, None)
    if not name.startswith("E") or not isinstance(code, int):
        raise HookError(f"{armed}: {name!r} is not an errno name (ENOSPC, EIO)")
    # Once: the undos, and a later run, find their I/O working again.
    with contextlib.suppress(FileNotFoundError):
        armed.unlink()
    raise OSError(code, os.strerror(code))


@dataclass
class _Hook:
    """The test hook of one pipeline run (``CEDANA_TEST_PHASE_HOOK``)."""

    directory: Path
    pipeline: str

    @classmethod
    def from_env(cls, pipeline: str) -> _Hook | None:
        directory = os.environ.get(PHASE_HOOK_ENV)
        return cls(Path(directory), pipeline) if directory else None

    def _path(self, phase: str, kind: str) -> Path:
        return self.directory / f"{self.pipeline}.{phase}.{kind}"

    def before(self, phase: str) -> None:
        """Say the run reached ``phase``; wait while the test pauses it there."""
        reached = self._path(phase, "reached")
        # Named per thread too: a daemon runs several pipelines in one process.
        tmp = reached.with_name(f".{reached.name}.{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(f"{os.getpid()}\n")
        os.replace(tmp, reached)
        pause = self._path(phase, "pause")
        while pause.exists():
            time.sleep(_PAUSE_POLL_S)

    def run(self, phase: Phase[C], ctx: C) -> None:
        token = _running.set(f"{self.pipeline}.{phase.name}")
        try:
            phase.run(ctx)
        finally:
            _running.reset(token)
        if self._path(phase.name, "fault").exists():
            raise HookError(
                f"test hook: a fault was armed for {self.pipeline}.{phase.name}, which "
                "finished without reaching a fault_point"
                + ("" if phase.io else " (it says io=False: do not arm it)")
            )


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
