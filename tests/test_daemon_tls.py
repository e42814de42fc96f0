"""The daemon on TCP with TLS: certificates made for the test by the openssl CLI.

A throwaway CA signs the daemon's certificate (for 127.0.0.1) and a client
certificate; a second CA stands for the wrong one. The CLI and a gRPC stub
connect with the configured CA (``CEDANA_TLS_*``); every way of getting it
wrong is refused in one line that says what to set.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cr_helpers import REPO, needs_root, unique_jid
from daemon_helpers import COUNTER, Daemon, kill_jobs, running

from cedana_gpu.daemon.proto import daemon_pb2 as pb

pytestmark = [needs_root, pytest.mark.usefixtures("native_parts")]

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", *EC, "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)  # fmt: skip


def _sign(d: Path, ca: str, name: str, *, server: bool, expired: bool = False) -> None:
    _openssl("req", *EC, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
             cwd=d)  # fmt: skip
    ext = d / f"{name}.ext"
    usage = "serverAuth" if server else "clientAuth"
    san = "subjectAltName=IP:127.0.0.1,DNS:localhost\n" if server else ""
    ext.write_text(f"{san}extendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n")
    if not expired:
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", ext.name,
                 cwd=d)  # fmt: skip
        return
    # `openssl x509` cannot date a certificate in the past; `openssl ca` can.
    (d / "index.txt").write_text("")
    (d / "serial").write_text("1000\n")
    (d / "ca.cnf").write_text(
        f"[ca]\ndefault_ca = c\n[c]\ndatabase = index.txt\nnew_certs_dir = .\n"
        f"certificate = {ca}.pem\nprivate_key = {ca}.key\nserial = serial\n"
        "default_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n"
    )
    _openssl("ca", "-batch", "-config", "ca.cnf", "-in", f"{name}.csr", "-out", f"{name}.pem",
             "-startdate", "20200101000000Z", "-enddate", "20200102000000Z", "-notext",
             "-extfile", ext.name, cwd=d)  # fmt: skip


@dataclass
class Pki:
    d: Path

    def __getitem__(self, name: str) -> str:
        return str(self.d / name)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    _make_ca(d, "ca")
    _make_ca(d, "other")
    _sign(d, "ca", "server", server=True)
    _sign(d, "ca", "client", server=False)
    _sign(d, "ca", "old", server=True, expired=True)
    return Pki(d)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tcp(**env: str) -> dict[str, str]:
    return {"CEDANA_PROTOCOL": "tcp", "CEDANA_ADDRESS": f"127.0.0.1:{_free_port()}", **env}


@pytest.fixture
def mutual(tmp_path: Path, pki: Pki) -> Iterator[Daemon]:
    """A daemon that requires client certificates (and no token); its CLI shows one."""
    d = Daemon(tmp_path, **_tcp(
        CEDANA_TLS_CERT=pki["server.pem"], CEDANA_TLS_KEY=pki["server.key"],
        CEDANA_TLS_CLIENT_CA=pki["ca.pem"], CEDANA_TLS_CA=pki["ca.pem"],
        CEDANA_TLS_CLIENT_CERT=pki["client.pem"], CEDANA_TLS_CLIENT_KEY=pki["client.key"],
    ))  # fmt: skip
    with running(d):
        yield d


def _error(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode != 0, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


def test_tls_client_runs_lists_and_dumps(mutual: Daemon) -> None:
    cli = mutual.cli()
    jid = unique_jid("tls")
    assert cli.ok("exec", "--jid", jid, "--", "sh", "-c", COUNTER, "c", "100000") == f"{jid}\n"
    cli.wait_log(jid, r"^n \d+", 2)
    assert [j["jid"] for j in cli.json("ps")] == [jid]
    dumped = cli.json("dump", "job", jid, "--leave-running")
    assert dumped["job"] == jid and Path(dumped["path"]).is_dir()
    # The job is the daemon's: started by it (through TLS), not in-process.
    assert cli.job(jid)["controller_pid"] != 0
    with mutual.client() as stub:
        assert [j.jid for j in stub.List(pb.ListReq()).jobs] == [jid]


def test_tls_refusals_say_what_to_set(mutual: Daemon, pki: Pki) -> None:
    cli = mutual.cli()
    address = mutual.env()["CEDANA_ADDRESS"]
    wrong_ca = _error(cli("ps", CEDANA_TLS_CA=pki["other.pem"]))
    assert wrong_ca.startswith(
        f"cedana: error: the daemon at {address} is not who tls.ca trusts: its certificate "
        f"does not verify against {pki['other.pem']}"
    )
    plaintext = _error(cli("ps", CEDANA_TLS_CA="", CEDANA_TLS_CLIENT_CERT="",
                           CEDANA_TLS_CLIENT_KEY=""))  # fmt: skip
    assert plaintext == (
        f"cedana: error: the daemon at {address} serves TLS and we spoke plaintext: set "
        "tls.ca (CEDANA_TLS_CA) to the CA that signed its certificate"
    )
    no_cert = _error(cli("ps", CEDANA_TLS_CLIENT_CERT="", CEDANA_TLS_CLIENT_KEY=""))
    assert no_cert.startswith(
        f"cedana: error: the daemon at {address} refused our TLS handshake (does it require "
        "a client certificate? set tls.client_cert and tls.client_key)"
    )
    missing = _error(cli("ps", CEDANA_TLS_CA=pki["nothing.pem"]))
    assert missing == (
        f"cedana: error: tls.ca = {pki['nothing.pem']} (env CEDANA_TLS_CA): no such file"
    )
    # A gRPC client without a certificate gets nothing either.
    with mutual.client(CEDANA_TLS_CLIENT_CERT="", CEDANA_TLS_CLIENT_KEY="") as stub:
        with pytest.raises(grpc.RpcError) as denied:
            stub.List(pb.ListReq(), timeout=10)
        assert denied.value.code() == grpc.StatusCode.UNAVAILABLE


def test_token_and_tls_together(tmp_path: Path, pki: Pki) -> None:
    d = Daemon(tmp_path, **_tcp(
        CEDANA_TLS_CERT=pki["server.pem"], CEDANA_TLS_KEY=pki["server.key"],
        CEDANA_TLS_CA=pki["ca.pem"], CEDANA_AUTH_TOKEN="s3cret",
    )).start()  # fmt: skip
    try:
        cli = d.cli()
        jid = unique_jid("tlt")
        assert cli.ok("exec", "--jid", jid, "--attach", "--", "echo", "hi") == "hi\n"
        assert [j["jid"] for j in cli.json("ps")] == [jid]
        address = d.env()["CEDANA_ADDRESS"]
        no_token = _error(cli("ps", CEDANA_AUTH_TOKEN=""))
        assert no_token.startswith(f"cedana: error: the daemon at {address} refused us: no valid")
        with d.client() as stub:
            with pytest.raises(grpc.RpcError) as denied:
                stub.List(pb.ListReq())
            assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
            listed = stub.List(pb.ListReq(), metadata=d.metadata()).jobs
            assert [j.jid for j in listed] == [jid]
    finally:
        kill_jobs(d)
        d.stop()


def _start_refused(tmp_path: Path, **env: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "cedana_gpu", "daemon", "start"],
        env=Daemon(tmp_path, **_tcp(**env)).env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1, out.stderr
    return out.stderr.strip().splitlines()[-1]


def test_daemon_names_the_tls_file_it_cannot_use(tmp_path: Path, pki: Pki) -> None:
    missing = _start_refused(
        tmp_path / "a", CEDANA_TLS_CERT=pki["gone.pem"], CEDANA_TLS_KEY=pki["server.key"],
        CEDANA_AUTH_TOKEN="t",
    )  # fmt: skip
    assert missing == (
        f"cedana: error: tls.cert = {pki['gone.pem']} (env CEDANA_TLS_CERT): no such file"
    )
    expired = _start_refused(
        tmp_path / "b", CEDANA_TLS_CERT=pki["old.pem"], CEDANA_TLS_KEY=pki["old.key"],
        CEDANA_AUTH_TOKEN="t",
    )  # fmt: skip
    assert expired.startswith(
        f"cedana: error: tls.cert = {pki['old.pem']} (env CEDANA_TLS_CERT): the certificate "
        "expired on Jan  2 00:00:00 2020 GMT"
    )
    half = _start_refused(tmp_path / "c", CEDANA_TLS_CERT=pki["server.pem"], CEDANA_AUTH_TOKEN="t")
    assert half.startswith(f"cedana: error: tls.cert = {pki['server.pem']} (env CEDANA_TLS_CERT) "
                           "needs tls.key too")  # fmt: skip
    # TLS alone encrypts but does not say who the client is: a token or client CA is needed.
    anyone = _start_refused(
        tmp_path / "d", CEDANA_TLS_CERT=pki["server.pem"], CEDANA_TLS_KEY=pki["server.key"]
    )
    assert anyone.startswith("cedana: error: protocol tcp needs a token")
