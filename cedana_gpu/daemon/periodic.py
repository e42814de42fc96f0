"""Periodic checkpoints: the daemon dumps a job leave-running every N seconds.

As Cedana's ``heartbeat-checkpoint``: a job with a policy (``exec
--checkpoint-every 5m --keep 3``, or the SetCheckpointPolicy RPC) is dumped
with ``--leave-running`` at each tick, with the daemon's configured
compression and streams, and then only its newest ``keep`` checkpoints are
kept, so ``cedana restore job ID`` takes the newest good one. A failed dump
is logged and tried again at the next tick; the dump pipeline leaves the
job running whatever happens. A tick that finds the job busy (another dump)
is skipped. A job that has ended loses its policy.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cedana_gpu.config import Config
from cedana_gpu.daemon import ops
from cedana_gpu.errors import CedanaError
from cedana_gpu.jobs import lifecycle
from cedana_gpu.jobs.store import JobStore


class Host(Protocol):
    """What the scheduler needs of the daemon (``server.Daemon``)."""

    cfg: Config

    def store(self) -> contextlib.AbstractContextManager[JobStore]: ...
    def is_busy(self, jid: str) -> bool: ...
    def launch(self, name: str, work: Callable[[ops.Events], Any]) -> Any: ...
    def dump(self, spec: ops.DumpSpec, events: ops.Events) -> dict[str, Any]: ...


log = logging.getLogger("cedana.daemon.periodic")
TICK = 0.1
"""How often the scheduler looks at the policies (seconds)."""


@dataclass
class _Policy:
    every: float
    keep: int
    due: float
    running: bool = False


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``5m``, ``1h``, ``1.5m`` to seconds; ValueError otherwise."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    text = text.strip().lower()
    scale = units.get(text[-1:])
    number = text[:-1] if scale is not None else text
    value = float(number) * (scale or 1.0)
    if value <= 0:
        raise ValueError("must be more than 0")
    return value


class Scheduler:
    """The daemon's periodic dumps (one thread; each dump an operation of the daemon)."""

    def __init__(self, daemon: Host) -> None:
        self.daemon = daemon
        self._policies: dict[str, _Policy] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def set(self, jid: str, every: float, keep: int) -> None:
        """Dump ``jid`` every ``every`` seconds from now (0: no more) and persist it."""
        with self._lock:
            if every <= 0:
                self._policies.pop(jid, None)
            else:
                self._policies[jid] = _Policy(every, keep, time.monotonic() + every)
        with self.daemon.store() as store:
            if store.get(jid) is not None:
                store.set_policy(jid, every, keep)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="periodic", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(TICK):
            now = time.monotonic()
            with self._lock:
                due = [
                    (jid, p) for jid, p in self._policies.items() if p.due <= now and not p.running
                ]
                for _jid, p in due:
                    p.running = True
            for jid, p in due:
                self._launch(jid, p)

    def _launch(self, jid: str, policy: _Policy) -> None:
        def work(events: ops.Events) -> None:
            try:
                self._tick(jid, policy, events)
            finally:
                with self._lock:
                    policy.running = False
                    policy.due = time.monotonic() + policy.every

        self.daemon.launch(f"periodic-dump-{jid}", work)

    def _tick(self, jid: str, policy: _Policy, events: ops.Events) -> None:
        d = self.daemon
        with d.store() as store:
            job = store.get(jid)
            if job is None or not lifecycle.refresh(store, job).active:
                log.info("job %s has ended: its periodic checkpoints stop", jid)
                self.set(jid, 0, 0)
                return
        if d.is_busy(jid):
            log.info("job %s is busy: its periodic checkpoint waits for the next tick", jid)
            return
        where = d.cfg["checkpoint.dir"]
        spec = ops.DumpSpec(
            jid=jid,
            directory=Path(where) / jid if where else None,
            compression=d.cfg["checkpoint.compression"],
            streams=d.cfg["checkpoint.stream"],
            leave_running=True,
            gpu_storage=d.cfg["gpu.storage"],
        )
        try:
            doc = d.dump(spec, events)
        except CedanaError as e:
            log.warning("periodic checkpoint of job %s failed: %s", jid, e)
            return
        log.info("periodic checkpoint %s of job %s", doc["checkpoint"], jid)
        if policy.keep > 0:
            with d.store() as store:
                for gone in ops.prune(store, jid, policy.keep):
                    log.info("removed checkpoint %s of job %s (keep %d)", gone.id, jid, policy.keep)
