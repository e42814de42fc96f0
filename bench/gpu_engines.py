#!/usr/bin/env python3
"""Real-GPU benchmarks of both engines (issue 9): needs NVIDIA's driver, a GPU,
root (CRIU) and PyTorch.

Measured in one run, on one GPU:

1. the copy bandwidth the dumps are held to: device-to-host and host-to-device
   of the same number of bytes, into pinned and into pageable host memory
   (PyTorch copies, best of three);
2. the driver engine: a PyTorch job (``samples/torch_train.py``) holding
   ``--gib`` GiB of device memory, dumped (``cedana dump job``, no
   compression) and restored; GB/s of the GPU part (the dump's ``freeze``
   and ``gpu_dump`` phases: lock + the driver's checkpoint to host memory)
   and of the whole dump and restore;
3. the intercept engine: ``samples/train_mlp.py`` with the same amount of
   device memory through the interposer; GB/s of its ``gpu_dump`` phase and
   of the whole dump and restore (skipped when nvcc built no PTX for it);
4. step-time overhead: the PyTorch job's median step time under the driver
   engine against the same job run plain (the intercept engine cannot run
   PyTorch: NVIDIA's runtime refuses any driver but NVIDIA's).

Bars (DESIGN.md): dump ≥ 80% of the device-to-host copy bandwidth; ≤ 3%
step-time overhead. Benchmarks, not tests: a missed bar is reported and the
exit status is 0; it is 1 only when a run itself fails (each part is still
tried, and the JSON is written after each one).

    python bench/gpu_engines.py --gib 4 --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
GIB = 1 << 30
PARTS = ("copy", "driver", "intercept", "steps")
DRIVER = "system"  # --driver: "fake" tries the plumbing where there is no GPU


def cedana(state: Path, *args: str) -> Any:
    """``cedana ARGS`` with this run's store; the JSON answer of the verbs that
    give one (``--output json`` goes before a ``--``, where the job's own
    arguments begin), None for the others (``exec``, ``job kill``)."""
    argv = list(args)
    answers = argv[0] in ("ps", "dump", "restore")
    if answers:
        at = argv.index("--") if "--" in argv else len(argv)
        argv[at:at] = ["--output", "json"]
    out = subprocess.run(
        [sys.executable, "-m", "cedana_gpu", *argv],
        env={**os.environ, "CEDANA_STATE_DIR": str(state)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"cedana {' '.join(args)}: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout) if answers and out.stdout.strip() else None


def copy_bandwidth(nbytes: int) -> dict[str, float]:
    """GB/s of device-to-host and host-to-device copies of ``nbytes``."""
    import torch

    dev = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dev.fill_(7)
    result: dict[str, float] = {}
    for kind, host in (
        ("pinned", torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)),
        ("pageable", torch.empty(nbytes, dtype=torch.uint8)),
    ):
        host.fill_(1)  # touch every page first: first-touch faults are not copy time
        for direction in ("d2h", "h2d"):
            times = []
            for _ in range(3):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                if direction == "d2h":
                    host.copy_(dev)
                else:
                    dev.copy_(host)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            result[f"{direction}_{kind}_gbps"] = nbytes / min(times) / 1e9
        del host
    return result


def wait_for_line(state: Path, jid: str, pattern: str, timeout: float = 600) -> None:
    """Wait until job ``jid`` prints ``pattern``; raise if it ends first."""
    log = state / "jobs" / jid / "job.log"
    rx = re.compile(pattern, re.M)
    deadline = time.monotonic() + timeout
    while not (log.exists() and rx.search(text := log.read_text(errors="replace"))):
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {jid} printed no {pattern!r} in {timeout:g} s")
        rows = {r["jid"]: r for r in cedana(state, "ps")}
        if rows.get(jid, {}).get("state") not in ("starting", "running"):
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise RuntimeError(f"job {jid} ended ({rows.get(jid)}) before {pattern!r}: {tail}")
        time.sleep(0.5)
    del text


def engine_round(
    state: Path, engine: str, cmd: list[str], workdir: Path, streams: int = 1
) -> dict[str, Any]:
    """Start ``cmd`` as a job of ``engine``, dump it once it runs, restore it; times and sizes."""
    jid = f"bench{uuid.uuid4().hex[:8]}"
    cedana(state, "exec", "--gpu", "--gpu-driver", DRIVER, "--gpu-engine", engine,
           "--jid", jid, "--", *cmd)  # fmt: skip
    wait_for_line(state, jid, r"^step 2 ")
    t0 = time.perf_counter()
    dumped = cedana(state, "dump", "job", jid, "--dir", str(workdir), "--stream", str(streams))
    dump_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    restored = cedana(state, "restore", "job", jid, "--jid", jid + "r")
    restore_s = time.perf_counter() - t0
    cedana(state, "job", "kill", jid + "r")
    return {
        "engine": engine,
        "streams": streams,
        "dump_s": dump_s,
        "restore_s": restore_s,
        "size": dumped.get("size"),
        "gpu_bytes": dumped.get("gpu_bytes"),
        "dump_phases": dumped.get("phases", {}),
        "restore_phases": (restored or {}).get("phases", {}),
    }


def step_time(cmd: list[str], env: dict[str, str] | None = None) -> float:
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=900,
                         check=True)  # fmt: skip
    found = re.findall(r"step time: ([0-9.]+) ms", out.stderr)
    if not found:
        raise RuntimeError(f"no step time in {out.stderr[-1000:]!r}")
    return float(found[-1])


def step_time_under_driver_engine(state: Path, cmd: list[str]) -> float:
    jid = f"step{uuid.uuid4().hex[:8]}"
    cedana(state, "exec", "--gpu", "--gpu-driver", DRIVER, "--gpu-engine", "driver",
           "--jid", jid, "--attach", "--", *cmd)  # fmt: skip
    text = (state / "jobs" / jid / "job.log").read_text(errors="replace")
    found = re.findall(r"step time: ([0-9.]+) ms", text)
    if not found:
        raise RuntimeError(f"job {jid} printed no step time: {text[-1000:]!r}")
    return float(found[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gib", type=float, default=4.0, help="device memory the jobs hold")
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: /tmp)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--rounds", type=int, default=3, help="step-time rounds (medians)")
    ap.add_argument("--driver", default="system", choices=("system", "fake"),
                    help="the jobs' driver (fake: check the plumbing without a GPU)")  # fmt: skip
    ap.add_argument("--parts", default=",".join(PARTS),
                    help=f"parts to run, of {','.join(PARTS)} (copy always runs)")  # fmt: skip
    ap.add_argument("--stream", type=int, default=1, help="the dumps' --stream (shards)")
    a = ap.parse_args(argv)
    wanted = set(a.parts.split(",")) | {"copy"}
    if wanted - set(PARTS):
        ap.error(f"unknown parts {sorted(wanted - set(PARTS))}: choose of {','.join(PARTS)}")
    global DRIVER
    DRIVER = a.driver
    mib = int(a.gib * 1024)
    results: dict[str, Any] = {"gib": a.gib, "streams": a.stream, "dir": str(a.dir or "/tmp")}
    for name, key in (("driver", "driver"), ("intercept", "intercept"), ("steps", "step_time_ms")):
        if name not in wanted:
            results[key] = {"skipped": "not asked for (--parts)"}

    def part(name: str, run: Any) -> None:
        """One measurement; a failure is recorded and the others still run
        (a first run on a new machine should say as much as it can)."""
        try:
            results[name] = run()
        except Exception as e:  # reported, and the exit status says so
            results[name] = {"error": f"{type(e).__name__}: {e}"[-3000:]}
            print(f"{name}: failed: {e}", file=sys.stderr)
        if a.json:  # written after each part: a run cut short keeps what it measured
            a.json.write_text(json.dumps(results, indent=2) + "\n")

    with tempfile.TemporaryDirectory(prefix="cedana-gpu-bench-", dir=a.dir) as tmp:
        state = Path(tmp) / "state"
        state.mkdir()
        part("copy", lambda: copy_bandwidth(int(a.gib * GIB)))
        slow = ["--steps", "1000000", "--print-every", "1", "--sleep-per-step", "0.05"]
        torch_job = [sys.executable, "samples/torch_train.py", *slow, "--device-mib", str(mib)]
        if "driver" in wanted:
            part("driver", lambda: engine_round(state, "driver", torch_job, Path(tmp) / "ck-driver",
                                                a.stream))  # fmt: skip
        from cedana_gpu import paths

        mlp_job = [sys.executable, "samples/train_mlp.py", *slow, "--device-mib", str(mib)]
        int_dir = Path(tmp) / "ck-int"
        if "intercept" in wanted and not (paths.kernels_dir() / "mlp.ptx").is_file():
            results["intercept"] = {"skipped": "no PTX of samples/kernels/mlp.cu (nvcc)"}
        elif "intercept" in wanted:
            part("intercept", lambda: engine_round(state, "intercept", mlp_job, int_dir, a.stream))
        short = [sys.executable, "samples/torch_train.py", "--steps", "400", "--print-every", "1",
                 "--report-time"]  # fmt: skip

        def step_times() -> dict[str, float]:
            plain = [step_time(short) for _ in range(a.rounds)]
            under = [step_time_under_driver_engine(state, short) for _ in range(a.rounds)]
            return {"plain": statistics.median(plain), "driver": statistics.median(under)}

        if "steps" in wanted:
            part("step_time_ms", step_times)
        # A part that failed half-way may have left its job running.
        for row in cedana(state, "ps"):
            if row["state"] in ("starting", "running"):
                subprocess.run([sys.executable, "-m", "cedana_gpu", "job", "kill", row["jid"]],
                               env={**os.environ, "CEDANA_STATE_DIR": str(state)},
                               capture_output=True, timeout=120, check=False)  # fmt: skip
    report(results)
    return 1 if any("error" in v for v in results.values() if isinstance(v, dict)) else 0


def report(r: dict[str, Any]) -> None:
    gb = r["gib"] * GIB / 1e9
    print(f"device memory per job: {r['gib']:g} GiB")
    c = r["copy"]
    if "error" in c:
        print(f"copy bandwidth: failed ({c['error']})")
    else:
        print("copy bandwidth (GB/s): " + ", ".join(f"{k[:-5]} {v:.1f}" for k, v in c.items()))
    for name in ("driver", "intercept"):
        e = r.get(name, {"skipped": "not reached"})
        if "skipped" in e or "error" in e:
            print(f"{name} engine: {'skipped' if 'skipped' in e else 'failed'} "
                  f"({e.get('skipped') or e.get('error')})")  # fmt: skip
            continue
        # The driver engine's lock and checkpoint to host memory happen in its
        # freeze phase; the intercept engine copies device memory in gpu_dump.
        gpu_phase = "freeze+gpu_dump" if name == "driver" else "gpu_dump"
        gpu_s = sum(float(e["dump_phases"].get(p, 0.0)) for p in gpu_phase.split("+"))
        gpu_gbps = gb / gpu_s if gpu_s else float("nan")
        share = gpu_gbps / c["d2h_pinned_gbps"] if "d2h_pinned_gbps" in c else float("nan")
        print(
            f"{name} engine: dump {e['dump_s']:.2f} s ({gb / e['dump_s']:.2f} GB/s whole), "
            f"GPU part '{gpu_phase}' {gpu_s:.2f} s = {gpu_gbps:.2f} GB/s "
            f"= {share:.0%} of pinned D2H (bar >= 80%); "
            f"restore {e['restore_s']:.2f} s ({gb / e['restore_s']:.2f} GB/s whole); "
            f"checkpoint {(e['size'] or 0) / 1e9:.2f} GB"
        )
        print(f"  dump phases: {json.dumps(e['dump_phases'])}")
        print(f"  restore phases: {json.dumps(e['restore_phases'])}")
    s = r.get("step_time_ms", {"error": "not reached"})
    if "skipped" in s:
        return
    if "error" in s:
        print(f"PyTorch step time: failed ({s['error']})")
        return
    print(
        f"PyTorch step time: plain {s['plain']:.3f} ms, driver engine {s['driver']:.3f} ms "
        f"= {s['driver'] / s['plain'] - 1:+.1%} (bar <= +3%)"
    )


if __name__ == "__main__":
    sys.exit(main())
