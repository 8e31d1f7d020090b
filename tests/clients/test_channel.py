"""TLS and mutual TLS of the client against a real gRPC TLS server (certificates made by openssl).

The server here speaks only grpc.health.v1: a call to the Classifier that passes the handshake
comes back UNIMPLEMENTED, one refused during the handshake comes back UNAVAILABLE.
"""
import shutil
import subprocess
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from clients.channel import TlsConfig
from clients.client import ClassifierClient, ClientError, RetryPolicy

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
NO_RETRY = RetryPolicy(max_attempts=1)


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=str(cwd), check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for localhost and a client certificate, as PEM files."""
    root = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=root)
    for name, extensions in (("server", "subjectAltName=DNS:localhost"), ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=root)
        (root / (f"{name}.ext")).write_text(f"{extensions}\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=root)
    return root


@pytest.fixture(scope="module")
def mtls_target(pki):
    """Port of a gRPC server that requires a client certificate signed by the CA."""
    credentials = grpc.ssl_server_credentials(
        [((pki / "server.key").read_bytes(), (pki / "server.pem").read_bytes())],
        root_certificates=(pki / "ca.pem").read_bytes(), require_client_auth=True)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def _call_code(target, tls):
    with ClassifierClient(target, tls=tls, retry=NO_RETRY, timeout_s=10) as client:
        with pytest.raises(ClientError) as caught:
            client.model_info()
    return caught.value.code


def test_mutual_tls_handshake_succeeds_with_client_certificate(pki, mtls_target):
    tls = TlsConfig(root_ca=pki / "ca.pem", cert=pki / "client.pem", key=pki / "client.key", server_name="localhost")
    assert _call_code(mtls_target, tls) == grpc.StatusCode.UNIMPLEMENTED


def test_handshake_fails_without_client_certificate_or_over_plaintext(pki, mtls_target):
    assert _call_code(mtls_target, TlsConfig(root_ca=pki / "ca.pem", server_name="localhost")) == \
        grpc.StatusCode.UNAVAILABLE
    assert _call_code(mtls_target, None) == grpc.StatusCode.UNAVAILABLE


def test_certificate_without_key_is_refused():
    with pytest.raises(ValueError):
        TlsConfig(cert="client.pem")
