"""A daemon of the test's own, and a gRPC client generated from the shipped proto.

Each test gets its own state directory, socket path (never /run/cedana.sock)
and job ids, so the daemon tests run in parallel with each other and with
the rest of the suite. Nothing here measures time: waits are bounded only so
that a hang fails the test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
from cr_helpers import REPO, Cedana, alive, clean_env, wait_for

from cedana_gpu.daemon.proto import daemon_pb2 as pb
from cedana_gpu.daemon.proto import daemon_pb2_grpc as pb_grpc

STOP_TIMEOUT = 60.0
POOL_ENV = "CEDANA_TEST_POOL_SIZE"
"""Set (e.g. to 1), every test daemon keeps that many standby controllers."""

# Prints its lines slowly enough to be dumped while it runs, then ends by itself.
COUNTER = 'i=0; while [ "$i" -lt "$1" ]; do echo "n $i"; i=$((i + 1)); sleep 0.05; done; echo end'


class Daemon:
    """``cedana daemon start`` in a process of its own, with the test's state and socket."""

    def __init__(self, tmp: Path, **env: str) -> None:
        self.tmp = tmp
        self.state = tmp / "state"
        self.socket = tmp / "d.sock"
        self.hooks = tmp / "hooks"
        self.hooks.mkdir(parents=True, exist_ok=True)
        self.extra = dict(env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.out = tmp / "daemon.out"

    def env(self, **extra: str) -> dict[str, str]:
        own = {"CEDANA_ADDRESS": str(self.socket), "CEDANA_TEST_PHASE_HOOK": str(self.hooks)}
        if os.environ.get(POOL_ENV):
            # The whole daemon suite again with a warm controller pool of fake controllers.
            own.update(CEDANA_GPU_POOL_SIZE=os.environ[POOL_ENV], CEDANA_GPU_DRIVER="fake")
        return clean_env(self.state, **{**own, **self.extra, **extra})

    @property
    def target(self) -> str:
        address = self.env().get("CEDANA_ADDRESS", "")
        return address if self.env().get("CEDANA_PROTOCOL") == "tcp" else f"unix:{address}"

    def start(self, wait: bool = True) -> Daemon:
        with open(self.out, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cedana_gpu", "daemon", "start"],
                env=self.env(),
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            wait_for(self.answers, f"the daemon to answer at {self.target}")
            if os.environ.get(POOL_ENV):
                pool = self.state / "pool"
                wait_for(lambda: any(pool.glob("*.sock")), "the daemon's pool to be warm")
        return self

    def answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the daemon exited: {self.output()}")
        try:
            with self.client() as stub:
                stub.HealthCheck(pb.HealthCheckReq(), timeout=2, metadata=self.metadata())
            return True
        except grpc.RpcError:
            return False

    def metadata(self) -> tuple[tuple[str, str], ...]:
        token = self.env().get("CEDANA_AUTH_TOKEN")
        return (("authorization", f"Bearer {token}"),) if token else ()

    def output(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    @contextlib.contextmanager
    def client(self, **env: str) -> Iterator[Any]:
        """A stub; with TLS when the daemon's environment (or ``env``) configures it."""
        from cedana_gpu import config
        from cedana_gpu.daemon import tls

        channel = tls.channel(config.load(env=self.env(**env)), self.target)
        try:
            yield pb_grpc.DaemonStub(channel)
        finally:
            channel.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            # Say what it was waiting for (its threads' stacks, SIGUSR1), then end it.
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGUSR1)
            time.sleep(1)
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            raise AssertionError(
                f"the daemon did not stop in {STOP_TIMEOUT:g} s:\n{self.output()[-12000:]}"
            ) from None
        self.proc = None

    def cli(self) -> Cedana:
        """``cedana`` with the daemon's state directory and address."""
        return DaemonCedana(self)


class DaemonCedana(Cedana):
    def __init__(self, daemon: Daemon) -> None:
        super().__init__(daemon.state)
        self.daemon = daemon

    def env(self, **extra: str) -> dict[str, str]:
        return self.daemon.env(**extra)


def run_req(jid: str, *cmd: str, cwd_override: str | None = None, **fields: Any) -> Any:
    env = clean_env()
    return pb.RunReq(
        cmd=list(cmd),
        jid=jid,
        env=[f"{k}={v}" for k, v in env.items()],
        cwd=cwd_override or str(REPO),
        **fields,
    )


def counter_req(jid: str, n: int, **fields: Any) -> Any:
    return run_req(jid, "sh", "-c", COUNTER, "counter", str(n), **fields)


def ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return int(stat[stat.rfind(b")") + 2 :].split()[1])


def wait_gone(pid: int | None) -> None:
    wait_for(lambda: not alive(pid), f"process {pid} to end")


def kill_jobs(daemon: Daemon) -> None:
    """Test clean-up: every job of the daemon's state still running is killed (in-process)."""
    Cedana(daemon.state).kill_all()


@contextlib.contextmanager
def running(daemon: Daemon) -> Iterator[Daemon]:
    """``daemon`` started; at the end its jobs killed and the daemon stopped (a
    fixture's body: ``with running(Daemon(tmp_path)) as d: yield d``)."""
    daemon.start()
    try:
        yield daemon
    finally:
        kill_jobs(daemon)
        daemon.stop()
