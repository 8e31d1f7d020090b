"""gRPC channels for the clients: one or several targets (round_robin), optional TLS and mutual TLS."""
import ipaddress
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

import grpc

# Spread calls over every address the target resolves to: several replicas given as
# "ipv4:a:p1,b:p2", or one DNS name with several records, scale out without a proxy.
ROUND_ROBIN_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


@dataclass(frozen=True)
class TlsConfig:
    """Files for a TLS channel; give cert and key together for mutual TLS."""

    root_ca: Optional[Path] = None
    """PEM bundle of the CA that signed the server's certificate; None: the system's roots."""
    cert: Optional[Path] = None
    """PEM client certificate chain, presented to servers that require mutual TLS."""
    key: Optional[Path] = None
    """PEM private key of the client certificate."""
    server_name: Optional[str] = None
    """Name to verify the server certificate against when it differs from the target's host."""

    def __post_init__(self):
        if (self.cert is None) != (self.key is None):
            raise ValueError("mutual TLS needs both a client certificate and its key")

    def credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials read from the configured PEM files."""
        return grpc.ssl_channel_credentials(
            root_certificates=_read_optional(self.root_ca),
            private_key=_read_optional(self.key),
            certificate_chain=_read_optional(self.cert),
        )


def _read_optional(path: Optional[Path]) -> Optional[bytes]:
    return None if path is None else Path(path).read_bytes()


def join_targets(addresses: Sequence[str]) -> str:
    """One gRPC target for the given "host:port" addresses.

    A single address is returned unchanged, so any gRPC target syntax works
    ("dns:///name:port", "ipv4:a:p1,b:p2", "unix:path"). Several addresses become
    "ipv4:ip1:p1,ip2:p2", host names resolved to their first IPv4 address.
    """
    if not addresses:
        raise ValueError("no target address given")
    if len(addresses) == 1:
        return addresses[0]
    return f"ipv4:{','.join((_resolve_ipv4(address) for address in addresses))}"


def _resolve_ipv4(address: str) -> str:
    host, separator, port = address.rpartition(":")
    if not separator or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    try:
        ipaddress.IPv4Address(host)
        return address
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ValueError(f"cannot resolve {host!r} to an IPv4 address: {error}") from None
    return f"{infos[0][4][0]}:{port}"


def create_channel(
    target: str,
    tls: Optional[TlsConfig] = None,
    options: Sequence[Tuple[str, object]] = (),
) -> grpc.Channel:
    """A channel to target with round_robin load balancing, over TLS when tls is given."""
    all_options = [("grpc.service_config", ROUND_ROBIN_SERVICE_CONFIG)]
    if tls is not None and tls.server_name:
        all_options.append(("grpc.ssl_target_name_override", tls.server_name))
    all_options.extend(options)
    if tls is None:
        return grpc.insecure_channel(target, options=all_options)
    return grpc.secure_channel(target, tls.credentials(), options=all_options)
