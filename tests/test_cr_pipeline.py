"""The checkpoint/restore runner (cedana_gpu.cr.pipeline): order, undo, interruption.

No root, CRIU or native build: the phases here only record what happened."""

from __future__ import annotations

import errno
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cedana_gpu.cr.pipeline import (
    PHASE_HOOK_ENV,
    HookError,
    Phase,
    Pipeline,
    Terminated,
    fault_point,
)


@dataclass
class Ctx:
    log: list[str] = field(default_factory=list)
    fail_at: str | None = None
    fail_undo_of: set[str] = field(default_factory=set)
    interrupt_at: str | None = None
    sigterm_at: str | None = None


class Boom(Exception):
    pass


def phase(name: str, *, undo: bool = True, **kw: object) -> Phase[Ctx]:
    def run(ctx: Ctx) -> None:
        ctx.log.append(f"run {name}")
        if ctx.fail_at == name:
            raise Boom(f"{name} failed")
        if ctx.interrupt_at == name:
            raise KeyboardInterrupt
        if ctx.sigterm_at == name:
            os.kill(os.getpid(), signal.SIGTERM)
            # The handler raises at the next bytecode boundary; give it one.
            threading.Event().wait(5)
            raise AssertionError("SIGTERM did not interrupt the phase")

    def undo_fn(ctx: Ctx) -> None:
        ctx.log.append(f"undo {name}")
        if name in ctx.fail_undo_of:
            raise OSError(f"cannot undo {name}")

    return Phase(name, run, undo=undo_fn if undo else None, **kw)  # type: ignore[arg-type]


def four() -> list[Phase[Ctx]]:
    return [phase("a"), phase("b", undo=False), phase("c"), phase("d")]


def test_phases_run_in_order_and_nothing_is_undone_on_success() -> None:
    ctx = Ctx()
    pipeline = Pipeline(four())
    pipeline.run(ctx)
    assert ctx.log == ["run a", "run b", "run c", "run d"]
    assert pipeline.started == ["a", "b", "c", "d"]
    assert pipeline.undone == []


def test_failure_undoes_what_started_in_reverse_order_and_reraises() -> None:
    ctx = Ctx(fail_at="c")
    pipeline = Pipeline(four())
    with pytest.raises(Boom, match="c failed"):
        pipeline.run(ctx)
    # c failed halfway: its own undo runs too, then b (none) and a; d never ran.
    assert ctx.log == ["run a", "run b", "run c", "undo c", "undo a"]
    assert pipeline.undone == ["c", "a"]
    assert pipeline.undo_failures == []


def test_failure_in_the_first_phase_undoes_only_it() -> None:
    ctx = Ctx(fail_at="a")
    with pytest.raises(Boom):
        Pipeline(four()).run(ctx)
    assert ctx.log == ["run a", "undo a"]


def test_keyboard_interrupt_undoes_and_goes_on() -> None:
    ctx = Ctx(interrupt_at="d")
    with pytest.raises(KeyboardInterrupt):
        Pipeline(four()).run(ctx)
    assert ctx.log == ["run a", "run b", "run c", "run d", "undo d", "undo c", "undo a"]


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signals: main thread"
)
def test_sigterm_becomes_terminated_undoes_and_the_old_handler_comes_back() -> None:
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: seen.append(signum))
    try:
        ctx = Ctx(sigterm_at="c")
        with pytest.raises(Terminated) as info:
            Pipeline(four()).run(ctx)
        assert info.value.signum == signal.SIGTERM
        assert ctx.log == ["run a", "run b", "run c", "undo c", "undo a"]
        # The runner's handler is gone: SIGTERM reaches the one from before.
        os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signals: main thread"
)
def test_sigterm_during_undo_does_not_cut_the_undos_short() -> None:
    def undo_b(ctx: Ctx) -> None:
        ctx.log.append("undo b")
        os.kill(os.getpid(), signal.SIGTERM)  # remembered, not raised here
        ctx.log.append("undo b done")

    phases = [phase("a"), Phase("b", lambda ctx: None, undo=undo_b), phase("c")]
    ctx = Ctx(fail_at="c")
    with pytest.raises(Boom):
        Pipeline(phases).run(ctx)
    assert ctx.log == ["run a", "run c", "undo c", "undo b", "undo b done", "undo a"]


def test_an_undo_that_fails_is_reported_and_the_rest_still_run() -> None:
    reported: list[str] = []
    ctx = Ctx(fail_at="d", fail_undo_of={"c"})
    pipeline = Pipeline(four(), report=reported.append)
    with pytest.raises(Boom) as info:
        pipeline.run(ctx)
    assert ctx.log == ["run a", "run b", "run c", "run d", "undo d", "undo c", "undo a"]
    assert [(f.phase, str(f.error)) for f in pipeline.undo_failures] == [("c", "cannot undo c")]
    assert reported == ["undoing c failed: cannot undo c"]
    # The original error goes on, carrying the failed undo as a note.
    assert info.value.__notes__ == ["undoing c failed: cannot undo c"]


def test_skipped_phases_neither_run_nor_undo() -> None:
    phases = [phase("a"), phase("b", when=lambda ctx: False), phase("c")]
    ctx = Ctx(fail_at="c")
    pipeline = Pipeline(phases)
    with pytest.raises(Boom):
        pipeline.run(ctx)
    assert ctx.log == ["run a", "run c", "undo c", "undo a"]
    assert pipeline.started == ["a", "c"]


def test_nothing_before_an_irreversible_phase_is_undone() -> None:
    phases = [phase("a"), phase("b", irreversible=True), phase("c"), phase("d")]
    ctx = Ctx(fail_at="d")
    with pytest.raises(Boom):
        Pipeline(phases).run(ctx)
    assert ctx.log == ["run a", "run b", "run c", "run d", "undo d", "undo c"]


def test_an_irreversible_phase_that_fails_is_undone_with_the_rest() -> None:
    phases = [phase("a"), phase("b", irreversible=True), phase("c")]
    ctx = Ctx(fail_at="b")
    with pytest.raises(Boom):
        Pipeline(phases).run(ctx)
    assert ctx.log == ["run a", "run b", "undo b", "undo a"]


def test_timed_phases_record_their_time_under_their_key() -> None:
    phases = [phase("a", timing="first"), phase("b"), phase("c", timing="third")]
    timings = Pipeline(phases).run(Ctx())
    assert set(timings) == {"first", "third"}
    assert all(v >= 0 for v in timings.values())


def test_the_dump_and_restore_lists_name_their_undos() -> None:
    """The shapes the modules document: which phases can be undone, and the point of no return."""
    from cedana_gpu.cr.dump import DUMP_PHASES
    from cedana_gpu.cr.restore import RESTORE_PHASES

    dump = {p.name: p for p in DUMP_PHASES}
    assert list(dump) == [
        "directory", "connect", "hold", "freeze", "gpu_dump", "criu_dump", "thaw", "unhold",
        "write", "verify", "pack", "sync", "commit", "store", "release", "record",
    ]  # fmt: skip
    assert {n for n, p in dump.items() if p.undo is not None} == {
        "directory", "connect", "hold", "freeze", "criu_dump", "commit",
    }  # fmt: skip
    assert [n for n, p in dump.items() if p.irreversible] == ["release"]
    assert {p.timing for p in DUMP_PHASES} - {None} == {
        "freeze", "gpu_dump", "criu_dump", "write", "verify", "archive", "sync", "commit",
    }  # fmt: skip
    assert [(p.name, p.undo is not None) for p in RESTORE_PHASES] == [
        ("check", False), ("restore_gpu", True), ("collect", False),
    ]  # fmt: skip


# ---- the test-only hook (CEDANA_TEST_PHASE_HOOK) ----------------------------------------


def io_phase(name: str, log: list[str]) -> Phase[Ctx]:
    """A phase whose I/O turns OSError into its own error, as real phases do."""

    def run(ctx: Ctx) -> None:
        try:
            fault_point()
        except OSError as e:
            raise Boom(f"{name}: {e.strerror}") from None
        ctx.log.append(f"run {name}")

    return Phase(name, run, undo=lambda ctx: ctx.log.append(f"undo {name}"))


def test_without_the_hook_nothing_is_written_or_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PHASE_HOOK_ENV, raising=False)
    ctx = Ctx()
    Pipeline([io_phase("a", ctx.log)], name="t").run(ctx)
    fault_point("t.a")
    assert ctx.log == ["run a"]


def test_the_hook_marks_each_phase_reached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PHASE_HOOK_ENV, str(tmp_path))
    phases = [phase("a"), phase("b", when=lambda ctx: False), phase("c")]
    Pipeline(phases, name="t").run(Ctx())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.a.reached", "t.c.reached"]
    assert (tmp_path / "t.a.reached").read_text() == f"{os.getpid()}\n"


def test_the_hook_pauses_until_the_pause_file_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PHASE_HOOK_ENV, str(tmp_path))
    (tmp_path / "t.b.pause").touch()
    ctx = Ctx()
    runner = threading.Thread(target=Pipeline(four(), name="t").run, args=(ctx,))
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "t.b.reached").exists():
            assert time.monotonic() < deadline, "the run never reached b"
            time.sleep(0.01)
        assert ctx.log == ["run a"]  # waiting at b, which has not run
    finally:
        (tmp_path / "t.b.pause").unlink()
        runner.join(60)
    assert ctx.log == ["run a", "run b", "run c", "run d"]


@pytest.mark.parametrize("name", ["ENOSPC", "EIO"])
def test_an_armed_fault_fails_the_phase_through_its_own_handling(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PHASE_HOOK_ENV, str(tmp_path))
    (tmp_path / "t.b.fault").write_text(name)
    ctx = Ctx()
    with pytest.raises(Boom) as info:
        Pipeline([io_phase("a", ctx.log), io_phase("b", ctx.log)], name="t").run(ctx)
    code = getattr(errno, name)
    assert str(info.value) == f"b: {os.strerror(code)}"
    assert ctx.log == ["run a", "undo b", "undo a"]
    assert not (tmp_path / "t.b.fault").exists()  # once


def test_a_fault_for_another_process_s_phase_is_raised_where_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PHASE_HOOK_ENV, str(tmp_path))
    (tmp_path / "dump.gpu_dump.fault").write_text("EIO")
    fault_point("dump.criu_dump")  # not armed
    with pytest.raises(OSError) as info:
        fault_point("dump.gpu_dump")
    assert info.value.errno == errno.EIO


def test_a_fault_no_fault_point_reached_fails_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PHASE_HOOK_ENV, str(tmp_path))
    (tmp_path / "t.b.fault").write_text("ENOSPC")
    ctx = Ctx()
    with pytest.raises(HookError, match=r"t\.b, which"):
        Pipeline([phase("a"), phase("b", io=False), phase("c")], name="t").run(ctx)
    assert ctx.log == ["run a", "run b", "undo b", "undo a"]
