"""``cedana-gpu-controller`` (also ``python -m cedana_gpu.controller``): one job's controller.

    cedana-gpu-controller --job-id ID --state-dir DIR [--driver fake|system|none]
        [--persistent-mount DIR ...] -- CMD [ARGS...]
    cedana-gpu-controller --job-id ID --state-dir DIR --restore CHECKPOINT_DIR
    cedana-gpu-controller --standby SOCKET --driver fake|system   (the daemon's pool: standby.py)

Normally started by ``cedana exec``, detached, with its output going to
``<state>/jobs/<jid>/controller.log``. Exits when the job has ended, with
the job's exit status (128 + signal when it was killed).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

ENV_DEFAULTS = {
    "ring_slots": "CEDANA_GPU_RING_SLOTS",
    "nchannels": "CEDANA_GPU_CHANNELS",
    "staging_size": "CEDANA_GPU_STAGING_BYTES",
    "timeout_ms": "CEDANA_GPU_TIMEOUT_MS",
}
"""Segment geometry and timeouts: flags, else these environment variables, else
the dispatcher's defaults."""


def _setting(args: argparse.Namespace, key: str) -> int:
    """The flag ``key``, else its environment variable (``ENV_DEFAULTS``)."""
    value = getattr(args, key)
    return int(value) if value is not None else _env_int(ENV_DEFAULTS[key])


def _env_int(name: str) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return 0
    try:
        return int(value, 0)
    except ValueError:
        raise SystemExit(
            f"cedana-gpu-controller: error: {name}={value!r} is not a number"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    from cedana_gpu.controller.process import DRIVERS
    from cedana_gpu.engines import AUTO, CHOICES

    p = argparse.ArgumentParser(
        prog="cedana-gpu-controller",
        description="Serve one job's GPU calls and supervise the job.",
    )
    p.add_argument("--job-id", required=True)
    p.add_argument("--state-dir", type=Path, help="default: this user's cedana state directory")
    p.add_argument(
        "--driver",
        choices=DRIVERS,
        default=None,
        help="the fake driver, the system's NVIDIA driver, or none (a job without GPU) "
        "(default: $CEDANA_GPU_DRIVER, else system)",
    )
    p.add_argument("--ring-slots", type=int, default=None, help="request ring slots (power of 2)")
    p.add_argument("--channels", dest="nchannels", type=int, default=None)
    p.add_argument("--staging-size", type=int, default=None, help="bytes of staging per channel")
    p.add_argument(
        "--timeout-ms",
        type=int,
        default=None,
        help="how long the job's calls wait for a silent controller",
    )
    p.add_argument(
        "--persistent-mount",
        dest="persistent_mounts",
        action="append",
        default=[],
        metavar="DIR",
        help="a tmpfs private to the job at DIR, saved in its checkpoints (root; repeatable)",
    )
    p.add_argument(
        "--restore",
        type=Path,
        metavar="CHECKPOINT_DIR",
        help="restore the job from this (verified, unpacked) checkpoint instead of starting it",
    )
    p.add_argument(
        "--engine",
        choices=CHOICES,
        default=AUTO,
        help="the GPU engine: the interposer (intercept), the driver's checkpoint API "
        "(driver), or intercept until the interposer hands the job over (auto; default)",
    )
    p.add_argument(
        "--gpu-map",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="restore (driver engine): put the checkpoint's GPU OLD (UUID or index) on "
        "this machine's GPU NEW (repeatable)",
    )
    p.add_argument(
        "--no-pid-namespace",
        dest="pid_namespace",
        action="store_false",
        help="run the job in the controller's PID namespace",
    )
    p.add_argument(
        "--stdin",
        action="store_true",
        help="the job reads a FIFO in its directory that clients write (not /dev/null)",
    )
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--standby"]:
        return _standby(argv[1:])
    args = build_parser().parse_args(argv)
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command and args.restore is None:
        print(
            "cedana-gpu-controller: error: no job command given (-- CMD [ARGS...])", file=sys.stderr
        )
        return 2
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s controller[%(process)d] %(levelname)s %(message)s",
    )
    from cedana_gpu.controller.process import Controller, ControllerOptions, StartupError
    from cedana_gpu.gpu_info import DriverError, default_driver_kind
    from cedana_gpu.jobs import statedir

    try:
        driver = args.driver or default_driver_kind("system")
        options = ControllerOptions(
            job_id=args.job_id,
            state_dir=args.state_dir or statedir.default_state_dir(),
            driver=driver,
            command=command,
            pid_namespace=args.pid_namespace,
            persistent_mounts=list(args.persistent_mounts),
            restore=args.restore.absolute() if args.restore is not None else None,
            ring_slots=_setting(args, "ring_slots"),
            nchannels=_setting(args, "nchannels"),
            staging_size=_setting(args, "staging_size"),
            timeout_ms=_setting(args, "timeout_ms"),
            engine=args.engine,
            gpu_map=list(args.gpu_map),
            stdin=args.stdin,
        )
        controller = Controller(options)
    except (ValueError, DriverError, StartupError, statedir.StateDirError) as e:
        print(f"cedana-gpu-controller: error: {e}", file=sys.stderr)
        return 1
    return controller.run()


def _standby(argv: Sequence[str]) -> int:
    from cedana_gpu.controller import standby

    p = argparse.ArgumentParser(prog="cedana-gpu-controller --standby")
    p.add_argument("socket", type=Path)
    p.add_argument("--driver", choices=("fake", "system"), required=True)
    p.add_argument("--parent", type=int, default=0, help="end when this process (the daemon) ends")
    args = p.parse_args(argv)
    return standby.run(args.socket, args.driver, args.parent, main)


if __name__ == "__main__":
    raise SystemExit(main())
