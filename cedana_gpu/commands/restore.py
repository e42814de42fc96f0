"""``cedana restore``: bring a checkpointed job back as a new job.

    cedana restore job ID [--path P] [--jid NEW] [--attach] [--output text|json]
                          [--gpu-map OLD=NEW ...]

Default: job ID's latest checkpoint. ``--path`` restores any checkpoint
directory or archive (e.g. one copied from another machine; ID is then only a
label and may be omitted with ``restore job --path P``); compression and
stream count are read from the checkpoint. The checkpoint is verified before
anything starts. The same checkpoint can be restored more than once, each
under its own job id. Needs root (CRIU).

A checkpoint of the driver engine goes back onto the GPUs it was made on
when this machine has them, else onto GPUs of the same model (by UUID, as the
driver remaps them); ``--gpu-map OLD=NEW`` (UUIDs or indices, repeatable)
says where each goes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cedana_gpu.commands import CommandError, route
from cedana_gpu.commands.exec import GPU_DRIVERS
from cedana_gpu.commands.output import add_output_option
from cedana_gpu.jobs import lifecycle


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    restore = subcommands.add_parser(
        "restore",
        help="restore a job from a checkpoint (root)",
        description="Restore a job from a checkpoint as a new job.",
    )
    kinds = restore.add_subparsers(
        title="kinds", dest="restore_kind", metavar="KIND", required=True
    )
    job = kinds.add_parser(
        "job",
        help="restore a job's latest checkpoint, or any checkpoint with --path",
        description="Restore job ID's latest checkpoint, or the checkpoint at --path.",
    )
    job.add_argument("jid", metavar="ID", nargs="?", help="the dumped job (optional with --path)")
    job.add_argument("--path", "-p", type=Path, help="a checkpoint directory or archive")
    job.add_argument("--jid", dest="new_jid", help="the restored job's id (default: a new one)")
    job.add_argument(
        "--attach",
        "-a",
        action="store_true",
        help="stream the restored job's output until it ends and return its exit status",
    )
    job.add_argument(
        "--gpu-driver",
        choices=GPU_DRIVERS,
        default=None,
        help="the driver the new controller uses (default: the one the job had)",
    )
    job.add_argument(
        "--gpu-map",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="driver engine checkpoints: restore the checkpoint's GPU OLD onto this "
        "machine's GPU NEW (UUIDs or indices; repeatable; default: the same GPUs, else "
        "GPUs of the same model)",
    )
    job.add_argument(
        "--signing-key",
        type=Path,
        metavar="FILE",
        help="accept only checkpoints signed with this key "
        "(default: $CEDANA_CHECKPOINT_SIGNING_KEY, if set)",
    )
    job.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="with a signing key, accept an unsigned checkpoint too",
    )
    add_output_option(job, human="text")
    job.set_defaults(handler=cmd_restore)


def cmd_restore(args: argparse.Namespace) -> int:
    from cedana_gpu.daemon.ops import RestoreSpec

    if args.jid is None and args.path is None:
        raise CommandError("name a job (restore job ID) or a checkpoint (--path P)")
    backend = route.backend(args)
    doc = backend.restore(
        RestoreSpec(
            jid=args.jid,
            path=args.path.absolute() if args.path else None,
            new_jid=args.new_jid,
            driver=args.gpu_driver,
            signing_key=args.signing_key,
            allow_unsigned=args.allow_unsigned,
            gpu_map=list(getattr(args, "gpu_map", None) or []),
        ),
        route.events(),
    )
    if args.output == "json":
        print(json.dumps(doc, indent=2), flush=True)
    elif not args.attach:
        print(doc["job"])
    else:
        print(f"restored {doc['path']} as job {doc['job']} (pid {doc['pid']})", file=sys.stderr)
    if not args.attach:
        return 0
    sys.stdout.flush()
    # A job started with -i is restored with its input: this terminal's goes to it.
    job = backend.attach(doc["job"], sys.stdout.buffer, route.job_input(backend, doc["job"]))
    if job.state == "failed" and job.error:
        print(f"cedana: job {job.jid} failed: {job.error}", file=sys.stderr)
    return lifecycle.exit_status(job)
