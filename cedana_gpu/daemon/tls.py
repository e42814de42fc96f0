"""TLS for the daemon's TCP listener, and the client's side of it.

The daemon serves TLS when ``tls.cert`` and ``tls.key`` are set (protocol
tcp); with ``tls.client_ca`` it also requires every client to show a
certificate that CA signed (mutual TLS). A client connects with TLS when
``tls.ca`` is set, verifying the daemon's certificate against it (the
certificate must name the host of ``address``), and shows
``tls.client_cert``/``tls.client_key`` when they are set.

Every file is read here, before gRPC sees it, so a missing, unreadable,
mismatched or expired one is one line naming the field and the file, not
a handshake that fails later with a message about neither.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from typing import Any

from cedana_gpu.config import Config
from cedana_gpu.errors import SetupError

PROBE_TIMEOUT = 2.0


class TlsError(SetupError):
    """A TLS file or setting cannot be used (one line naming the field and the file)."""


def _where(cfg: Config, name: str) -> str:
    return f"{name} = {cfg[name]} ({cfg.sources[name]})"


def _read(cfg: Config, name: str) -> bytes:
    try:
        with open(cfg[name], "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise TlsError(f"{_where(cfg, name)}: no such file") from None
    except OSError as e:
        raise TlsError(f"{_where(cfg, name)}: cannot read it: {e.strerror}") from None


def _check_pair(cfg: Config, cert: str, key: str) -> tuple[bytes, bytes]:
    """The PEM of a certificate and its key, checked to belong together and not expired."""
    if bool(cfg[cert]) != bool(cfg[key]):
        have, lack = (cert, key) if cfg[cert] else (key, cert)
        raise TlsError(f"{_where(cfg, have)} needs {lack} too (set both, or neither)")
    cert_pem, key_pem = _read(cfg, cert), _read(cfg, key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cfg[cert], cfg[key])
    except ssl.SSLError as e:
        raise TlsError(
            f"{_where(cfg, cert)} and {key}: not a PEM certificate and its key ({e.reason})"
        ) from None
    _check_not_expired(cfg, cert)
    return cert_pem, key_pem


def _check_ca(cfg: Config, name: str) -> bytes:
    pem = _read(cfg, name)
    try:
        ssl.create_default_context(cafile=cfg[name])
    except ssl.SSLError as e:
        raise TlsError(f"{_where(cfg, name)}: not a PEM CA certificate ({e.reason})") from None
    _check_not_expired(cfg, name)
    return pem


def _check_not_expired(cfg: Config, name: str) -> None:
    # CPython's own certificate decoder (the ssl module's tests use it); where
    # it is missing the handshake still refuses an expired certificate.
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is None:
        return
    try:
        not_after = decode(cfg[name]).get("notAfter")
        if not not_after:
            return
        expires = ssl.cert_time_to_seconds(not_after)
    except (ssl.SSLError, ValueError, OSError):
        return  # load_cert_chain/create_default_context said what is wrong with it
    if expires < time.time():
        raise TlsError(f"{_where(cfg, name)}: the certificate expired on {not_after}: renew it")


def serves_tls(cfg: Config) -> bool:
    return cfg["protocol"] == "tcp" and bool(cfg["tls.cert"] or cfg["tls.key"])


def uses_tls(cfg: Config) -> bool:
    return cfg["protocol"] == "tcp" and bool(cfg["tls.ca"] or cfg["tls.client_cert"])


def server_credentials(cfg: Config) -> Any:
    """The daemon's ``grpc.ServerCredentials`` (``serves_tls`` must be true)."""
    import grpc

    cert_pem, key_pem = _check_pair(cfg, "tls.cert", "tls.key")
    client_ca = _check_ca(cfg, "tls.client_ca") if cfg["tls.client_ca"] else None
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=client_ca, require_client_auth=bool(client_ca)
    )


def channel(cfg: Config, target: str) -> Any:
    """A gRPC channel to ``target``: with TLS when the configuration says so."""
    import grpc

    if not uses_tls(cfg):
        return grpc.insecure_channel(target)
    ca = _check_ca(cfg, "tls.ca") if cfg["tls.ca"] else None
    key = cert = None
    if cfg["tls.client_cert"] or cfg["tls.client_key"]:
        cert, key = _check_pair(cfg, "tls.client_cert", "tls.client_key")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
    return grpc.secure_channel(target, credentials)


def speaks_tls(address: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether whoever listens at ``host:port`` answers a TLS handshake (unverified)."""
    host, _, port = address.rpartition(":")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host.strip("[]")),
        ):
            return True
    except (OSError, ValueError):
        return False


def explain_unavailable(cfg: Config, details: str) -> str | None:
    """One line for a TCP connection that failed for a TLS reason; None for any other."""
    address = cfg["address"]
    low = details.lower()
    if uses_tls(cfg):
        if "certificate_verify_failed" in low or "certificate verify failed" in low:
            ca = cfg["tls.ca"] or "the system's CAs"
            return (
                f"the daemon at {address} is not who tls.ca trusts: its certificate does "
                f"not verify against {ca} ({_reason(details)}); set tls.ca to the CA that "
                "signed the daemon's certificate"
            )
        if "ssl" in low or "handshake" in low or "tls" in low or "socket closed" in low:
            hint = (
                ""
                if cfg["tls.client_cert"]
                else " (does it require a client certificate? set tls.client_cert and "
                "tls.client_key)"
            )
            return f"the daemon at {address} refused our TLS handshake{hint}: {_reason(details)}"
        return None
    if speaks_tls(str(address)):
        return (
            f"the daemon at {address} serves TLS and we spoke plaintext: set tls.ca "
            "(CEDANA_TLS_CA) to the CA that signed its certificate"
        )
    return None


def _reason(details: str) -> str:
    """The specific part of gRPC's connection error (it starts with what it tried)."""
    text = " ".join(details.split())
    verify = re.search(r"CERTIFICATE_VERIFY_FAILED: ([^:;]+)", text)
    if verify:
        return f"certificate verify failed: {verify[1].strip()}"
    text = re.sub(r"^failed to connect to all addresses; last error: \w+: ", "", text)
    return text[-200:]
