"""TLS, mutual TLS and bearer tokens on real server processes; start-up refusals of unsafe settings.

Certificates are made by openssl at test time (tests/serving/tls_testing.py).
"""
import logging
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from clients.benchmark.servers import REPO_ROOT
from genet.v1 import classifier_pb2, classifier_pb2_grpc
from serving.auth import TokenFileError, read_tokens
from serving.cli import read_security
from serving.settings import Settings
from tests.serving.tls_testing import client_credentials, have_openssl, health_status, start_token_server

pytestmark = pytest.mark.skipif(not have_openssl(), reason="needs the openssl command")
TOKENS = ("first-token-7f3a", "second-token-91bc")
CLASSIFIER = "genet.v1.Classifier"


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    """The server's token file: a comment, a blank line and two tokens."""
    path = tmp_path_factory.mktemp("auth") / "tokens.txt"
    path.write_text(f"# accepted tokens\n\n{TOKENS[0]}\n  {TOKENS[1]}  \n")
    return path


def channel(address, credentials):
    """A plaintext channel when `credentials` is None, else a TLS one."""
    if credentials is None:
        return grpc.insecure_channel(address)
    return grpc.secure_channel(address, credentials)


def info_code(address, credentials, token=None):
    """The status code of a GetModelInfo call carrying `token` (OK when it succeeds)."""
    metadata = () if token is None else (("authorization", token),)
    with channel(address, credentials) as open_channel:
        try:
            classifier_pb2_grpc.ClassifierStub(open_channel).GetModelInfo(
                classifier_pb2.GetModelInfoRequest(), timeout=10, metadata=metadata)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def tls_token_server(pki, token_file, model_repository, tmp_path_factory):
    """A Lite server speaking TLS and requiring a bearer token."""
    server = start_token_server(pki, model_repository, tmp_path_factory.mktemp("logs"), token_file)
    yield server
    assert server.stop() == 0, server.log()


def test_tokens_are_checked_and_health_and_reflection_stay_open(tls_token_server, pki):
    address, tls = tls_token_server.address, client_credentials(pki)
    assert info_code(address, tls) == grpc.StatusCode.UNAUTHENTICATED
    assert info_code(address, tls, f"Basic {TOKENS[0]}") == grpc.StatusCode.UNAUTHENTICATED
    assert info_code(address, tls, f"Bearer not-{TOKENS[0]}") == grpc.StatusCode.PERMISSION_DENIED
    assert info_code(address, tls, f"Bearer {TOKENS[0][:-1]}") == grpc.StatusCode.PERMISSION_DENIED
    for token in TOKENS:
        assert info_code(address, tls, f"Bearer {token}") == grpc.StatusCode.OK
    assert health_status(address, tls) == health_pb2.HealthCheckResponse.SERVING
    assert health_status(address, tls, service="") == health_pb2.HealthCheckResponse.SERVING
    with channel(address, tls) as open_channel:
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (response,) = reflection_pb2_grpc.ServerReflectionStub(open_channel).ServerReflectionInfo(
            iter([request]), timeout=10)
    assert CLASSIFIER in {service.name for service in response.list_services_response.service}
    assert tls_token_server.metric("genet_auth_rejections_total", code="UNAUTHENTICATED") == 2
    assert tls_token_server.metric("genet_auth_rejections_total", code="PERMISSION_DENIED") == 2


def test_streams_need_the_token_too(tls_token_server, pki):
    def stream_outcome(token=None):
        metadata = () if token is None else (("authorization", token),)
        with channel(tls_token_server.address, client_credentials(pki)) as open_channel:
            stub = classifier_pb2_grpc.ClassifierStub(open_channel)
            try:
                (response,) = stub.ClassifyStream(iter([classifier_pb2.ClassifyRequest(request_id="no images")]),
                                                  timeout=10, metadata=metadata)
            except grpc.RpcError as error:
                return error.code()
        return response.error.message

    assert stream_outcome() == grpc.StatusCode.UNAUTHENTICATED
    assert stream_outcome(f"Bearer not-{TOKENS[0]}") == grpc.StatusCode.PERMISSION_DENIED
    assert stream_outcome(f"Bearer {TOKENS[1]}") == "the request has no images"


def test_a_tls_server_refuses_plaintext_and_untrusted_certificates(tls_token_server, pki):
    assert info_code(tls_token_server.address, None, f"Bearer {TOKENS[0]}") == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.RpcError) as caught:
        health_status(tls_token_server.address, grpc.ssl_channel_credentials(pki.rogue_ca.read_bytes()))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "TLS" in tls_token_server.log().split("serving on", 1)[1].splitlines()[0]


def test_mutual_tls_accepts_only_clients_with_a_certificate_from_the_ca(mtls_server, pki):
    address = mtls_server.address
    assert info_code(address, client_credentials(pki, pki.client_cert, pki.client_key)) == grpc.StatusCode.OK
    assert info_code(address, client_credentials(pki)) == grpc.StatusCode.UNAVAILABLE
    rogue = client_credentials(pki, pki.rogue_client_cert, pki.rogue_client_key)
    assert info_code(address, rogue) == grpc.StatusCode.UNAVAILABLE
    assert info_code(address, None) == grpc.StatusCode.UNAVAILABLE


def run_cli(*args):
    """`python -m serving ARGS` in .venv; it must refuse before loading anything."""
    return subprocess.run([sys.executable, "-m", "serving", "--port", "0", *args], cwd=str(REPO_ROOT),
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args, message", [
    (("--host", "0.0.0.0"), "--host 0.0.0.0 is reachable from other machines"),
    (("--host", "192.0.2.7"), "give --tls-cert and --tls-key, or --allow-insecure"),
    (("--tls-cert", "server.pem"), "--tls-cert and --tls-key go together"),
    (("--tls-client-ca", "ca.pem"), "--tls-client-ca (mutual TLS) needs --tls-cert"),
    (("--metrics-port", "0", "--metrics-host", "0.0.0.0"), "--metrics-host 0.0.0.0 is reachable"),
    (("--host", "::", "--tls-cert", "server.pem", "--tls-key", "server.key", "--metrics-port", "0"),
     "/metrics is plain HTTP without authentication: give --allow-insecure"),
])
def test_unsafe_or_incomplete_security_settings_are_refused(model_repository, args, message):
    completed = run_cli("--model-repository", str(model_repository), *args)
    assert completed.returncode == 2 and message in completed.stderr, completed.stderr


def test_unreadable_security_files_stop_the_start(model_repository, pki, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# no token yet\n\n")
    cases = [(("--auth-token-file", str(tmp_path / "absent.txt")), "cannot read --auth-token-file"),
             (("--auth-token-file", str(empty)), "holds no token"),
             (("--tls-cert", str(empty), "--tls-key", str(pki.server_key)), "is not a PEM file")]
    for args, message in cases:
        completed = run_cli("--model-repository", str(model_repository), *args)
        assert completed.returncode == 2 and "cannot serve: " in completed.stderr, completed.stderr
        assert message in completed.stderr


def test_plaintext_or_metrics_beyond_localhost_need_allow_insecure_and_warn(token_file, caplog):
    for host in ("localhost", "::1", "127.0.0.2"):
        assert Settings(host=host).host == host
    with pytest.raises(ValueError, match="--allow-insecure"):
        Settings(host="genet.example.com")
    assert Settings(metrics_port=0, metrics_host="::1").metrics_address == "::1"
    assert Settings(metrics_port=0, metrics_host="0.0.0.0", allow_insecure=True).metrics_address == "0.0.0.0"
    settings = Settings(host="0.0.0.0", allow_insecure=True, auth_token_file=str(token_file))
    with caplog.at_level(logging.WARNING):
        security = read_security(settings)
    assert security.credentials is None and len(security.tokens) == 2
    assert "PLAINTEXT on 0.0.0.0" in caplog.text and "bearer tokens" in caplog.text


def test_token_file_rules(tmp_path):
    path = tmp_path / "tokens"
    path.write_text("# comment\n  alpha  \n\nbeta\n")
    assert read_tokens(str(path)) == [b"alpha", b"beta"]
    path.write_text("two words\n")
    with pytest.raises(TokenFileError, match="whitespace"):
        read_tokens(str(path))
