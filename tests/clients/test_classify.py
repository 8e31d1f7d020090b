"""The classify command line against a real server: table, JSON, and one-line errors with exit status 1."""
import json
import subprocess
import sys
from pathlib import Path

from clients.classify import main


def test_table_shows_every_image_with_its_ranked_labels(server, images, capsys):
    assert main(["--target", server.address, "--top-k", "2", "--json", *images[:2]]) == 0
    expected = json.loads(capsys.readouterr().out)
    assert main(["--target", server.address, "--top-k", "2", *images[:2]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"model {expected['model_name']} version {expected['model_version']}"
    assert lines[1].split() == ["image", "rank", "class_id", "label", "score"]
    rows = [line.split() for line in lines[2:]]
    assert len(rows) == 4
    for image_index, entry in enumerate(expected["results"]):
        first, second = rows[2 * image_index], rows[2 * image_index + 1]
        top1, top2 = entry["predictions"]
        assert first == [entry["image"], "1", str(top1["class_id"]), top1["label"], f"{top1['score']:.4f}"]
        assert second == ["2", str(top2["class_id"]), top2["label"], f"{top2['score']:.4f}"]


def test_json_output_keeps_request_order_across_requests(server, images, capsys):
    files = images[:3]
    assert main(["--target", server.address, "--json", "--top-k", "3", "--images-per-request", "2", *files]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [entry["image"] for entry in report["results"]] == files
    for entry in report["results"]:
        assert len(entry["predictions"]) == 3
        assert set(entry["predictions"][0]) == {"class_id", "label", "score"}


def test_unreachable_server_is_one_error_line_and_exit_1(free_port, images, capsys):
    assert main(["--target", f"127.0.0.1:{free_port}", "--retries", "1", images[0]]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1
    assert captured.err.startswith(f"error: 127.0.0.1:{free_port}: UNAVAILABLE")


def test_bad_image_names_the_file_and_exits_1(server, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert main(["--target", server.address, str(bad)]) == 1
    err = capsys.readouterr().err
    assert "INVALID_ARGUMENT" in err and str(bad) in err and len(err.splitlines()) == 1


def test_missing_file_exits_1(server, tmp_path, capsys):
    assert main(["--target", server.address, str(tmp_path / "absent.jpg")]) == 1
    assert "absent.jpg" in capsys.readouterr().err


def test_runs_as_a_module(server, images):
    completed = subprocess.run([sys.executable, "-m", "clients.classify", "--target", server.address, images[0]],
                               capture_output=True, text=True, timeout=60,
                               cwd=str(Path(__file__).resolve().parents[2]))
    assert completed.returncode == 0, completed.stderr
    assert images[0] in completed.stdout


def test_wait_ready_returns_once_the_server_is_serving(server, images, capsys):
    assert main(["--target", server.address, "--wait-ready", "30", "--json", images[0]]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 1


def test_wait_ready_gives_up_with_one_error_line(free_port, images, capsys):
    assert main(["--target", f"127.0.0.1:{free_port}", "--wait-ready", "1.5", images[0]]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "not SERVING after 2 s" in err and "DEADLINE_EXCEEDED" in err
