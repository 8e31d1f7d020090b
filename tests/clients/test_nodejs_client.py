"""A client in another language (Node.js), written from the .proto alone: Classify, ClassifyStream, GetModelInfo,
reflection."""
import json
import re
import shutil
import subprocess

import pytest

from clients.benchmark.servers import REPO_ROOT
from clients.client import ClassifierClient

NODE_CLIENT = REPO_ROOT / "clients" / "nodejs"
PROTO = REPO_ROOT / "protos" / "genet" / "v1" / "classifier.proto"
NETWORK_ERRORS = {"ECONNREFUSED", "ECONNRESET", "ENOTFOUND", "EAI_AGAIN", "ETIMEDOUT", "EHOSTUNREACH",
                  "ENETUNREACH", "ECONNABORTED"}


@pytest.fixture(scope="module")
def node_client(tmp_path_factory):
    """clients/nodejs/classify.js with its pinned packages installed from the npm registry.

    Skipped, with the reason, when Node.js is missing or the registry cannot be reached (`npm ping`
    fails); an install that fails while the registry answers is a failure.
    """
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("Node.js and npm are not installed")
    unreachable = registry_unreachable()
    if unreachable:
        pytest.skip(f"the npm registry cannot be reached: {unreachable}")
    workdir = tmp_path_factory.mktemp("nodejs")
    for name in ("package.json", "classify.js"):
        shutil.copy(str(NODE_CLIENT / name), str(workdir))
    completed = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=str(workdir),
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, f"npm install failed although the registry answers:\n{completed.stderr[-3000:]}"
    return workdir / "classify.js"


def registry_unreachable() -> str:
    """Why the configured registry cannot be reached (`npm ping` failed with a network error), else ""."""
    try:
        completed = subprocess.run(["npm", "ping"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "npm ping timed out after 60 s"
    output = completed.stderr + completed.stdout
    code = re.search(r"npm (?:error|ERR!) code (\S+)", output)
    if completed.returncode == 0 or code is None or code.group(1) not in NETWORK_ERRORS:
        return ""  # reachable, or another failure that npm install will report
    reason = re.search(r"(FetchError: .*|request to .*)", output)
    return reason.group(1) if reason else code.group(1)


def test_a_node_client_from_the_proto_alone_classifies_and_discovers_the_service(node_client, server, images,
                                                                                 labels):
    completed = subprocess.run(["node", str(node_client), server.address, str(PROTO), images[0]],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    info, predictions, streamed, services = [json.loads(line) for line in completed.stdout.splitlines()]
    assert info["labels"] == labels and info["num_classes"] == len(labels) and info["backend"] == "mslite"
    with ClassifierClient(server.address) as client:
        expected = client.classify([images[0]], top_k=3).predictions[0]
    assert [p["class_id"] for p in predictions] == [p.class_id for p in expected]
    assert [p["label"] for p in predictions] == [p.label for p in expected]
    assert [p["score"] for p in predictions] == pytest.approx([p.score for p in expected], abs=1e-6)
    assert "genet.v1.Classifier" in services and "grpc.health.v1.Health" in services
    answers = {answer["request_id"]: answer for answer in streamed}
    assert sorted(answers) == ["bad", "image"]
    assert answers["image"]["outcome"] == "response" and answers["image"]["predictions"] == predictions
    assert answers["bad"]["outcome"] == "error" and answers["bad"]["error"]["code"] == 3  # INVALID_ARGUMENT
