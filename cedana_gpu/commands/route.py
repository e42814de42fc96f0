"""Where a verb's operation runs: through the daemon when it answers, else here.

``cedana --no-server ...`` always runs in this process. Every verb gets its
``Backend`` from ``backend(args)`` and formats what it returns, so the output
and the exit status are the same either way.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, BinaryIO

from cedana_gpu import config

if TYPE_CHECKING:  # imported when a verb runs: every CLI start imports this module
    from cedana_gpu.daemon.client import Backend
    from cedana_gpu.daemon.ops import Events


def settings(args: argparse.Namespace) -> config.Config:
    cfg = getattr(args, "cfg", None)
    if cfg is None:  # a handler called without cli.main (tests)
        cfg = args.cfg = config.load()
    return cfg


def backend(args: argparse.Namespace) -> Backend:
    """This command's backend, chosen once."""
    found: Backend | None = getattr(args, "_backend", None)
    if found is None:
        from cedana_gpu.daemon.client import backend as choose

        found = choose(settings(args), no_server=bool(getattr(args, "no_server", False)))
        args._backend = found
    return found


def job_input(backend: Backend, jid: str) -> BinaryIO | None:
    """This terminal's stdin when job ``jid`` reads input (started with ``-i``; its
    controller says so), for attach to send; else None."""
    live = backend.get(jid).live or {}
    return sys.stdin.buffer if live.get("stdin") else None


def report(line: str) -> None:
    print(f"cedana: {line}", file=sys.stderr)


def events() -> Events:
    """A dump's or restore's notes on stderr; progress bars when stderr is a terminal."""
    from cedana_gpu.daemon.ops import Events

    return Events(report=report, progress=None)
