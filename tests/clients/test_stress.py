"""The fault-and-load suite: its corpus, its verdicts, and its quick form end to end against a Lite server."""
import dataclasses
import json
import math
import struct
import subprocess
import sys

import pytest

from clients.benchmark.load import Record, run_open_loop
from clients.benchmark.servers import REPO_ROOT
from clients.client import ClassifierClient
from clients.stress.corpus import Limits, build_corpus
from clients.stress.overload import measure_capacity
from clients.stress.results import CheckResult, is_refused_stream
from clients.stress.serving_checks import load_requests
from clients.stress.shutdown import is_cancelled_at_stop, is_refused
from serving.preprocessing import resized_size

LIMITS = Limits(max_images_per_request=16, max_message_bytes=4 * 1024 * 1024, max_image_pixels=40_000_000,
                resize_size=46)
# Statuses serving/README.md documents, checked here independently of the suite's own verdicts.
DOCUMENTED = {
    "empty request": "INVALID_ARGUMENT",
    "too many images (limit + 1)": "INVALID_ARGUMENT",
    "oversized message (limit + 1 MiB)": "RESOURCE_EXHAUSTED",
    "unknown model_version 99": "NOT_FOUND",
    "huge top_k (2^32-1)": "OK",
    "random bytes 1 KiB": "INVALID_ARGUMENT",
    "JPEG truncated at 2/3": "INVALID_ARGUMENT",
    "PNG claiming 50000 x 50000": "INVALID_ARGUMENT",
    "animated GIF": "INVALID_ARGUMENT",
    "16-bit RGB PNG": "OK",
    "CMYK JPEG": "OK",
}


@pytest.fixture(scope="module")
def corpus():
    """The corpus built against LIMITS, by case name."""
    return {case.name: case for case in build_corpus(LIMITS)}


def test_the_corpus_covers_the_issue_list(corpus):
    assert len(corpus) >= 30
    for needed in ("truncated", "JPEG", "PNG", "magic", "0 x 0", "65535", "bomb",
                   "16-bit", "CMYK", "animated GIF", "top_k", "empty request", "oversized", "random bytes",
                   "too many images"):
        assert any(needed in name for name in corpus), needed


def test_bombs_are_small_on_the_wire_but_huge_in_their_headers(corpus):
    bombs = [case for name, case in corpus.items() if "bomb" in name]
    assert len(bombs) == 2
    for case in bombs:
        data = case.request.images[0]
        width, height = struct.unpack(">II", data[16:24])  # IHDR follows the 8-byte signature and chunk header
        assert len(data) < 1024 * 1024 < width * height * 3 // 64
    over, under = sorted(bombs, key=lambda case: case.expected)
    assert over.expected == ("INVALID_ARGUMENT",) and under.expected == ("OK",)


@pytest.mark.parametrize("resize_size", [46, 256])  # the demo model's and the reference network's
def test_the_strips_lie_on_either_side_of_the_servers_resized_pixel_limit(resize_size):
    limits = dataclasses.replace(LIMITS, resize_size=resize_size)
    strips = {case.expected: case for case in build_corpus(limits) if "strip" in case.name}
    resized_pixels = {expected: math.prod(resized_size(1, int(case.name.split()[2]), resize_size))
                      for expected, case in strips.items()}
    assert resized_pixels[("OK",)] <= LIMITS.max_image_pixels < resized_pixels[("INVALID_ARGUMENT",)]
    assert int(strips[("INVALID_ARGUMENT",)].name.split()[2]) == limits.longest_strip + 1


def test_the_oversized_message_is_over_the_limit(corpus):
    assert corpus["oversized message (limit + 1 MiB)"].request.ByteSize() > LIMITS.max_message_bytes


def record(code, details, sent=0.0, end=1.0):
    """A finished call of the load generator."""
    return Record(start=sent, end=end, images=1, code=code, sent=sent, details=details)


def test_capacity_of_a_model_too_slow_for_its_window_comes_from_the_whole_run(server):
    """A window in which fewer calls end than run at once (as 3 s is for the reference network's 32-image
    requests) gives the capacity over the whole run, not a capacity of 0 that the overload would divide by."""
    with ClassifierClient(server.address) as client:
        quick = measure_capacity(client, load_requests(), concurrency=2, duration_s=0.001)
        steady = measure_capacity(client, load_requests(), concurrency=2, duration_s=2.0)
    assert quick["capacity_from"] == "run" and steady["capacity_from"] == "window"
    assert quick["throughput_rps"] > 0
    assert quick["throughput_ips"] == pytest.approx(32 * quick["throughput_rps"], rel=1e-3)
    assert quick["errors"] == {} and quick["unfinished"] == 0


def test_an_open_loop_needs_a_positive_rate(server):
    with ClassifierClient(server.address) as client, pytest.raises(ValueError, match="positive rate"):
        run_open_loop(client, load_requests(), 0.0, 0.0, 1.0, 5.0)


def test_refusals_are_told_apart_from_lost_calls():
    assert is_refused(record("RESOURCE_EXHAUSTED", "queue full"))
    assert is_refused(record("UNAVAILABLE", "the model is shutting down"))
    assert is_refused(record("UNAVAILABLE", "failed to connect to all addresses; last error: Connection refused"))
    assert is_refused(record("UNAVAILABLE", "connections to all backends failing; last error: UNAVAILABLE: "
                                            "ipv4:127.0.0.1:41935: recvmsg:Connection reset by peer (104)"))
    assert not is_refused(record("UNAVAILABLE", "Socket closed"))
    assert not is_refused(record("CANCELLED", "cancelled"))
    assert not is_refused(record("OK", ""))


def test_a_stream_refused_by_http2_is_told_apart_from_a_lost_call():
    assert is_refused_stream(record("UNAVAILABLE", "Stream removed (RST_STREAM (Received RST_STREAM with error code 7))"))
    assert not is_refused_stream(record("UNAVAILABLE", "Socket closed"))
    assert not is_refused_stream(record("RESOURCE_EXHAUSTED", "queue full"))


def test_a_missed_latency_bound_fails_only_where_latency_is_judged():
    result = CheckResult("overload")
    result.bound(True, "met")
    assert result.passed and result.missed_bounds == []
    result.bound(False, "rejection p99 300 ms > 250 ms")
    assert not result.passed and result.verdict == "FAIL"
    result.judge_latency = False
    assert result.passed and result.to_json()["missed_bounds"] == ["rejection p99 300 ms > 250 ms"]
    result.require(False, "2 calls lost")
    assert not result.passed


def test_quick_suite_loses_nothing_and_answers_as_documented(model_repository, tmp_path):
    report_path = tmp_path / "stress.json"
    command = [sys.executable, "-m", "clients.stress", "--quick", "--skip", "training", "--model-repository",
               str(model_repository), "--workdir", str(tmp_path / "work"), "--report", str(report_path)]
    completed = subprocess.run(command, cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    assert "requests lost: 0 (must be 0)" in completed.stdout
    report = json.loads(report_path.read_text())
    assert report["totals"]["requests_lost"] == 0 and report["totals"]["passed"]
    checks = {check["name"]: check for check in report["checks"]}
    assert {name: check["verdict"] for name, check in checks.items()} == {
        "bad-inputs": "PASS", "bad-inputs-http": "PASS", "overload": "PASS", "overload-http": "PASS",
        "reload": "PASS", "sigterm": "PASS", "sigterm-stream": "PASS", "cancellation": "PASS", "flood": "PASS",
        "worker-crash": "PASS",
        "worker-hang": "PASS", "training": "SKIP"}
    assert checks["reload"]["details"]["ok_after_swap"] > 0
    assert not checks["overload"]["latency_judged"]  # reported only: CI shares the cores with the test suite
    flood = checks["flood"]["details"]
    assert flood["limited"]["rss_growth_mib"] <= flood["rss_growth_bound_mib"]
    seen = checks["bad-inputs"]["details"]["cases"]
    rounds = checks["bad-inputs"]["details"]["rounds"]
    for name, code in DOCUMENTED.items():
        assert seen[name] == {code: rounds}, name
    assert checks["bad-inputs-http"]["details"]["cases"] == seen  # the same statuses over HTTP
    for name in ("overload", "overload-http"):
        assert set(checks[name]["details"]["codes"]) == {"OK", "RESOURCE_EXHAUSTED"}, name


def test_only_calls_sent_after_sigterm_and_cancelled_at_once_are_counted_as_cancelled_at_stop():
    signalled, grace = 10.0, 15.0
    assert is_cancelled_at_stop(record("CANCELLED", "CANCELLED", sent=10.01, end=10.02), signalled, grace)
    assert not is_cancelled_at_stop(record("CANCELLED", "CANCELLED", sent=9.99, end=10.02), signalled, grace)
    assert not is_cancelled_at_stop(record("CANCELLED", "CANCELLED", sent=10.01, end=26.0), signalled, grace)
    assert not is_cancelled_at_stop(record("UNAVAILABLE", "Socket closed", sent=10.01, end=10.02), signalled, grace)
