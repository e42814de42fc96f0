"""``cedana gpu``: which driver is used, and what devices it has.

``cedana gpu libdir --driver fake`` prints the directory holding the fake
``libcuda.so.1`` and ``libnvidia-ml.so.1``, so that
``LD_LIBRARY_PATH=$(cedana gpu libdir --driver fake) python app.py`` runs any
program on the fake driver. ``cedana gpu info`` lists the devices, and says
what the driver offers of its own checkpoint API (``--gpu-engine driver``):
lock/checkpoint/restore (r555), GPU remapping on restore (r580), custom
storage (CUDA 13.4).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from cedana_gpu import gpu_info
from cedana_gpu.commands.output import add_output_option, table
from cedana_gpu.gpu_info import (
    CUDA_SONAME,
    DEVICE_SOURCES,
    DRIVER_ENV,
    DRIVER_KINDS,
    NVML_SONAME,
    DeviceInfo,
    DriverKind,
    NoDriver,
)
from cedana_gpu.paths import fake_libdir


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gpu = subcommands.add_parser(
        "gpu", help="GPU drivers and devices", description="GPU drivers and devices."
    )
    commands = gpu.add_subparsers(
        title="commands", dest="gpu_command", metavar="COMMAND", required=True
    )

    libdir = commands.add_parser(
        "libdir",
        help="print the directory holding a driver's libcuda.so.1",
        description=(
            "Print the directory holding the driver's libcuda.so.1. "
            "LD_LIBRARY_PATH=$(cedana gpu libdir --driver fake) runs a program on the fake driver."
        ),
    )
    _add_driver_option(libdir, default="fake")
    libdir.set_defaults(handler=cmd_libdir)

    info = commands.add_parser(
        "info",
        help="list the GPUs of a driver",
        description="List the GPUs of a driver: index, name, UUID, memory, compute capability.",
    )
    _add_driver_option(info, default="system")
    add_output_option(info)
    info.add_argument(
        "--source",
        choices=DEVICE_SOURCES,
        default="auto",
        help="ask NVML, the CUDA driver API, or NVML with the CUDA driver API as fallback "
        "(default: auto)",
    )
    info.set_defaults(handler=cmd_info)


def _add_driver_option(parser: argparse.ArgumentParser, *, default: DriverKind) -> None:
    parser.add_argument(
        "--driver",
        choices=DRIVER_KINDS,
        default=None,
        help=f"the bundled fake driver or the system's NVIDIA driver "
        f"(default: ${DRIVER_ENV}, else {default})",
    )
    parser.set_defaults(driver_fallback=default)


def _driver(args: argparse.Namespace) -> DriverKind:
    if args.driver is not None:
        return args.driver
    return gpu_info.default_driver_kind(args.driver_fallback)


def cmd_libdir(args: argparse.Namespace) -> int:
    kind = _driver(args)
    if kind == "fake":
        libdir = fake_libdir()
        for soname in (CUDA_SONAME, NVML_SONAME):
            if not (libdir / soname).is_file():
                raise NoDriver(
                    f"the fake driver's {soname} is missing from {libdir}: "
                    "rebuild with 'make setup' (or 'pip install -e .')"
                )
        print(libdir)
    else:
        print(gpu_info.load_driver(kind).cuda_path.parent)
    return 0


def _memory(n: int) -> str:
    mib, rest = divmod(n, 1 << 20)
    return f"{mib} MiB" if rest == 0 else f"{n / (1 << 20):.1f} MiB"


def format_devices(devices: Sequence[DeviceInfo]) -> str:
    rows = [("INDEX", "NAME", "UUID", "MEMORY", "COMPUTE")]
    rows += [
        (
            str(d.index),
            d.name,
            d.uuid,
            _memory(d.total_memory_bytes),
            f"{d.compute_capability[0]}.{d.compute_capability[1]}",
        )
        for d in devices
    ]
    return table(rows)


def checkpoint_api() -> dict[str, object] | str:
    """What the loaded driver offers of its checkpoint API (or why that is unknown)."""
    from cedana_gpu.cr import driver_api

    try:
        return driver_api.support().to_json()
    except driver_api.DriverApiError as e:
        return str(e)


def describe_api(api: dict[str, object] | str) -> str:
    if isinstance(api, str):
        return f"checkpoint API (driver engine): unknown ({api})"
    from cedana_gpu.cr import driver_api

    def say(key: str, minimum: int) -> str:
        return "yes" if api[key] else f"no (needs {driver_api.needed(minimum)})"

    return (
        f"driver CUDA {api['driver_version']}; checkpoint API (--gpu-engine driver): "
        f"lock/checkpoint {say('checkpoint', driver_api.CHECKPOINT_MIN)}, "
        f"GPU remapping {say('gpu_remap', driver_api.REMAP_MIN)}, "
        f"custom storage {say('custom_storage', driver_api.CUSTOM_STORAGE_MIN)}"
    )


def cmd_info(args: argparse.Namespace) -> int:
    kind = _driver(args)
    devices = gpu_info.list_devices(kind, source=args.source)
    api = checkpoint_api()
    if args.output == "json":
        doc = {"driver": kind, "devices": [d.to_json() for d in devices], "checkpoint_api": api}
        print(json.dumps(doc, indent=2))
        return 0
    if devices:
        print(format_devices(devices))
    else:
        print(f"no GPUs found (driver: {kind})")
    print(describe_api(api))
    return 0
