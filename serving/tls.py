"""Transport security: TLS and mutual-TLS server credentials, and whether an address is local.

`--tls-cert`/`--tls-key` turn TLS on (gRPC and the HTTP port); `--tls-client-ca` additionally requires every client to
present a certificate signed by that CA (mutual TLS). Files are read once, at start-up.
"""
from __future__ import annotations

import ipaddress
import ssl
from typing import Optional

import grpc

from serving.errors import StartupError

LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


class TlsFileError(StartupError, ValueError):
    """A certificate, key or CA file cannot be read."""


def server_credentials(cert: str, key: str, client_ca: Optional[str] = None) -> grpc.ServerCredentials:
    """TLS credentials from PEM files; with `client_ca`, clients must present a certificate it signed."""
    return grpc.ssl_server_credentials(
        [(_read(key, "--tls-key"), _read(cert, "--tls-cert"))],
        root_certificates=None if client_ca is None else _read(client_ca, "--tls-client-ca"),
        require_client_auth=client_ca is not None,
    )


def server_ssl_context(cert: str, key: str, client_ca: Optional[str] = None) -> ssl.SSLContext:
    """The same TLS (or mutual TLS) for the HTTP endpoint, as an ssl context (TLS 1.2 or newer)."""
    files = [(cert, "--tls-cert"), (key, "--tls-key")] + ([(client_ca, "--tls-client-ca")] if client_ca else [])
    for path, flag in files:
        _read(path, flag)  # the same checks and messages as for gRPC
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
        if client_ca is not None:
            context.load_verify_locations(client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except ssl.SSLError as error:
        raise TlsFileError(f"cannot use --tls-cert {cert} with --tls-key {key}: {error}") from None
    return context


def _read(path: str, flag: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise TlsFileError(f"cannot read {flag} {path}: {error}") from None
    if b"-----BEGIN " not in data:
        raise TlsFileError(f"{flag} {path} is not a PEM file")
    return data


def is_loopback(host: str) -> bool:
    """True for addresses reachable only from this machine (127.0.0.0/8, ::1, localhost)."""
    host = host.strip("[]")
    if host.lower() in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost: it may resolve to anything
        return False
