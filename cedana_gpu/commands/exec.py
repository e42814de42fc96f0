"""``cedana exec``: start a job (also ``cedana run process``, as Cedana users type it).

    cedana exec [--gpu] [--jid ID] [--attach] [-i] [--gpu-driver system|fake]
                [--gpu-engine auto|intercept|driver]
                [--persistent-mount DIR ...] [--checkpoint-every DURATION [--keep N]]
                -- CMD [ARGS...]
    cedana run process [--gpu-enabled] [--jid ID] [--attach] -- CMD [ARGS...]

Each job gets a controller process of its own, detached in its own session,
that starts the job (in its own PID namespace where it can), supervises it
and records its end in the job store. With ``--gpu`` the controller also
serves the job's CUDA calls: the interposer is injected into the job and
forwards every driver call to the controller over shared memory.

``--gpu-engine`` chooses how a GPU job is checkpointed (``cedana_gpu.engines``):
``intercept`` (the interposer, above), ``driver`` (the job loads the driver
itself and its controller uses the driver's own checkpoint API; any CUDA
program, NVIDIA's runtime and PyTorch included, on drivers that have the API),
or ``auto`` (default; also ``$CEDANA_GPU_ENGINE``): intercepted, handed to the
driver engine when the job turns out to need NVIDIA's runtime.

Without ``--attach`` the job id is printed and the command returns once the
job runs. With it, the job's output (its log) is streamed until the job ends,
and the job's exit status is returned; Ctrl-C kills the job.

``-i`` (``--interactive``, ``--attachable``), as ``docker run -i``: the job
reads input that attach sends (``jobs.job_stdin``: a FIFO held open, so no
end-of-file until the input is closed), not /dev/null; with ``--attach`` this
terminal's stdin is sent, and its end-of-file closes the job's input.

``--persistent-mount DIR`` (repeatable; also ``CEDANA_PERSISTENT_MOUNTS=/a,/b``)
makes DIR a tmpfs private to the job (root: the job gets a mount namespace of
its own), whose files travel in the job's checkpoints: for scratch files and
JIT caches a restored job expects to find as they were.

``--checkpoint-every 5m --keep 3`` (the daemon only): the daemon dumps the
job every 5 minutes, leaving it running, and keeps its newest 3 checkpoints.
"""

from __future__ import annotations

import argparse
import os
import sys

from cedana_gpu import engines
from cedana_gpu.commands import CommandError, route
from cedana_gpu.jobs import lifecycle

GPU_DRIVERS = ("system", "fake")
DRIVER_ENV = "CEDANA_GPU_DRIVER"
PERSISTENT_MOUNTS_ENV = "CEDANA_PERSISTENT_MOUNTS"


def _add_job_options(parser: argparse.ArgumentParser, gpu_flag: str) -> None:
    parser.add_argument(
        gpu_flag,
        dest="gpu",
        action="store_true",
        help="serve the job's CUDA calls through a GPU controller (inject the interposer)",
    )
    parser.add_argument("--jid", help="the job's id (default: a new random one)")
    parser.add_argument(
        "--attach",
        "-a",
        action="store_true",
        help="stream the job's output until it ends and return its exit status",
    )
    parser.add_argument(
        "--interactive",
        "--attachable",
        "-i",
        dest="stdin",
        action="store_true",
        help="the job reads input sent by attach (with --attach: this terminal's stdin) "
        "instead of /dev/null; it is kept across dump and restore",
    )
    parser.add_argument(
        "--gpu-driver",
        choices=GPU_DRIVERS,
        default=None,
        help=f"the driver the controller uses (default: ${DRIVER_ENV}, else system)",
    )
    parser.add_argument(
        "--gpu-engine",
        choices=engines.CHOICES,
        default=None,
        help=f"how the job's GPU state is checkpointed: the interposer (intercept), the "
        f"driver's own checkpoint API (driver), or auto (default: ${engines.ENGINE_ENV}, "
        f"else auto)",
    )
    parser.add_argument(
        "--persistent-mount",
        dest="persistent_mounts",
        action="append",
        default=[],
        metavar="DIR",
        help=f"make DIR a tmpfs private to the job, saved in its checkpoints (root; "
        f"repeatable; also ${PERSISTENT_MOUNTS_ENV}=/a,/b)",
    )
    parser.add_argument(
        "--checkpoint-every",
        metavar="DURATION",
        help="the daemon dumps the job, leaving it running, this often (90s, 5m, 1h)",
    )
    parser.add_argument(
        "--keep",
        type=int,
        default=0,
        metavar="N",
        help="with --checkpoint-every: keep the newest N checkpoints (default: all)",
    )
    parser.add_argument(
        "command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]", help="the job's command"
    )
    parser.set_defaults(handler=cmd_exec)


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    exec_parser = subcommands.add_parser(
        "exec",
        help="run a job (with --gpu: its CUDA calls served by a GPU controller)",
        description="Run a job under cedana. Without --attach, print its id and return.",
    )
    _add_job_options(exec_parser, "--gpu")

    run = subcommands.add_parser(
        "run", help="run a job (as 'cedana run process ...')", description="Run a job."
    )
    kinds = run.add_subparsers(title="kinds", dest="run_kind", metavar="KIND", required=True)
    process = kinds.add_parser(
        "process",
        help="run a process (same as 'cedana exec')",
        description="Run a process as a job; same as 'cedana exec' (--gpu-enabled is --gpu).",
    )
    _add_job_options(process, "--gpu-enabled")


def _driver(args: argparse.Namespace) -> str:
    if args.gpu_driver is not None:
        return args.gpu_driver
    from cedana_gpu.gpu_info import default_driver_kind

    return default_driver_kind("system")


def cmd_exec(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise CommandError("no command given: cedana exec [OPTIONS] -- CMD [ARGS...]")
    if args.gpu_driver is not None and not args.gpu:
        raise CommandError("--gpu-driver needs --gpu")
    if args.gpu_engine is not None and not args.gpu:
        raise CommandError("--gpu-engine needs --gpu")
    # flag > CEDANA_GPU_ENGINE > the configuration file's gpu.engine > auto
    # (config.load reads the environment over the file).
    engine = args.gpu_engine or (route.settings(args)["gpu.engine"] if args.gpu else "")
    if args.gpu:
        try:
            engines.check_choice(engine)
        except engines.BadEngine as e:
            raise CommandError(str(e)) from None
    driver = _driver(args) if args.gpu else "none"
    mounts = list(args.persistent_mounts)
    mounts += [m.strip() for m in os.environ.get(PERSISTENT_MOUNTS_ENV, "").split(",") if m.strip()]
    every = 0.0
    if args.checkpoint_every is not None:
        from cedana_gpu.daemon.periodic import parse_duration

        try:
            every = parse_duration(args.checkpoint_every)
        except ValueError:
            raise CommandError(
                f"--checkpoint-every {args.checkpoint_every!r}: give a duration (90s, 5m, 1h)"
            ) from None
    if args.keep < 0:
        raise CommandError("--keep cannot be negative")
    from cedana_gpu.daemon.ops import RunSpec

    backend = route.backend(args)
    job = backend.run(
        RunSpec(
            command,
            gpu=args.gpu,
            driver=driver,
            jid=args.jid,
            engine=engine if args.gpu else "",
            persistent_mounts=mounts,
            every=every,
            keep=args.keep,
            stdin=args.stdin,
        )
    )
    if not args.attach:
        print(job.jid)
        return 0
    sys.stdout.flush()
    job = backend.attach(job.jid, sys.stdout.buffer, sys.stdin.buffer if args.stdin else None)
    if job.state == "failed" and job.error:
        print(f"cedana: job {job.jid} failed: {job.error}", file=sys.stderr)
    return lifecycle.exit_status(job)
