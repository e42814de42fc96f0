"""``cedana check`` (also ``cedana health``): is this node ready?

    cedana check [--output text|json]

One line per check: OK, WARN or FAIL, what was found and, for the others,
what to do: the native build, root, CRIU and ``criu check``, the kernel's
namespaces, the fake and NVIDIA drivers and the GPUs, /dev/shm, the state
directory, and the daemon. Through the daemon (HealthCheck RPC) when one
answers. Exit status 1 when a check FAILs.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from cedana_gpu.commands import route
from cedana_gpu.commands.output import add_output_option

if TYPE_CHECKING:
    from cedana_gpu.daemon.health import Result


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name in ("check", "health"):
        parser = subcommands.add_parser(
            name,
            help="check that this node can run, dump and restore GPU jobs"
            + (" (same as check)" if name == "health" else ""),
            description="Check CRIU, the kernel, the drivers and GPUs, /dev/shm, the state "
            "directory and the daemon. Exit status 1 when a check fails.",
        )
        add_output_option(parser, human="text")
        parser.set_defaults(handler=cmd_check)


def _daemon_line(args: argparse.Namespace, where: str) -> Result:
    from cedana_gpu.daemon.health import OK, WARN, Result

    cfg = route.settings(args)
    if where == "daemon":
        return Result("daemon", OK, f"answers at {cfg['address']}")
    if getattr(args, "no_server", False):
        return Result("daemon", OK, "not asked (--no-server)")
    return Result(
        "daemon",
        WARN,
        f"none answers at {cfg['address']}: commands run in-process",
        "start one with 'cedana daemon start' (periodic checkpoints need it)",
    )


def cmd_check(args: argparse.Namespace) -> int:
    from cedana_gpu.daemon.health import FAIL, OK

    backend = route.backend(args)
    results = [*backend.health(), _daemon_line(args, backend.where)]
    if args.output == "json":
        print(json.dumps([r.to_json() for r in results], indent=2))
    else:
        width = max(len(r.name) for r in results)
        for r in results:
            line = f"{r.status:<4}  {r.name:<{width}}  {r.detail}"
            if r.hint and r.status != OK:
                line += f" ({r.hint})"
            print(line)
    return 1 if any(r.status == FAIL for r in results) else 0
