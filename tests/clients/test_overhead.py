"""The per-call cost measurements: the server's own CPU per call against the offline baseline, and the
floor under it (a grpc.aio servicer that answers at once), each over real gRPC calls to real processes."""
import json

import pytest

from clients.benchmark import grpc_floor, overhead


def test_the_grpc_floor_is_measured_over_real_calls_at_each_level(images, capsys):
    assert grpc_floor.main(["--image", str(images[0]), "--concurrency", "1,4", "--seconds", "0.3",
                            "--rounds", "2"]) == 0
    levels = json.loads(capsys.readouterr().out)
    assert set(levels) == {"c=1", "c=4"}
    for level in levels.values():
        assert level["failed_calls"] == 0
        assert level["calls_per_s"] > 0 and level["servicer_cpu_ms_per_call"] > 0
        assert level["client_cpu_ms_per_call"] > 0


def test_the_servers_own_cost_is_its_cpu_per_call_minus_the_offline_cpu_per_image(model_repository, images, capsys):
    assert overhead.main(["--model-repository", str(model_repository), "--image", str(images[0]),
                          "--calls", "100", "--rounds", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    (server,) = report["rounds"]["server"]
    assert server["front_ms"] > 0 and server["workers_ms"] > 0  # the worker's CPU is counted too
    assert report["server_cpu_ms_per_call"] == pytest.approx(server["front_ms"] + server["workers_ms"])
    assert report["offline_cpu_ms_per_image"] > 0
    assert report["overhead_ms_per_call"] == pytest.approx(
        report["server_cpu_ms_per_call"] - report["offline_cpu_ms_per_image"])
