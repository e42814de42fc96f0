"""``cedana ps``: the jobs of this user's state directory.

    cedana ps [--output table|json]

The table has one row per job: JOB, PID (its root process as the host sees
it), STATUS (``running``, ``exited (CODE)``, ``killed (SIGNAL)``, ``failed``),
GPU (the driver), ENGINE (the GPU engine: ``intercept`` or ``driver``) and LOG.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from cedana_gpu.commands import route
from cedana_gpu.commands.output import add_output_option, table
from cedana_gpu.jobs import lifecycle
from cedana_gpu.jobs.store import Job


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ps = subcommands.add_parser("ps", help="list jobs", description="List jobs.")
    add_output_option(ps)
    ps.set_defaults(handler=cmd_ps)


def format_jobs(jobs: Sequence[Job]) -> str:
    rows = [("JOB", "PID", "STATUS", "GPU", "ENGINE", "LOG")]
    rows += [
        (
            j.jid,
            str(j.pid) if j.pid else "-",
            lifecycle.describe(j),
            j.driver if j.gpu and j.driver else "-",
            j.gpu_engine or "-",
            j.log_path or "-",
        )
        for j in jobs
    ]
    return table(rows)


def cmd_ps(args: argparse.Namespace) -> int:
    jobs = route.backend(args).jobs()
    if args.output == "json":
        print(json.dumps([dict(j.to_json(), status=lifecycle.describe(j)) for j in jobs], indent=2))
    else:
        print(format_jobs(jobs))
    return 0
