"""The classify command line against real TLS, mutual-TLS and token-protected servers.

Certificates are made by openssl at test time; tokens come from --token-file or GENET_TOKEN.
"""
import json
import os
import subprocess
import sys

import pytest
from grpc_health.v1 import health_pb2

from clients.benchmark.servers import REPO_ROOT
from clients.classify import main
from tests.serving.tls_testing import client_credentials, have_openssl, health_status, start_token_server

pytestmark = pytest.mark.skipif(not have_openssl(), reason="needs the openssl command")
TOKEN = "cli-token-5e21"


@pytest.fixture(scope="module")
def token_files(tmp_path_factory):
    """Token files: the server's, the right one, a wrong one and one holding two tokens."""
    root = tmp_path_factory.mktemp("tokens")
    contents = {"server": f"# tokens\n{TOKEN}\n", "right": f"{TOKEN}\n", "wrong": "guess\n",
                "two": f"{TOKEN}\nother\n"}
    for name, text in contents.items():
        (root / name).write_text(text)
    return {name: str(root / name) for name in contents}


@pytest.fixture(scope="module")
def token_server(pki, token_files, model_repository, tmp_path_factory):
    """A TLS server requiring a bearer token."""
    server = start_token_server(pki, model_repository, tmp_path_factory.mktemp("logs"), token_files["server"])
    yield server
    assert server.stop() == 0, server.log()


def classify(capsys, target, *options):
    """Run the CLI once; (exit status, stdout, stderr)."""
    status = main(["--target", target, "--retries", "0", "--timeout", "10", *options])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_tokens_over_tls(token_server, pki, token_files, images, capsys, monkeypatch):
    monkeypatch.delenv("GENET_TOKEN", raising=False)
    tls = ("--tls-ca", str(pki.ca))
    status, out, _ = classify(capsys, token_server.address, *tls, "--token-file", token_files["right"], "--json",
                              *images[:2])
    assert status == 0 and [entry["image"] for entry in json.loads(out)["results"]] == images[:2]
    refusals = [((), "UNAUTHENTICATED"), (("--token-file", token_files["wrong"]), "PERMISSION_DENIED"),
                (("--token-file", token_files["two"]), "one word")]
    for options, message in refusals:
        status, out, err = classify(capsys, token_server.address, *tls, *options, images[0])
        assert status == 1 and out == "" and message in err and len(err.splitlines()) == 1, err
    monkeypatch.setenv("GENET_TOKEN", TOKEN)
    assert classify(capsys, token_server.address, *tls, images[0])[0] == 0
    assert health_status(token_server.address, client_credentials(pki)) == health_pb2.HealthCheckResponse.SERVING


def test_a_tls_server_refuses_plaintext_and_a_client_that_trusts_another_ca(token_server, pki, images, capsys,
                                                                            monkeypatch):
    monkeypatch.setenv("GENET_TOKEN", TOKEN)
    status, _, err = classify(capsys, token_server.address, images[0])
    assert status == 1 and "UNAVAILABLE" in err
    status, _, err = classify(capsys, token_server.address, "--tls-ca", str(pki.rogue_ca), images[0])
    assert status == 1 and "UNAVAILABLE" in err


def test_mutual_tls_needs_the_client_certificate(mtls_server, pki, images, capsys):
    tls = ("--tls-ca", str(pki.ca))
    status, out, _ = classify(capsys, mtls_server.address, *tls, "--tls-cert", str(pki.client_cert),
                              "--tls-key", str(pki.client_key), images[0])
    assert status == 0 and images[0] in out
    refused = [(), ("--tls-cert", str(pki.rogue_client_cert), "--tls-key", str(pki.rogue_client_key))]
    for options in refused:
        status, out, err = classify(capsys, mtls_server.address, *tls, *options, images[0])
        assert status == 1 and out == "" and "UNAVAILABLE" in err
    status, _, err = classify(capsys, mtls_server.address, *tls, "--tls-cert", str(pki.client_cert), images[0])
    assert status == 1 and "both a client certificate and its key" in err


def test_the_module_reads_the_token_from_the_environment(token_server, pki, images):
    completed = subprocess.run([sys.executable, "-m", "clients.classify", "--target", token_server.address,
                                "--tls-ca", str(pki.ca), images[0]], capture_output=True, text=True, timeout=60,
                               cwd=str(REPO_ROOT), env=dict(os.environ, GENET_TOKEN=TOKEN, PYTHONPATH=str(REPO_ROOT)))
    assert completed.returncode == 0, completed.stderr
    assert images[0] in completed.stdout
