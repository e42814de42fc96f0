"""The daemon's warm controller pool (``gpu.pool_size``).

The daemon keeps ``size`` controllers of each driver kind it serves on
standby (``controller/standby.py``: interpreter, imports, driver and
dispatcher loaded, ``cuInit`` done), so ``exec --gpu`` and ``restore`` skip
that part of a controller's start-up. ``lifecycle.start_job`` asks the pool
(``take``) before it starts a controller itself; a standby is handed out only
when it is alive, answers, was made for the job's driver and interpreter and
agrees with the job's environment on what it has read already
(``standby.prepare_env``); otherwise the job gets a fresh controller and the
daemon's log says why. The keeper thread replaces standbys that died (never
handing them out) and refills after each adoption; ``close`` ends them all.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cedana_gpu.controller import standby
from cedana_gpu.jobs import lifecycle, statedir

log = logging.getLogger("cedana.daemon.pool")

KEEP_INTERVAL = 0.5
RETRY_MIN, RETRY_MAX = 1.0, 60.0
"""After a standby failed to get ready, wait this long (doubling) before the next."""
REFILL_DELAY = 1.0
"""After an adoption, wait this long before starting the replacement: its
start-up would take the CPU from the job that was just handed a controller."""
STOP_GRACE = 5.0
ADOPT_TIMEOUT = 10.0
BOOTSTRAP_ARGS = 4
"""``controller_command``'s interpreter, ``-c``, bootstrap and package root."""


@dataclass(eq=False)
class Standby:
    kind: str
    proc: subprocess.Popen[bytes]
    socket: Path
    log: Path
    env: dict[str, str]

    @property
    def ready(self) -> bool:
        return self.proc.poll() is None and self.socket.exists()

    def tail(self) -> str:
        try:
            lines = [ln for ln in self.log.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()

    def forget(self) -> None:
        for path in (self.socket, self.log):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


@dataclass
class _Kind:
    standbys: list[Standby] = field(default_factory=list)
    retry_at: float = 0.0
    refill_at: float = 0.0
    backoff: float = RETRY_MIN


class ControllerPool:
    def __init__(
        self,
        size: int,
        state: Path,
        kinds: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        python: str | None = None,
    ) -> None:
        self.size = size
        self.dir = state / "pool"
        self.env = dict(os.environ if env is None else env)
        self.prefix = lifecycle.controller_command("x", state, "fake", ["x"], python)[
            :BOOTSTRAP_ARGS
        ]
        self._kinds: dict[str, _Kind] = {k: _Kind() for k in kinds}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.adopted = 0

    # ---- keeping it warm -------------------------------------------------------------

    def start(self) -> None:
        statedir.ensure_private_dir(self.dir)
        for old in self.dir.iterdir():  # a previous daemon's (its standbys died with it)
            with contextlib.suppress(OSError):
                old.unlink()
        self._thread = threading.Thread(target=self._keep, name="controller-pool", daemon=True)
        self._thread.start()

    def _keep(self) -> None:
        # Standbys are spawned from this thread only: they die with it (PDEATHSIG).
        while not self._stop.is_set():
            try:
                self._tend()
            except OSError as e:  # this thread must live on: its standbys die with it
                log.warning("controller pool: cannot start a standby controller: %s", e)
            self._wake.wait(KEEP_INTERVAL)
            self._wake.clear()

    def _tend(self) -> None:
        now = time.monotonic()
        with self._lock:
            for kind, k in self._kinds.items():
                for s in list(k.standbys):
                    if s.proc.poll() is not None:
                        k.standbys.remove(s)
                        why = s.tail() or f"exit status {s.proc.returncode}"
                        log.warning("controller pool: standby %s controller %d died: %s; "
                                    "replacing it", kind, s.proc.pid, why)  # fmt: skip
                        s.forget()
                        k.retry_at = now + k.backoff
                        k.backoff = min(k.backoff * 2, RETRY_MAX)
                    elif s.ready and k.backoff > RETRY_MIN:
                        k.backoff = RETRY_MIN
                due = max(k.retry_at, k.refill_at)
                while len(k.standbys) < self.size and now >= due and not self._stop.is_set():
                    k.standbys.append(self._spawn(kind))

    def _spawn(self, kind: str) -> Standby:
        name = secrets.token_hex(4)
        sock, out = self.dir / f"{kind}-{name}.sock", self.dir / f"{kind}-{name}.log"
        argv = [*self.prefix, "--standby", str(sock), "--driver", kind]
        with open(out, "wb") as f:
            proc = subprocess.Popen(
                [*argv, "--parent", str(os.getpid())],
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=f,
                env=self.env,
                start_new_session=True,
                close_fds=True,
            )
        return Standby(kind, proc, sock, out, standby.prepare_env(self.env))

    # ---- handing one out ----------------------------------------------------------------

    def take(
        self,
        jid: str,
        driver: str,
        command: Sequence[str],
        env: Mapping[str, str],
        cwd: str | None,
        log_path: Path,
    ) -> subprocess.Popen[bytes] | None:
        """A standby controller of ``driver``, adopted as job ``jid``'s controller
        (``command``, ``env``, ``cwd``: what a fresh start would get); None, with
        the reason logged, when none is ready or none fits."""
        why = self._unfit(driver, command)
        want = standby.prepare_env(env)
        while why is None:
            with self._lock:
                k = self._kinds.setdefault(driver, _Kind())
                ready = [s for s in k.standbys if s.ready]
                fits = [s for s in ready if s.env == want]
                if not fits:
                    why = self._none_fits(driver, k, ready, want)
                    break
                chosen = fits[0]
                k.standbys.remove(chosen)
                k.refill_at = time.monotonic() + REFILL_DELAY
            answer = self._adopt(chosen, jid, command, env, cwd, log_path)
            if answer is not None:
                self.adopted += 1
                held = ""
                if "va_base" in answer:
                    base, size = answer["va_base"], answer["va_size"]
                    held = f" (device range 0x{base:x}+0x{size:x} reserved)"
                log.info("job %s: adopted standby %s controller %d%s",
                         jid, driver, chosen.proc.pid, held)  # fmt: skip
                return chosen.proc
        log.info("job %s: a fresh controller: %s", jid, why)
        return None

    def _unfit(self, driver: str, command: Sequence[str]) -> str | None:
        if self._stop.is_set():
            return "the daemon is stopping"
        if driver not in ("fake", "system"):
            return f"no pool for driver {driver}"
        if list(command[:BOOTSTRAP_ARGS]) != self.prefix:
            return "the controller's interpreter differs from the pool's"
        return None

    def _none_fits(self, driver: str, k: _Kind, ready: list[Standby], want: dict[str, str]) -> str:
        if not ready:
            return f"no {driver} standby controller is ready ({len(k.standbys)} starting)"
        have = ready[0].env
        keys = sorted(n for n in set(have) | set(want) if have.get(n) != want.get(n))
        return f"the job's environment differs from the pool's in {', '.join(keys)}"

    def _adopt(
        self,
        s: Standby,
        jid: str,
        command: Sequence[str],
        env: Mapping[str, str],
        cwd: str | None,
        log_path: Path,
    ) -> dict[str, Any] | None:
        """The standby's answer once it took the job; None (and it is ended) if not."""
        doc = {
            "argv": list(command[BOOTSTRAP_ARGS:]),
            "env": dict(env),
            "cwd": cwd,
            "log": str(log_path),
        }
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(ADOPT_TIMEOUT)
                conn.connect(str(s.socket))
                conn.sendall(json.dumps(doc).encode() + b"\n")
                answer = json.loads(conn.makefile("rb").readline() or b"{}")
            if not isinstance(answer, dict):
                raise OSError(f"unexpected answer {answer}")
            if (
                not answer.get("ok")
                or answer.get("pid") != s.proc.pid
                or not all(isinstance(answer.get(k, 0), int) for k in ("va_base", "va_size"))
            ):
                raise OSError(answer.get("error") or f"unexpected answer {answer}")
        except (OSError, ValueError) as e:
            log.warning("job %s: standby controller %d did not take the job (%s): "
                        "ending it", jid, s.proc.pid, e)  # fmt: skip
            s.stop()
            s.forget()
            return None
        with contextlib.suppress(FileNotFoundError):
            s.log.unlink()
        return answer

    # ---- reporting and stopping --------------------------------------------------------

    def warm(self) -> dict[str, tuple[int, int]]:
        """Per driver kind: (ready standbys, pool size)."""
        with self._lock:
            return {
                kind: (sum(1 for s in k.standbys if s.ready), self.size)
                for kind, k in self._kinds.items()
            }

    def describe(self) -> str:
        parts = [f"{n}/{size} warm ({kind})" for kind, (n, size) in self.warm().items()]
        return "controller pool: " + (", ".join(parts) or "empty")

    def pids(self) -> list[int]:
        with self._lock:
            return [s.proc.pid for k in self._kinds.values() for s in k.standbys]

    def close(self) -> None:
        """End every standby (adopted controllers are the jobs' and stay)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=STOP_GRACE)
        with self._lock:
            every = [s for k in self._kinds.values() for s in k.standbys]
            for k in self._kinds.values():
                k.standbys.clear()
        for s in every:
            s.stop()
        deadline = time.monotonic() + STOP_GRACE
        for s in every:
            try:
                s.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait()
            s.forget()
        if every:
            log.info("controller pool: %d standby controller(s) ended", len(every))
