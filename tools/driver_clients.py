#!/usr/bin/env python3
"""Run a public driver-API client's own tests on the fake driver, directly or
through the interposer, and count what passes (docs/compatibility.md).

The client is numba-cuda's driver layer: the unittest modules of
``numba.cuda.tests.cudadrv`` as installed. Each module is loaded on its own,
so one that cannot even be imported (it needs NVRTC or nvJitLink, which only
a CUDA toolkit has) is counted as an import error instead of stopping the
run. Prints one JSON line: totals and the failures by test, with the first
line of each error.

    tools/driver_clients.py direct        # LD_LIBRARY_PATH=<fake driver>
    tools/driver_clients.py interposer    # cedana exec --gpu --gpu-driver fake --attach
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import unittest
import uuid
from pathlib import Path

PACKAGE = "numba.cuda.tests.cudadrv"


def modules() -> list[str]:
    import importlib.util

    spec = importlib.util.find_spec("numba_cuda")
    assert spec and spec.submodule_search_locations, "numba-cuda is not installed"
    root = (
        Path(next(iter(spec.submodule_search_locations))) / "numba" / "cuda" / "tests" / "cudadrv"
    )
    return sorted(f"{PACKAGE}.{p.stem}" for p in root.glob("test_*.py"))


def first_line(text: str) -> str:
    """The exception line of a traceback (not the lines a message adds after it)."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Failure)\b", ln):
            return ln[:200]
    return lines[-1][:200] if lines else ""


def run_here() -> dict[str, object]:
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "import_errors": 0}
    problems: dict[str, str] = {}
    loader = unittest.TestLoader()
    for name in modules():
        try:
            suite = loader.loadTestsFromName(name)
        except Exception as e:
            counts["import_errors"] += 1
            problems[name] = f"import: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
            continue
        result = unittest.TestResult()
        suite.run(result)
        bad = len(result.failures) + len(result.errors)
        counts["failed"] += len(result.failures)
        counts["errors"] += len(result.errors)
        counts["skipped"] += len(result.skipped)
        counts["passed"] += result.testsRun - bad - len(result.skipped)
        for test, tb in result.failures + result.errors:
            problems[test.id()] = first_line(tb)
    return {"counts": counts, "problems": problems}


def main() -> int:
    mode = sys.argv[1] if len(sys.argv) > 1 else "here"
    if mode == "here":
        print(json.dumps(run_here()), flush=True)
        return 0
    repo = Path(__file__).resolve().parent.parent
    py = sys.executable
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("FAKE_CUDA_") and k != "LD_PRELOAD"
    }
    if mode == "direct":
        libdir = subprocess.run(
            [py, "-m", "cedana_gpu", "gpu", "libdir", "--driver", "fake"],
            capture_output=True,
            text=True,
            check=True,
            cwd=repo,
        ).stdout.strip()
        env["LD_LIBRARY_PATH"] = libdir
        cmd = [py, __file__, "here"]
    elif mode == "interposer":
        jid = f"clients{uuid.uuid4().hex[:8]}"
        # A job store of this run's own, whatever else the machine runs.
        env["CEDANA_STATE_DIR"] = tempfile.mkdtemp(prefix="cedana-clients-")
        cmd = [
            py,
            "-m",
            "cedana_gpu",
            "exec",
            "--gpu",
            "--gpu-driver",
            "fake",
            "--jid",
            jid,
            "--attach",
            "--",
            py,
            __file__,
            "here",
        ]
    else:
        print(f"driver_clients: unknown mode {mode!r} (direct, interposer)", file=sys.stderr)
        return 2
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        print(
            f"driver_clients: the run printed no result (exit {out.returncode}): "
            f"{out.stderr[-2000:]}",
            file=sys.stderr,
        )
        return 1
    doc = json.loads(lines[-1])
    doc["mode"] = mode
    print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
