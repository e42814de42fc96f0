"""``cedana job``: one job at a time.

cedana job kill ID      SIGKILL the job (its whole PID namespace); recorded as killed
cedana job inspect ID   the job's record as JSON, with its controller's live
                        ``info`` under "live" while it runs
cedana job checkpoints ID [--output table|json]
                        the job's checkpoints: id, size, time, options
cedana job attach ID [--no-stdin]
                        the job's output from its start until it ends; its exit status;
                        a job started with -i also gets this terminal's input
cedana job freeze|unfreeze ID
                        stop / resume a GPU job's GPU work (the daemon holds it)
cedana job delete ID [--checkpoints]
                        remove an ended job's record and logs (and its checkpoints)
cedana job policy ID --checkpoint-every DURATION [--keep N]
                        periodic checkpoints of a running job, by the daemon
                        (``--checkpoint-every 0`` stops them)
"""

from __future__ import annotations

import argparse
import json
import time

from cedana_gpu.commands import CommandError, route
from cedana_gpu.commands.output import add_output_option, table
from cedana_gpu.jobs import lifecycle
from cedana_gpu.jobs.store import Checkpoint


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
    attach = commands.add_parser(
        "attach",
        help="follow a job's output until it ends",
        description="Print the job's output from its start until it ends; exit with its status.",
    )
    attach.add_argument("jid", metavar="ID")
    attach.add_argument(
        "--no-stdin",
        action="store_true",
        help="do not send this terminal's input to a job started with -i",
    )
    attach.set_defaults(handler=cmd_attach)
    for verb, frozen in (("freeze", True), ("unfreeze", False)):
        p = commands.add_parser(
            verb,
            help=f"{verb} a GPU job's GPU work (daemon)",
            description=f"{verb.capitalize()} a running GPU job's GPU work; the daemon holds "
            "a frozen job until 'cedana job unfreeze'.",
        )
        p.add_argument("jid", metavar="ID")
        p.set_defaults(handler=cmd_freeze, frozen=frozen)
    delete = commands.add_parser(
        "delete",
        help="remove an ended job",
        description="Remove an ended job's record and its logs; with --checkpoints, "
        "its checkpoints too.",
    )
    delete.add_argument("jid", metavar="ID")
    delete.add_argument(
        "--checkpoints", action="store_true", help="also delete the job's checkpoints"
    )
    delete.set_defaults(handler=cmd_delete)
    policy = commands.add_parser(
        "policy",
        help="periodic checkpoints of a running job (daemon)",
        description="Have the daemon dump a running job (leaving it running) periodically, "
        "keeping the newest N checkpoints. --checkpoint-every 0 stops it.",
    )
    policy.add_argument("jid", metavar="ID")
    policy.add_argument("--checkpoint-every", required=True, metavar="DURATION")
    policy.add_argument("--keep", type=int, default=0, metavar="N")
    policy.set_defaults(handler=cmd_policy)


def cmd_kill(args: argparse.Namespace) -> int:
    job = route.backend(args).kill(args.jid)
    print(f"{job.jid} {lifecycle.describe(job)}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    print(json.dumps(route.backend(args).get(args.jid).to_json(), indent=2))
    return 0


def cmd_attach(args: argparse.Namespace) -> int:
    import sys

    backend = route.backend(args)
    stdin = None if args.no_stdin else route.job_input(backend, args.jid)
    job = backend.attach(args.jid, sys.stdout.buffer, stdin)
    if job.state == "failed" and job.error:
        print(f"cedana: job {job.jid} failed: {job.error}", file=sys.stderr)
    return lifecycle.exit_status(job)


def cmd_freeze(args: argparse.Namespace) -> int:
    route.backend(args).freeze(args.jid, frozen=args.frozen)
    print(f"{args.jid} {'frozen' if args.frozen else 'unfrozen'}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    removed = route.backend(args).delete(args.jid, checkpoints=args.checkpoints)
    print(f"deleted job {args.jid}" + (f" and {len(removed)} checkpoint(s)" if removed else ""))
    return 0


def cmd_policy(args: argparse.Namespace) -> int:
    from cedana_gpu.daemon.periodic import parse_duration

    text = args.checkpoint_every.strip()
    try:
        every = 0.0 if text in ("0", "0s", "off") else parse_duration(text)
    except ValueError:
        raise CommandError(f"--checkpoint-every {text!r}: give a duration (90s, 5m, 1h)") from None
    if args.keep < 0:
        raise CommandError("--keep cannot be negative")
    job = route.backend(args).set_policy(args.jid, every, args.keep)
    if every:
        print(f"job {job.jid}: a checkpoint every {every:g} s, keeping {args.keep or 'all'}")
    else:
        print(f"job {job.jid}: no periodic checkpoints")
    return 0


def format_checkpoints(found: list[Checkpoint]) -> str:
    from cedana_gpu.checkpoint.progress import human_bytes

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
    return table(rows)


def cmd_checkpoints(args: argparse.Namespace) -> int:
    found = route.backend(args).checkpoints(args.jid, route.report)
    if args.output == "json":
        print(json.dumps([c.to_json() for c in found], indent=2))
        return 0
    print(format_checkpoints(found))
    return 0
