"""`make demo`: the sample GPU workloads, then save, migrate and resume.

Part one runs each sample and shows what it did. Part two is the story
cedana-gpu exists for, told through the cedana daemon (`cedana daemon
start`, which then runs every command's work): a training job started under
`cedana exec --gpu` is dumped mid-run (GPU state and CPU state, by CRIU),
killed, its checkpoint copied elsewhere as if to another node, restored from
the copy, and its final checksum compared with an uninterrupted run's. It runs
once under each GPU engine: ``intercept`` (the interposer and its controller
save the GPU state) and ``driver`` (the job loads the driver itself and the
driver's own checkpoint API stages its GPU memory for CRIU), where the driver
has that API. A few lines of Python then ask the daemon's gRPC API for the
jobs.

On a machine with an NVIDIA GPU everything runs on the system driver (with
the PTX kernels); elsewhere on the fake driver, which runs the same kernels on
the CPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from cedana_gpu import gpu_info, paths

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"


def pick_driver() -> gpu_info.DriverKind:
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


TRAIN = ["samples/train_mlp.py", "--steps", "120", "--print-every", "10"]


def cedana(
    *args: str, env: dict[str, str], check: bool = True, quiet: bool = False
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "cedana_gpu", *args]
    if not quiet:
        print(f"$ cedana {' '.join(args)}", flush=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    if check and proc.returncode != 0:
        raise SystemExit(f"demo: cedana {args[0]} failed: {proc.stderr.strip()}")
    return proc


def last_checksum(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.startswith("checksum:")]
    return lines[-1].split(":", 1)[1].strip() if lines else "(none)"


def wait_for_step(log: Path, step: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        steps = [int(ln.split()[1]) for ln in text.splitlines() if ln.startswith("step ")]
        if steps and steps[-1] >= step:
            return
        time.sleep(0.05)
    raise SystemExit(f"demo: the job did not reach step {step} in {timeout:.0f} s; see {log}")


def driver_has_checkpoint_api(env: dict[str, str], driver: str) -> bool:
    out = cedana("gpu", "info", "--driver", driver, "--output", "json", env=env, check=False)
    try:
        api = json.loads(out.stdout).get("checkpoint_api")
    except ValueError:
        return False
    return isinstance(api, dict) and bool(api.get("checkpoint"))


@contextlib.contextmanager
def daemon(env: dict[str, str], log: Path) -> Iterator[None]:
    """``cedana daemon start`` in the background for the story; stopped at its end."""
    print("$ cedana daemon start &", flush=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cedana_gpu", "daemon", "start"],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while cedana("daemon", "check", env=env, check=False, quiet=True).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"demo: the daemon did not start; see {log}")
            time.sleep(0.1)
        print("   " + cedana("daemon", "check", env=env).stdout.strip().replace("\n", "\n   "))
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)


API_EXAMPLE = """\
import grpc
from cedana_gpu.daemon.proto import daemon_pb2 as pb, daemon_pb2_grpc as pb_grpc
stub = pb_grpc.DaemonStub(grpc.insecure_channel("unix:" + SOCKET))
for job in stub.List(pb.ListReq()).jobs:
    print(job.jid, job.status, "restored from", job.restored_from or "-")
"""


def ask_the_api(socket: Path, env: dict[str, str]) -> None:
    print("$ python  # the daemon's API", flush=True)
    for line in API_EXAMPLE.replace("SOCKET", repr(str(socket))).splitlines():
        print(f"   {'...' if line.startswith(' ') else '>>>'} {line}")
    code = API_EXAMPLE.replace("SOCKET", repr(str(socket)))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    for line in (out.stdout or out.stderr).strip().splitlines():
        print(f"   {line}")


def save_migrate_resume(driver: str, env: dict[str, str], engine: str) -> bool:
    print(
        f"\n== save, migrate, resume: train_mlp under cedana exec --gpu --gpu-engine {engine},"
        " through the daemon",
        flush=True,
    )
    if os.geteuid() != 0:
        print("   skipped: CRIU needs root for dump and restore (run make demo as root)")
        return True
    direct = subprocess.run(
        [sys.executable, *TRAIN], env=env, capture_output=True, text=True, cwd=REPO, check=True
    )
    expected = last_checksum(direct.stdout)
    print(f"   uninterrupted run: checksum {expected}")
    with tempfile.TemporaryDirectory(prefix="cedana-demo-") as tmp:
        work = Path(tmp)
        socket = work / "cedana.sock"
        cenv = dict(env, CEDANA_STATE_DIR=str(work / "state"), CEDANA_ADDRESS=str(socket))
        with daemon(cenv, work / "daemon.log"):
            resumed, restored = story(driver, work, cenv, engine)
            ask_the_api(socket, cenv)
    same = resumed == expected and restored.returncode == 0
    print("   checksums match: the job continued as if nothing happened" if same else "   MISMATCH")
    return same


def story(
    driver: str, work: Path, cenv: dict[str, str], engine: str
) -> tuple[str, subprocess.CompletedProcess[str]]:
    jid = f"demo-{engine}-{os.getpid()}"
    slow = [*TRAIN, "--sleep-per-step", "0.02"]
    cedana(
        "exec",
        "--gpu",
        "--gpu-driver",
        driver,
        "--gpu-engine",
        engine,
        "--jid",
        jid,
        "--",
        sys.executable,
        *slow,
        env=cenv,
    )
    inspect = json.loads(cedana("job", "inspect", jid, env=cenv).stdout)
    log = Path(inspect["log_path"])
    wait_for_step(log, 40)
    dump = cedana(
        "dump",
        "job",
        jid,
        "--dir",
        str(work / "checkpoints"),
        "--compression",
        "lz4",
        "--stream",
        "2",
        "--output",
        "json",
        env=cenv,
    )
    info = json.loads(dump.stdout)
    print(
        f"   dumped at step {log.read_text().splitlines()[-1].split()[1]}: "
        f"{info['path']} ({info.get('size', 0) / 2**20:.1f} MiB)"
    )
    print("   " + cedana("ps", env=cenv).stdout.strip().replace("\n", "\n   "))
    migrated = work / "other-node" / Path(info["path"]).name
    migrated.parent.mkdir()
    if Path(info["path"]).is_dir():
        shutil.copytree(info["path"], migrated)
    else:
        shutil.copy2(info["path"], migrated)
    shutil.rmtree(Path(info["path"]), ignore_errors=True)
    Path(info["path"]).unlink(missing_ok=True)
    print(f"   copied the checkpoint to {migrated} and removed the original")
    restored = cedana(
        "restore",
        "job",
        jid,
        "--path",
        str(migrated),
        "--jid",
        jid + "-r",
        "--attach",
        env=cenv,
        check=False,
    )
    resumed = last_checksum(log.read_text() + restored.stdout)
    print(f"   restored run finished with exit {restored.returncode}: checksum {resumed}")
    return resumed, restored


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
                "gpu_loop: device state rewritten every step, a digest per step",
                [py, str(SAMPLES / "gpu_loop.py"), "--steps", "5", "--device-mib", "8"],
                env,
            ),
            run(
                "streams_events: copies overlapped with kernels on several streams",
                [py, str(SAMPLES / "streams_events.py")],
                env,
            ),
        ]
    )
    ok = save_migrate_resume(driver, env, "intercept") and ok
    if driver_has_checkpoint_api(env, driver):
        ok = save_migrate_resume(driver, env, "driver") and ok
    else:
        print(f"\n== driver engine: skipped, the {driver} driver has no checkpoint API")
    print("\ndemo ok" if ok else "\ndemo FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
