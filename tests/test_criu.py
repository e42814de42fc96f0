"""CRIU set-up and runner: criu check, a real dump/restore round trip in a PID
namespace, error reporting, and the idempotence of scripts/setup-criu.sh."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cedana_gpu.cr import criu
from cedana_gpu.cr.criu import CriuError, CriuNotFound, criu_check, criu_path, run_criu

REPO = Path(__file__).resolve().parent.parent
SETUP = REPO / "scripts" / "setup-criu.sh"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="CRIU needs root (run the tests as root)")

COUNTER = """\
import time
i = 0
while True:
    print(i, flush=True)
    i += 1
    time.sleep(0.02)
"""


def _wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def _numbers(path: Path) -> list[int]:
    """The complete lines of the counter file, as integers."""
    text = path.read_text()
    return [int(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def _alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat_line.rsplit(")", 1)[1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _kill(pid: int) -> None:
    # SIGKILL: a PID namespace's init ignores signals it has no handler for.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# --- pure helpers (no root) ----------------------------------------------------


def test_error_line_skips_noise() -> None:
    log = (
        "(00.000010) rlimit: Can't setup RLIMIT_NOFILE for self\n"
        "(00.001000) Error (criu/files-reg.c:2011): File tmp/x has bad size 10 (expect 5)\n"
        "(00.002000) Error (criu/cr-restore.c:2600): Restoring FAILED.\n"
        "\n"
    )
    assert criu._last_meaningful_line(log) == (
        "Error (criu/files-reg.c:2011): File tmp/x has bad size 10 (expect 5)"
    )
    assert criu._last_meaningful_line("rlimit: Can't setup RLIMIT_NOFILE for self\n") == ""


def test_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "criu"
    fake.write_text("#!/bin/sh\necho 'Version: 9.9'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("CEDANA_CRIU", str(fake))
    assert criu_path() == fake

    monkeypatch.setenv("CEDANA_CRIU", str(tmp_path / "missing"))
    with pytest.raises(CriuNotFound) as info:
        criu_path()
    message = str(info.value)
    assert "\n" not in message
    assert "make setup" in message and "CEDANA_CRIU" in message


def test_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "criu"
    fake.write_text(
        "#!/bin/sh\n"
        'echo "rlimit: Can\'t setup RLIMIT_NOFILE for self" >&2\n'
        "echo 'Error (criu/cr-dump.c:1): something broke' >&2\n"
        'echo "rlimit: Can\'t setup RLIMIT_NOFILE for self" >&2\n'
        "exit 1\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("CEDANA_CRIU", str(fake))
    with pytest.raises(CriuError) as info:
        run_criu(["dump", "-t", "1"])
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("criu dump failed with exit code 1: ")
    assert message.endswith("Error (criu/cr-dump.c:1): something broke")
    assert info.value.returncode == 1


def fake_criu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    fake = tmp_path / "criu"
    fake.write_text("#!/bin/sh\n" + script)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("CEDANA_CRIU", str(fake))


@pytest.mark.parametrize("how", ["kill -9 $$\n", "sh -c 'kill -9 $$'\nexit 137\n"])
def test_a_killed_criu_is_said_to_be_killed(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed midway, CRIU's log ends anywhere: its last line says nothing."""
    log = tmp_path / "dump.log"
    log.write_text("inet: Collected: ino 0x51e family AF_INET\n")
    fake_criu(tmp_path, monkeypatch, how)
    with pytest.raises(CriuError) as info:
        run_criu(["dump", "-t", "1", "--log-file", str(log)], log_file=log)
    assert str(info.value) == f"criu dump was killed by SIGKILL (log: {log})"


def test_tasks_left_holding_criu_s_output_do_not_hold_the_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore whose CRIU died leaves tasks that inherited its stdout: the
    call returns when CRIU does, not when they let go of the output."""
    pidfile = tmp_path / "left.pid"
    fake_criu(tmp_path, monkeypatch, f"sleep 600 &\necho $! > {pidfile}\nexit 0\n")
    try:
        run_criu(["restore"], timeout=300)
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


# --- the real CRIU (root) ------------------------------------------------------


@needs_root
def test_criu_check() -> None:
    said = criu_check()
    assert "Looks good" in said
    assert "RLIMIT_NOFILE" not in said


@needs_root
def test_restore_failure_names_the_cause(tmp_path: Path) -> None:
    images = tmp_path / "empty-images"
    images.mkdir()
    with pytest.raises(CriuError) as info:
        run_criu(["restore", "-d", "-D", str(images), "-v4"], log_file=tmp_path / "restore.log")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("criu restore failed with exit code")
    assert str(tmp_path / "restore.log") in message
    assert "RLIMIT_NOFILE" not in message


@needs_root
def test_dump_and_restore_in_pid_namespace(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    counter = tmp_path / "counter.txt"
    restored_pidfile = tmp_path / "restored.pid"
    init = 0
    restored = 0

    # The job: its own PID namespace (unshare's child is the namespace's init)
    # and its own session (setsid), so no controlling terminal and no
    # --shell-job. stdout is opened O_APPEND, so its growth does not stop the
    # restore; stdin is /dev/null.
    with (
        open(os.devnull, "rb") as devnull,
        open(counter, "ab") as out,
        open(tmp_path / "stderr.txt", "ab") as err,
    ):
        job = subprocess.Popen(
            ["unshare", "--pid", "--fork", "setsid", sys.executable, "-c", COUNTER],
            stdin=devnull,
            stdout=out,
            stderr=err,
            cwd=tmp_path,
        )
    try:
        _wait_for(lambda: len(_numbers(counter)) >= 5, 10, "the job to start counting")
        kids = _children(job.pid)
        assert len(kids) == 1, f"unshare should have one child, has {kids}"
        init = kids[0]

        run_criu(
            ["dump", "-t", str(init), "-D", str(images), "-v4"],
            log_file=tmp_path / "dump.log",
            timeout=60,
        )
        # Without --leave-running the dumped tree is killed: unshare sees its
        # child die and exits.
        job.wait(timeout=10)
        assert not _alive(init)
        before = _numbers(counter)
        time.sleep(0.2)
        assert _numbers(counter) == before, "the job still counts after the dump"
        assert before == list(range(len(before)))

        run_criu(
            ["restore", "-d", "-D", str(images), "-v4", "--pidfile", str(restored_pidfile)],
            log_file=tmp_path / "restore.log",
            timeout=60,
        )
        restored = int(restored_pidfile.read_text())
        assert _alive(restored)
        _wait_for(
            lambda: len(_numbers(counter)) >= len(before) + 5, 10, "the restored job to count"
        )
        after = _numbers(counter)
        # It continues exactly where it stopped: no gap, no restart from 0.
        assert after[: len(before)] == before
        assert after == list(range(len(after)))
    finally:
        for pid in (restored, init):
            if pid:
                _kill(pid)
        if job.poll() is None:
            job.kill()
        job.wait(timeout=10)
        if restored:
            # Reparented to the system's init, which reaps it.
            _wait_for(lambda: not _alive(restored), 10, "the restored job to exit")


@needs_root
def test_setup_script_second_run_is_fast() -> None:
    # The first run installs if needed (network); the second must be a no-op.
    first = subprocess.run(
        [str(SETUP)], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600
    )
    assert first.returncode == 0, first.stderr.strip()
    start = time.monotonic()
    second = subprocess.run(
        [str(SETUP)], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )
    elapsed = time.monotonic() - start
    assert second.returncode == 0, second.stderr.strip()
    lines = second.stdout.splitlines()
    assert len(lines) == 1, second.stdout
    assert lines[0].startswith(f"criu: already installed in {REPO / '.criu'}")
    assert elapsed < 5, f"second run took {elapsed:.2f} s"
