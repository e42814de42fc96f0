"""Generate the Python stubs of ``daemon.proto`` (grpcio-tools, a test dependency).

    python -m cedana_gpu.daemon.proto.generate [OUT_ROOT]

The proto is compiled with the repository root as include path, so the
generated modules import each other as ``cedana_gpu.daemon.proto.daemon_pb2``
(a package import, not a top-level one). Without ``OUT_ROOT`` they are
written next to the proto; the test writes them elsewhere and compares.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO = Path(__file__).resolve().parent / "daemon.proto"
ROOT = PROTO.parents[3]
RELATIVE = PROTO.relative_to(ROOT)
GENERATED = ("daemon_pb2.py", "daemon_pb2_grpc.py", "daemon_pb2.pyi")


def generate(out_root: Path) -> list[Path]:
    """Write the stubs under ``out_root`` (same relative path as the proto); their paths."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out_root.mkdir(parents=True, exist_ok=True)
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{ROOT}",
            f"-I{well_known}",
            f"--python_out={out_root}",
            f"--pyi_out={out_root}",
            f"--grpc_python_out={out_root}",
            str(PROTO),
        ]
    )
    if status != 0:
        raise SystemExit(f"protoc failed on {PROTO} (status {status})")
    return [out_root / RELATIVE.parent / name for name in GENERATED]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for path in generate(Path(args[0]) if args else ROOT):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
