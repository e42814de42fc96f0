"""Attach with input: jobs started with ``-i`` (RunReq.stdin) read what attach sends.

The job here echoes each line it reads and says ``eof`` at end-of-file, so
its output shows which lines reached it, in what order, and whether it saw
an end-of-file it should not have (a client that detaches, a dump, a
restore) or the one it should (close_stdin, the CLI's stdin ending).
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cr_helpers import REPO, WAIT, needs_root, unique_jid, wait_for
from daemon_helpers import Daemon, run_req, running

from cedana_gpu.daemon.proto import daemon_pb2 as pb

pytestmark = [needs_root, pytest.mark.usefixtures("native_parts")]

CEDANA = [sys.executable, "-m", "cedana_gpu"]
ECHO = 'while read -r l; do echo "got $l"; done; echo eof'


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with running(Daemon(tmp_path)) as d:
        yield d


class Session:
    """One Attach call: input is sent as the test goes, output read until a mark."""

    def __init__(self, stub: Any, jid: str) -> None:
        self.requests: queue.Queue[Any] = queue.Queue()
        self.requests.put(pb.AttachReq(jid=jid))
        self.call = stub.Attach(iter(self.requests.get, None), timeout=WAIT)
        self.out = b""
        self.ended: Any = None

    def send(self, data: bytes = b"", *, close: bool = False) -> None:
        self.requests.put(pb.AttachReq(stdin=data, close_stdin=close))

    def read_until(self, mark: bytes) -> bytes:
        while mark not in self.out:
            msg = next(self.call)
            if msg.HasField("ended"):
                self.ended = msg.ended
                break
            self.out += msg.output
        assert mark in self.out, self.out
        return self.out

    def detach(self) -> None:
        self.call.cancel()
        self.requests.put(None)


def test_input_reaches_the_job_across_dump_and_restore(daemon: Daemon) -> None:
    jid, back = unique_jid("din"), unique_jid("dib")
    with daemon.client() as stub:
        job = stub.Run(run_req(jid, "sh", "-c", ECHO, stdin=True)).job
        assert job.state == "running"
        first = Session(stub, jid)
        first.send(b"one\n")
        first.send(b"two\n")
        assert first.read_until(b"got two\n") == b"got one\ngot two\n"
        first.detach()  # the job must not see end-of-file: its controller holds the FIFO

        # A second client goes on where the first left off.
        second = Session(stub, jid)
        second.send(b"three\n")
        assert second.read_until(b"got three\n") == b"got one\ngot two\ngot three\n"
        second.detach()

        dumped = stub.Dump(pb.DumpReq(jid=jid))
        assert dumped.job_state == "checkpointed"
        restored = stub.Restore(pb.RestoreReq(jid=jid, new_jid=back))
        assert restored.job == back and restored.state == "running"

        third = Session(stub, back)
        third.send(b"four\n")
        third.send(b"five\n", close=True)
        out = third.read_until(b"eof\n")
        # The restored job's log starts empty; it saw no end-of-file before close_stdin.
        assert out == b"got four\ngot five\neof\n"
        while third.ended is None:
            msg = next(third.call)
            if msg.HasField("ended"):
                third.ended = msg.ended
        assert (third.ended.state, third.ended.exit_code) == ("exited", 0)


@pytest.mark.parametrize("closed", [False, True], ids=["open", "closed-before-the-dump"])
def test_input_the_job_has_not_read_is_kept_by_the_checkpoint(
    daemon: Daemon, tmp_path: Path, closed: bool
) -> None:
    # The job reads one line, then waits for GO before reading on: what is sent
    # meanwhile sits in the FIFO when the job is dumped (CRIU saves a FIFO's data).
    # Input closed before the dump stays closed: the restored job reads the
    # line left, then end-of-file, as it would have without the checkpoint.
    go = tmp_path / "go"
    script = f'read -r a; echo "got $a"; until [ -e {go} ]; do sleep 0.05; done; {ECHO}'
    jid, back = unique_jid("dpk"), unique_jid("dpb")
    with daemon.client() as stub:
        stub.Run(run_req(jid, "sh", "-c", script, stdin=True))
        first = Session(stub, jid)
        first.send(b"one\npending\n", close=closed)
        assert first.read_until(b"got one\n") == b"got one\n"
        first.detach()
        assert stub.Dump(pb.DumpReq(jid=jid)).job_state == "checkpointed"
        stub.Restore(pb.RestoreReq(jid=jid, new_jid=back))
        go.touch()
        after = Session(stub, back)
        if closed:
            assert after.read_until(b"eof\n") == b"got pending\neof\n"
        else:
            after.send(b"after\n", close=True)
            assert after.read_until(b"eof\n") == b"got pending\ngot after\neof\n"


def test_a_job_without_input_reads_dev_null_and_refuses_input(daemon: Daemon) -> None:
    jid = unique_jid("dnn")
    with daemon.client() as stub:
        stub.Run(run_req(jid, "sh", "-c", "cat; echo done"))
        out = b""
        for msg in stub.Attach(iter([pb.AttachReq(jid=jid)]), timeout=WAIT):
            out += msg.output
        assert out == b"done\n"  # cat read /dev/null: end-of-file at once
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.Attach(iter([pb.AttachReq(jid=jid, stdin=b"x\n")]), timeout=WAIT))
        assert refused.value.details() == (
            f"job {jid} reads /dev/null: start it with 'cedana exec -i' to send it input"
        )


def typed(cli: Any, text: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``cedana ARGS`` with ``text`` on its standard input, as typed at a terminal."""
    return subprocess.run(
        [*CEDANA, *args],
        input=text,
        env=cli.env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


@pytest.mark.parametrize("where", ["daemon", "in-process"])
def test_cli_forwards_its_stdin(daemon: Daemon, where: str) -> None:
    cli = daemon.cli()
    flags = ["--no-server"] if where == "in-process" else []
    jid = unique_jid("dci")
    attached = typed(
        cli, "a\nb\n", *flags, "exec", "-i", "--jid", jid, "--attach", "--", "sh", "-c", ECHO
    )
    assert (attached.returncode, attached.stdout) == (0, "got a\ngot b\neof\n"), attached.stderr

    # Started detached, then fed by 'cedana job attach'; its end-of-file closes the input.
    later = unique_jid("dcl")
    assert cli.ok(*flags, "exec", "--attachable", "--jid", later, "--", "sh", "-c", ECHO) == (
        f"{later}\n"
    )
    fed = typed(cli, "c\n", *flags, "job", "attach", later)
    assert (fed.returncode, fed.stdout) == (0, "got c\neof\n"), fed.stderr

    # A restored -i job keeps its input: 'restore --attach' sends this stdin to it.
    dumped = unique_jid("dcd")
    cli.ok(*flags, "exec", "-i", "--jid", dumped, "--", "sh", "-c", ECHO)
    cli.ok(*flags, "dump", "job", dumped)
    restored = typed(
        cli, "d\n", *flags, "restore", "job", dumped, "--jid", unique_jid("dcr"), "--attach"
    )
    assert (restored.returncode, restored.stdout) == (0, "got d\neof\n"), restored.stderr


def fifo_writers(pid: int, fifo: Path) -> int:
    """How many of process ``pid``'s descriptors are open on ``fifo``."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            count += os.readlink(fd) == str(fifo)
    return count


def test_a_client_gone_while_the_job_does_not_read_leaves_no_writer_behind(
    daemon: Daemon,
) -> None:
    # The job never reads: the FIFO fills (64 KiB) and the daemon's write
    # waits. The client going away must end that wait, not leave the
    # daemon's thread and descriptor on the FIFO for as long as the job runs.
    jid = unique_jid("dfl")
    assert daemon.proc is not None
    fifo = daemon.state / "jobs" / jid / "stdin"
    with daemon.client() as stub:
        stub.Run(run_req(jid, "sleep", "600", stdin=True))
        session = Session(stub, jid)
        for _ in range(8):
            session.send(b"x" * 32768)
        wait_for(lambda: fifo_writers(daemon.proc.pid, fifo) == 1, "the daemon to write")
        session.detach()
        wait_for(lambda: fifo_writers(daemon.proc.pid, fifo) == 0, "the daemon to let go")
        assert stub.Get(pb.GetReq(jid=jid)).job.state == "running"
