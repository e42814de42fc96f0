"""`make demo`: run the sample GPU workloads and show what each did.

On a machine with an NVIDIA GPU the samples run on the system driver (with
their PTX kernels); elsewhere on the fake driver, which runs the same kernels
on the CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from cedana_gpu import gpu_info, paths

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"


def pick_driver() -> str:
    try:
        if gpu_info.list_devices("system"):
            return "system"
    except (gpu_info.NoDriver, gpu_info.DriverError):
        pass
    return "fake"


def driver_env(driver: str) -> dict[str, str]:
    env = dict(os.environ)
    if driver == "fake":
        libdir = str(paths.fake_libdir())
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p
        )
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(title: str, cmd: list[str], env: dict[str, str], tail: int = 4) -> bool:
    print(f"\n== {title}\n$ {' '.join(cmd)}", flush=True)
    start = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    took = time.monotonic() - start
    lines = proc.stdout.strip().splitlines()
    for line in lines[-tail:]:
        print(f"   {line}")
    if proc.returncode != 0:
        print(f"   FAILED (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
        return False
    print(f"   ok in {took:.2f} s")
    return True


def main() -> int:
    driver = pick_driver()
    env = driver_env(driver)
    devices = gpu_info.list_devices(driver)
    print(f"driver: {driver}; devices: " + ", ".join(f"{d.name} ({d.uuid})" for d in devices))
    py = sys.executable
    ok = all(
        [
            run("vector_add (C, driver API, -lcuda)", [str(paths.bin_dir() / "vector_add")], env),
            run(
                "train_mlp: a small MLP trained with SGD, every step on the device",
                [py, str(SAMPLES / "train_mlp.py"), "--steps", "60", "--print-every", "20"],
                env,
            ),
            run(
                "jit_kernels: Triton-style kernels compiled at run time into a cache",
                [py, str(SAMPLES / "jit_kernels.py"), "--steps", "6"],
                env,
            ),
            run(
                "streams_events: copies overlapped with kernels on several streams",
                [py, str(SAMPLES / "streams_events.py")],
                env,
            ),
        ]
    )
    print("\nall samples ok" if ok else "\nsome samples FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
