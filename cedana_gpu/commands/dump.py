"""``cedana dump``: checkpoint a job (GPU state by its controller, CPU state by CRIU).

    cedana dump job ID [--dir D] [--compression none|tar|lz4|gzip|zlib]
                       [--stream N] [--leave-running] [--output text|json]
    cedana dump process PID [same options]     (a job started with 'cedana exec')

Prints the checkpoint's path, its size and the time of each phase (freeze,
GPU dump, CRIU dump, archive). Without ``--leave-running`` the job ends once
its checkpoint is complete (recorded as ``checkpointed``); with it, it runs
on. A dump that fails leaves the job running and no checkpoint behind.
Needs root (CRIU). Without the flags, ``--compression``, ``--stream``,
``--leave-running`` and ``--dir`` take the configured ``checkpoint.compression``,
``checkpoint.stream``, ``criu.leave_running`` and ``checkpoint.dir``
(``cedana config show``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cedana_gpu.commands import route
from cedana_gpu.commands.output import add_output_option

COMPRESSIONS = ("none", "tar", "lz4", "gzip", "zlib")
PHASES = (
    ("freeze", "freeze"),
    ("gpu_dump", "gpu dump"),
    ("criu_dump", "criu dump"),
    ("write", "write"),
    ("verify", "verify"),
    ("archive", "archive"),
    ("sync", "sync"),
    ("commit", "commit"),
    ("total", "total"),
)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir",
        "-d",
        type=Path,
        help="directory to put the checkpoint in (default: <state>/checkpoints/<job>)",
    )
    parser.add_argument(
        "--compression",
        "-c",
        choices=COMPRESSIONS,
        default=None,
        help="none: a directory; tar: one archive; lz4/gzip/zlib: one archive with the "
        "device memory and CRIU images compressed (default: checkpoint.compression, none)",
    )
    parser.add_argument(
        "--stream",
        dest="streams",
        type=int,
        default=None,
        metavar="N",
        help="write device memory as N shards in parallel, 1 to 64 (default: checkpoint.stream, 1)",
    )
    parser.add_argument(
        "--signing-key",
        type=Path,
        metavar="FILE",
        help="sign the checkpoint with this key (default: $CEDANA_CHECKPOINT_SIGNING_KEY, if set)",
    )
    parser.add_argument(
        "--leave-running",
        action="store_true",
        default=None,
        help="keep the job running after the dump (default: criu.leave_running, false: "
        "it ends, checkpointed)",
    )
    parser.add_argument(
        "--gpu-storage",
        choices=("auto", "host", "custom"),
        default=None,
        help="driver engine: host stages the GPU memory in the job's memory (CRIU's pages); "
        "custom copies it into the shards (driver r615+); auto: custom where the driver "
        "offers it (default: gpu.storage, auto)",
    )
    add_output_option(parser, human="text")


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dump = subcommands.add_parser(
        "dump",
        help="checkpoint a job (root)",
        description="Checkpoint a job: its GPU state and, with CRIU, its processes.",
    )
    kinds = dump.add_subparsers(title="kinds", dest="dump_kind", metavar="KIND", required=True)
    job = kinds.add_parser("job", help="dump a job by id", description="Dump a job by its id.")
    job.add_argument("jid", metavar="ID")
    _options(job)
    job.set_defaults(handler=cmd_dump)
    process = kinds.add_parser(
        "process",
        help="dump a job by its pid",
        description="Dump the job (started with 'cedana exec') whose process is PID.",
    )
    process.add_argument("pid", metavar="PID", type=int)
    _options(process)
    process.set_defaults(handler=cmd_dump)


def format_result(doc: dict[str, Any]) -> str:
    from cedana_gpu.checkpoint.progress import human_bytes

    lines = [
        f"checkpoint {doc['checkpoint']} of job {doc['job']}",
        f"path: {doc['path']}",
        f"size: {human_bytes(doc['size'])} ({doc['size']} bytes)"
        + (f", device memory {human_bytes(doc['gpu_bytes'])}" if doc.get("gpu_bytes") else ""),
        f"compression: {doc['compression']}, streams: {doc['streams']}, "
        f"job {'left running' if doc['leave_running'] else doc['job_state']}",
    ]
    phases = doc.get("phases") or {}
    for key, label in PHASES:
        if key in phases:
            lines.append(f"  {label:<10} {phases[key]:8.3f} s")
    return "\n".join(lines)


def cmd_dump(args: argparse.Namespace) -> int:
    from cedana_gpu.daemon.ops import DumpSpec

    # Unset flags take the configured value (flag > CEDANA_* > file > default);
    # a flag's own value is checked by the dump, whose messages name the flag.
    cfg = route.settings(args)
    compression = args.compression or cfg["checkpoint.compression"]
    streams = args.streams if args.streams is not None else cfg["checkpoint.stream"]
    leave_running = bool(args.leave_running or cfg["criu.leave_running"])
    directory = args.dir
    if directory is None and cfg["checkpoint.dir"] and args.dump_kind == "job":
        directory = Path(cfg["checkpoint.dir"]) / args.jid
    doc = route.backend(args).dump(
        DumpSpec(
            jid=args.jid if args.dump_kind == "job" else None,
            pid=args.pid if args.dump_kind == "process" else None,
            directory=directory.absolute() if directory else None,
            compression=compression,
            streams=streams,
            leave_running=leave_running,
            signing_key=args.signing_key,
            gpu_storage=args.gpu_storage or cfg["gpu.storage"],
        ),
        route.events(),
    )
    if args.output == "json":
        print(json.dumps(doc, indent=2))
    else:
        print(format_result(doc))
    return 0
