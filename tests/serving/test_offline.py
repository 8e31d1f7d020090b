"""The offline baseline (python -m serving.offline) in its backend's interpreter: Lite in .venv-lite."""
import json
import subprocess

from runtime_env import REPO_ROOT, backend_python
from tests.serving.conftest import MODEL_NAME


def test_a_pause_before_each_iteration_idles_the_runtime_and_is_not_timed(model_repository, fmnist_images, tmp_path):
    image = tmp_path / "image.jpg"
    image.write_bytes(next(iter(fmnist_images.values())))
    model_dir = model_repository / MODEL_NAME / "1"
    command = [backend_python("mslite"), "-m", "serving.offline", "--model-dir", str(model_dir), "--backend", "mslite",
               "--batch-sizes", "1,2", "--threads", "1", "--seconds", "0.5", "--pause-ms", "50", str(image)]
    completed = subprocess.run(command, cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(completed.stdout)["results"]
    assert [result["batch_size"] for result in results] == [1, 2]
    for result in results:
        assert result["pause_ms"] == 50
        assert 3 <= result["iterations"] <= 10  # 0.5 s of 50 ms pauses, at least the 3 iterations always run
        assert result["latency_ms"]["p50"] < 50  # the tiny model's run, without the pause before it
