#!/usr/bin/env python3
"""Compile a CUDA C kernel set (.cu) to PTX with NVRTC.

The build's fallback where nvcc cannot compile (cmake/Kernels.cmake): NVRTC
comes from the nvidia-cuda-nvrtc wheel through cuda-bindings, so the samples'
and the conformance kernels exist as PTX (what the fake driver's interpreter
and NVIDIA's driver both run) on machines without a CUDA toolkit.

  nvrtc_ptx.py kernels.cu -o kernels.ptx [--arch compute_90]
  nvrtc_ptx.py --probe      exit 0 when NVRTC can compile here
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import sys
from pathlib import Path

PROBE = 'extern "C" __global__ void probe(int *p) { *p = 1; }\n'


def preload_builtins() -> None:
    """libnvrtc-builtins by path: NVRTC's own lookup next to libnvrtc fails
    under preloaded sanitizer runtimes; a loaded library is found by name."""
    spec = importlib.util.find_spec("nvidia")
    roots = spec.submodule_search_locations if spec and spec.submodule_search_locations else []
    for root in roots:
        for lib in sorted(Path(root).glob("*/lib/libnvrtc-builtins.so*")):
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
            return


def compile_ptx(source: str, name: str, arch: str) -> bytes:
    from cuda.bindings import nvrtc

    preload_builtins()
    err, prog = nvrtc.nvrtcCreateProgram(source.encode(), name.encode(), 0, [], [])
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise RuntimeError(f"nvrtcCreateProgram: {err}")
    try:
        opts = [f"-arch={arch}".encode()]
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            _, size = nvrtc.nvrtcGetProgramLogSize(prog)
            log = b" " * size
            nvrtc.nvrtcGetProgramLog(prog, log)
            raise RuntimeError(log.decode(errors="replace").strip())
        _, size = nvrtc.nvrtcGetPTXSize(prog)
        ptx = b" " * size
        nvrtc.nvrtcGetPTX(prog, ptx)
        return ptx.rstrip(b"\x00")
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path, nargs="?")
    ap.add_argument("-o", "--output", type=Path)
    ap.add_argument("--arch", default="compute_90")
    ap.add_argument("--probe", action="store_true")
    args = ap.parse_args(argv)
    try:
        if args.probe:
            compile_ptx(PROBE, "probe.cu", args.arch)
            return 0
        if args.source is None or args.output is None:
            ap.error("give a source and -o")
        ptx = compile_ptx(args.source.read_text(), args.source.name, args.arch)
    except (ImportError, OSError, RuntimeError) as e:
        print(f"nvrtc_ptx.py: {args.source or 'probe'}: {e}", file=sys.stderr)
        return 1
    tmp = args.output.with_name(f".{args.output.name}.tmp")
    tmp.write_bytes(ptx)
    tmp.replace(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
