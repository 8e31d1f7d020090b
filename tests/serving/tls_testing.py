"""TLS for tests: certificates made at test time with openssl (no key is committed), TLS server starts.

    pki = make_pki(tmp_path)   # pki.ca, pki.server_cert, pki.client_cert, pki.rogue_client_cert ...
    server = start_tls_server(repository, log_dir, client_credentials(pki), "--tls-cert", ...)   # SERVING
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.benchmark.servers import ServerProcess

EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
SERVER_EXTENSIONS = "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
CLIENT_EXTENSIONS = "extendedKeyUsage=clientAuth\n"


def have_openssl() -> bool:
    """True when the openssl command is on PATH."""
    return shutil.which("openssl") is not None


@dataclass(frozen=True)
class Pki:
    """PEM files of a test CA, a server certificate for localhost/127.0.0.1 and client certificates."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path
    """Another CA: clients trusting only it must refuse the server."""
    rogue_client_cert: Path
    """A client certificate signed by the other CA, which the server must refuse."""
    rogue_client_key: Path


def make_pki(root: Path) -> Pki:
    """Create the CA, server and client certificates under `root` (EC P-256, valid for two days)."""
    root.mkdir(parents=True, exist_ok=True)
    for ca in ("ca", "rogue-ca"):
        _openssl(root, "req", "-x509", *EC_KEY, "-days", "2", "-subj", f"/CN={ca}", "-keyout", f"{ca}.key",
                 "-out", f"{ca}.pem")
    _issue(root, "server", "ca", SERVER_EXTENSIONS)
    _issue(root, "client", "ca", CLIENT_EXTENSIONS)
    _issue(root, "rogue-client", "rogue-ca", CLIENT_EXTENSIONS)
    return Pki(ca=root / "ca.pem", server_cert=root / "server.pem", server_key=root / "server.key",
               client_cert=root / "client.pem", client_key=root / "client.key",
               rogue_ca=root / "rogue-ca.pem", rogue_client_cert=root / "rogue-client.pem", rogue_client_key=root / "rogue-client.key")


def _issue(root: Path, name: str, ca: str, extensions: str) -> None:
    _openssl(root, "req", *EC_KEY, "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr")
    (root / (f"{name}.ext")).write_text(extensions)
    _openssl(root, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem")


def _openssl(root: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=str(root), check=True, capture_output=True, timeout=30)


def client_credentials(pki: Pki, cert: Optional[Path] = None, key: Optional[Path] = None) -> grpc.ChannelCredentials:
    """Credentials trusting the test CA; with `cert` and `key`, presenting that client certificate."""
    return grpc.ssl_channel_credentials(pki.ca.read_bytes(), None if key is None else key.read_bytes(),
                                        None if cert is None else cert.read_bytes())


def health_status(address: str, credentials: Optional[grpc.ChannelCredentials],
                  service: str = "genet.v1.Classifier") -> int:
    """One health Check, without any token, over TLS unless `credentials` is None."""
    channel = (grpc.insecure_channel(address) if credentials is None
               else grpc.secure_channel(address, credentials))
    with channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                         timeout=5).status


def start_tls_server(model_repository: Path, log_dir: Path, credentials: grpc.ChannelCredentials,
                     *args: str) -> ServerProcess:
    """A Lite server on the tiny model started with `args`, SERVING when probed over `credentials`."""
    return ServerProcess(["--model-repository", str(model_repository), "--backend", "mslite", "--threads", "1",
                          *args], log_dir / "server.log", startup_timeout_s=180, credentials=credentials).start()


def start_token_server(pki, model_repository: Path, log_dir: Path, token_file) -> ServerProcess:
    """A Lite server speaking TLS and requiring a bearer token listed in `token_file`."""
    return start_tls_server(model_repository, log_dir, client_credentials(pki),
                            "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
                            "--auth-token-file", str(token_file))


def start_mtls_server(pki, model_repository: Path, log_dir: Path) -> ServerProcess:
    """A Lite server requiring client certificates signed by the test CA."""
    return start_tls_server(model_repository, log_dir, client_credentials(pki, pki.client_cert, pki.client_key),
                            "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
                            "--tls-client-ca", str(pki.ca))
