"""The daemon's API: the committed stubs are what the shipped proto generates,
and the daemon serves every RPC the proto names."""

from __future__ import annotations

from pathlib import Path

from cedana_gpu.daemon.proto import generate


def test_the_committed_stubs_are_generated_from_the_proto(tmp_path: Path) -> None:
    fresh = generate.generate(tmp_path)
    committed = generate.PROTO.parent
    stale = [p.name for p in fresh if p.read_bytes() != (committed / p.name).read_bytes()]
    assert stale == [], (
        f"{stale} differ from what {generate.PROTO.name} generates: run "
        "'python -m cedana_gpu.daemon.proto.generate' and commit the result"
    )


def test_the_proto_ships_in_the_package() -> None:
    import cedana_gpu.daemon.proto as package

    assert (Path(package.__file__).parent / "daemon.proto").is_file()
    assert generate.PROTO.read_text().count("service Daemon {") == 1


def test_the_daemon_serves_every_rpc_of_the_proto() -> None:
    from cedana_gpu.daemon.proto import daemon_pb2, daemon_pb2_grpc
    from cedana_gpu.daemon.server import Servicer

    methods = [m.name for m in daemon_pb2.DESCRIPTOR.services_by_name["Daemon"].methods]
    missing = [
        name
        for name in methods
        if getattr(Servicer, name) is getattr(daemon_pb2_grpc.DaemonServicer, name)
    ]
    assert len(methods) >= 18
    assert missing == []
