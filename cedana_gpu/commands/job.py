"""``cedana job``: one job at a time.

cedana job kill ID      SIGKILL the job (its whole PID namespace); recorded as killed
cedana job inspect ID   the job's record as JSON, with its controller's live
                        ``info`` under "live" while it runs
cedana job checkpoints ID [--output table|json]
                        the job's checkpoints: id, size, time, options
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from cedana_gpu.commands.output import add_output_option, table
from cedana_gpu.controller import control
from cedana_gpu.jobs import lifecycle

INFO_TIMEOUT = 10.0


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    job = subcommands.add_parser("job", help="inspect or kill a job", description="Manage a job.")
    commands = job.add_subparsers(
        title="commands", dest="job_command", metavar="COMMAND", required=True
    )
    kill = commands.add_parser(
        "kill", help="kill a job", description="SIGKILL a job: every process of it."
    )
    kill.add_argument("jid", metavar="ID")
    kill.set_defaults(handler=cmd_kill)
    inspect = commands.add_parser(
        "inspect",
        help="show a job as JSON",
        description="Show a job's record as JSON, with its controller's live info while it runs.",
    )
    inspect.add_argument("jid", metavar="ID")
    inspect.set_defaults(handler=cmd_inspect)
    checkpoints = commands.add_parser(
        "checkpoints",
        help="list a job's checkpoints",
        description="List a job's checkpoints with their size, time and options.",
    )
    checkpoints.add_argument("jid", metavar="ID")
    add_output_option(checkpoints)
    checkpoints.set_defaults(handler=cmd_checkpoints)


def cmd_kill(args: argparse.Namespace) -> int:
    _state, store = lifecycle.open_store()
    with store:
        job = lifecycle.kill_job(store, args.jid)
    print(f"{job.jid} {lifecycle.describe(job)}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    state, store = lifecycle.open_store()
    with store:
        job = lifecycle.refresh(store, store.require(args.jid))
    doc = dict(job.to_json(), status=lifecycle.describe(job), live=None)
    if job.active:
        try:
            doc["live"] = control.control_request(
                job.jid, {"op": "info"}, timeout=INFO_TIMEOUT, state=state
            )
            doc["live"].pop("ok", None)
        except control.ControlError as e:
            doc["live_error"] = str(e)
    print(json.dumps(doc, indent=2))
    return 0


def cmd_checkpoints(args: argparse.Namespace) -> int:
    from cedana_gpu.checkpoint.progress import human_bytes
    from cedana_gpu.cr import recovery

    state, store = lifecycle.open_store()
    with store:
        store.require(args.jid)
        recovery.recover(
            store, state, args.jid, lambda line: print(f"cedana: {line}", file=sys.stderr)
        )
        found = store.checkpoints(args.jid)
    if args.output == "json":
        print(json.dumps([c.to_json() for c in found], indent=2))
        return 0
    rows = [("CHECKPOINT", "CREATED", "SIZE", "COMPRESSION", "STREAMS", "LEFT RUNNING", "PATH")]
    rows += [
        (
            c.id,
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c.created)),
            human_bytes(c.size),
            c.compression,
            str(c.streams),
            "yes" if c.leave_running else "no",
            c.path,
        )
        for c in found
    ]
    print(table(rows))
    return 0
