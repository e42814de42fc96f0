"""``cedana checkpoint``: the checkpoints of every job.

cedana checkpoint list [ID] [--output table|json]   all jobs' (or job ID's), oldest first
cedana checkpoint inspect CKPT                       its record and manifest, as JSON
cedana checkpoint delete CKPT                        its files, then its record
cedana checkpoint prune [ID] --keep N                all but the newest N of each job
"""

from __future__ import annotations

import argparse
import json

from cedana_gpu.commands import CommandError, route
from cedana_gpu.commands.job import format_checkpoints
from cedana_gpu.commands.output import add_output_option


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ckpt = subcommands.add_parser(
        "checkpoint", help="list, inspect, delete checkpoints", description="Checkpoints."
    )
    commands = ckpt.add_subparsers(
        title="commands", dest="checkpoint_command", metavar="COMMAND", required=True
    )
    listing = commands.add_parser("list", help="list checkpoints", description="List checkpoints.")
    listing.add_argument("jid", metavar="ID", nargs="?", help="only this job's")
    add_output_option(listing)
    listing.set_defaults(handler=cmd_list)
    inspect = commands.add_parser(
        "inspect", help="a checkpoint as JSON", description="A checkpoint's record and manifest."
    )
    inspect.add_argument("cid", metavar="CHECKPOINT")
    inspect.set_defaults(handler=cmd_inspect)
    delete = commands.add_parser(
        "delete", help="delete a checkpoint", description="Delete a checkpoint (files and record)."
    )
    delete.add_argument("cid", metavar="CHECKPOINT")
    delete.set_defaults(handler=cmd_delete)
    prune = commands.add_parser(
        "prune",
        help="keep only the newest checkpoints",
        description="Delete all but the newest N checkpoints of each job (or of job ID).",
    )
    prune.add_argument("jid", metavar="ID", nargs="?")
    prune.add_argument("--keep", type=int, required=True, metavar="N")
    prune.set_defaults(handler=cmd_prune)


def cmd_list(args: argparse.Namespace) -> int:
    found = route.backend(args).checkpoints(args.jid, route.report)
    if args.output == "json":
        print(json.dumps([c.to_json() for c in found], indent=2))
    else:
        print(format_checkpoints(found))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    print(json.dumps(route.backend(args).get_checkpoint(args.cid).to_json(), indent=2))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    ckpt = route.backend(args).delete_checkpoint(args.cid)
    print(f"deleted checkpoint {ckpt.id} ({ckpt.path})")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    if args.keep < 0:
        raise CommandError("--keep cannot be negative")
    for ckpt in route.backend(args).prune(args.jid, args.keep):
        print(f"deleted checkpoint {ckpt.id} ({ckpt.path})")
    return 0
