"""Inference workers: real worker processes (Lite in .venv-lite, MindSpore in .venv) on the tiny exported model."""
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import pytest

from clients.benchmark.servers import REPO_ROOT
from modelrepo.manifest import ModelFile, read_manifest
from runtime_env import backend_python
from serving.backends import BackendError
from serving.manifest import served_file
from serving.metrics import ServingMetrics
from serving.settings import Settings
from serving.workers.pool import WorkerPool
from serving.workers.protocol import PREFIX, Channel, ProtocolError
from serving.workers.proxy import WorkerBackend, WorkerDied, WorkerError, WorkerTimeout

MAX_BATCH_SIZE = 4
BATCHES = ((0, 1), (1, 4), (0, 3))  # [start, stop) rows of the test images: sizes 1, 3, 3
# The Lite backend in-process, in the Lite interpreter: the reference the Lite worker must equal bit for bit.
IN_PROCESS = """
import sys
import numpy as np
from serving.backends import create_backend
from modelrepo.manifest import read_manifest
from serving.manifest import served_file

version_dir, images_path, out, max_batch_size = sys.argv[1:5]
bounds = [int(n) for n in sys.argv[5:]]
backend = create_backend("mslite", served_file(read_manifest(version_dir), "mslite"), device="cpu", device_id=0,
                         threads=1)
images = np.load(images_path)
backend.warm_up(images[0], int(max_batch_size))
np.savez(out, *[backend.predict(images[start:stop]) for start, stop in zip(bounds[::2], bounds[1::2])])
"""
# A front that starts a Lite worker, prints its pid and waits to be killed.
FRONT = """
import sys
import time
from modelrepo.manifest import read_manifest
from serving.manifest import served_file
from serving.workers.proxy import WorkerBackend

worker = WorkerBackend("mslite", served_file(read_manifest(sys.argv[1]), "mslite"), device="cpu", device_id=0,
                       threads=1)
print(worker.pid, flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="module")
def manifest(version_dir):
    """The tiny model's manifest."""
    return read_manifest(str(version_dir))


@pytest.fixture(scope="module")
def images(manifest) -> np.ndarray:
    """Five preprocessed-looking random images at the model's input size."""
    side = manifest.preprocessing.crop_size
    return np.random.RandomState(0).normal(0, 1, (5, 3, side, side)).astype(np.float32)


def start_worker(manifest, backend: str = "mslite", **options) -> WorkerBackend:
    """A worker for the tiny model's `backend` file, on one CPU thread."""
    return WorkerBackend(backend, served_file(manifest, backend), device="cpu", device_id=0, threads=1, **options)


@pytest.fixture
def lite_worker(manifest, images):
    """A warmed-up Lite worker (.venv-lite), closed at the end."""
    worker = start_worker(manifest, timeout_s=120)
    worker.warm_up(images[0], MAX_BATCH_SIZE)
    yield worker
    worker.close()


def predict_batches(backend, images: np.ndarray) -> list:
    """Logits of each of BATCHES."""
    return [backend.predict(images[start:stop]) for start, stop in BATCHES]


def gone(pid: int) -> bool:
    """Whether `pid` has exited (a zombie nobody reaped counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_lite_worker_logits_equal_the_in_process_lite_backend(lite_worker, version_dir, images, tmp_path):
    images_path, out = tmp_path / "images.npy", tmp_path / "out.npz"
    np.save(str(images_path), images)
    bounds = [str(n) for batch in BATCHES for n in batch]
    completed = subprocess.run([backend_python("mslite"), "-c", IN_PROCESS, str(version_dir), str(images_path), str(out),
                                str(MAX_BATCH_SIZE), *bounds], cwd=str(REPO_ROOT), capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert lite_worker.run_sizes == (1, 2, 3, 4) and lite_worker.runtime_version.startswith("mindspore_lite")
    with np.load(str(out)) as expected:
        for index, logits in enumerate(predict_batches(lite_worker, images)):
            np.testing.assert_array_equal(logits, expected[f"arr_{index}"])


def test_mindspore_worker_agrees_with_the_lite_worker(lite_worker, manifest, images):
    worker = start_worker(manifest, "mindspore")
    try:
        worker.warm_up(images[0], MAX_BATCH_SIZE)
        assert worker.runtime_version.startswith("mindspore ") and worker.run_sizes == (1, 2, 4)
        mindspore_logits = predict_batches(worker, images)
    finally:
        worker.close()
    for ours, lite in zip(mindspore_logits, predict_batches(lite_worker, images)):
        assert ours.shape == lite.shape == (len(lite), manifest.num_classes)
        np.testing.assert_allclose(ours, lite, rtol=0, atol=1e-4 * max(1.0, np.abs(lite).max()))


def test_a_backend_error_in_the_worker_is_a_backend_error_in_the_front(manifest, tmp_path):
    garbage = tmp_path / "model.ms"
    garbage.write_bytes(b"not a model" * 100)
    model_file = ModelFile(key="mslite", path=str(garbage), format="MINDIR_LITE", sha256="", input_layout="NCHW",
                           batch="dynamic")
    with pytest.raises(BackendError, match="cannot build") as raised:
        WorkerBackend("mslite", model_file, device="cpu", device_id=0, threads=1)
    assert type(raised.value) is BackendError


def test_a_failed_batch_fails_alone_and_the_worker_keeps_serving(lite_worker, images):
    expected = lite_worker.predict(images[:2])
    with pytest.raises(WorkerError, match="in the mslite worker") as raised:
        lite_worker.predict(images[:2, :, :7])  # a shape the model does not take
    assert not isinstance(raised.value, WorkerDied)
    assert lite_worker.predict(images[:0]).shape == (0, expected.shape[1])
    np.testing.assert_array_equal(lite_worker.predict(images[:2]), expected)


def test_worker_killed_mid_batch_raises_worker_died_and_a_restarted_worker_answers(lite_worker, images):
    expected = lite_worker.predict(images[:3])
    pid = lite_worker.pid
    os.kill(pid, signal.SIGSTOP)  # it cannot answer: the batch is still in flight when the kill lands
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(lite_worker.predict, images[:3])
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerDied, match="died during predict: killed by SIGKILL") as died:
            pending.result()
    assert died.value.returncode == -signal.SIGKILL
    with pytest.raises(WorkerDied, match="restart it"):
        lite_worker.predict(images[:3])
    lite_worker.restart()
    assert lite_worker.pid not in (None, pid) and lite_worker.run_sizes == (1, 2, 3, 4)
    np.testing.assert_array_equal(lite_worker.predict(images[:3]), expected)


def predict_blocking(worker, batch):
    return worker.predict(batch)


def predict_on_a_loop(worker, batch):
    return asyncio.run(worker.predict_async(batch))


@pytest.mark.parametrize("predict", [predict_blocking, predict_on_a_loop], ids=["blocking", "event-loop"])
def test_hung_worker_times_out_and_is_killed(predict, manifest, images):
    worker = start_worker(manifest, timeout_s=1.0)
    try:
        pid = worker.pid
        os.kill(pid, signal.SIGSTOP)
        with pytest.raises(WorkerTimeout, match="did not answer predict within 1.0 s: killed"):
            predict(worker, images[:1])
        assert gone(pid) and worker.pid is None
        worker.restart()
        assert predict(worker, images[:1]).shape == (1, manifest.num_classes)
    finally:
        worker.close()


async def stopped_in_flight(worker, batch) -> asyncio.Future:
    """An event-loop predict of `batch` left waiting on `worker`, which is stopped (SIGSTOP) first."""
    os.kill(worker.pid, signal.SIGSTOP)
    pending = asyncio.ensure_future(worker.predict_async(batch))
    await asyncio.sleep(0.2)
    return pending


def test_predict_on_the_event_loop_equals_the_blocking_predict(lite_worker, images):
    large = np.concatenate([images] * 40)  # 200 images: more than the 1 MiB pipe holds, so the write waits
    assert large.nbytes > 1 << 20

    async def both():
        return await lite_worker.predict_async(images[:3]), await lite_worker.predict_async(large)

    small_logits, large_logits = asyncio.run(both())
    np.testing.assert_array_equal(small_logits, lite_worker.predict(images[:3]))
    np.testing.assert_array_equal(large_logits, lite_worker.predict(large))


def test_worker_killed_during_an_event_loop_predict_raises_worker_died(lite_worker, images):
    pid = lite_worker.pid

    async def predict_while_killed():
        pending = await stopped_in_flight(lite_worker, images[:3])  # the batch is in flight when the kill lands
        os.kill(pid, signal.SIGKILL)
        return await pending

    with pytest.raises(WorkerDied, match="died during predict: killed by SIGKILL") as died:
        asyncio.run(predict_while_killed())
    assert died.value.returncode == -signal.SIGKILL and lite_worker.pid is None


def test_an_event_loop_predict_cancelled_half_way_kills_its_worker(lite_worker, images):
    pid = lite_worker.pid

    async def cancel_in_flight():
        pending = await stopped_in_flight(lite_worker, images[:3])  # the reply never comes: cancelled while waiting
        pending.cancel()
        await asyncio.wait([pending])

    asyncio.run(cancel_in_flight())
    assert gone(pid) and lite_worker.pid is None  # its pipe would be out of step with the next call


def read_bytes(pid: int) -> int:
    """Bytes the process has read so far (rchar of /proc/PID/io: pipes included)."""
    with open(f"/proc/{pid}/io") as handle:
        return int(next(line for line in handle if line.startswith("rchar:")).split()[1])


def test_the_pools_predict_writes_the_batch_to_an_idle_worker_before_it_first_waits(manifest, images):
    """The batcher resumes a finished batch's callers two loop turns after it starts the next batch
    (serving.batcher._run_batch): that keeps the worker busy only if the pool's predict writes the batch
    to the worker's pipe in its first step. After that one step the loop is blocked: the worker must
    still receive the whole batch."""
    batch = list(images[:4])

    async def first_step_then_block():
        settings = Settings(backend="mslite", instances=1, threads=1, max_batch_size=MAX_BATCH_SIZE)
        pool = WorkerPool(served_file(manifest, "mslite"), settings, ServingMetrics(MAX_BATCH_SIZE),
                          manifest.version, "test-pool", lambda: None)
        others = {child.pid for child in psutil.Process().children()}
        await pool.start(images[0])
        try:
            (worker,) = [child for child in psutil.Process().children() if child.pid not in others]
            before = read_bytes(worker.pid)
            pending = asyncio.ensure_future(pool.predict(batch))
            await asyncio.sleep(0)  # runs the predict task's first step, nothing more
            deadline = time.monotonic() + 10
            while read_bytes(worker.pid) - before < images[:4].nbytes and time.monotonic() < deadline:
                time.sleep(0.01)  # blocks the loop: only the worker can make progress
            received = read_bytes(worker.pid) - before
            logits = await pending
        finally:
            await pool.close()
        return received, logits

    received, logits = asyncio.run(first_step_then_block())
    assert received >= images[:4].nbytes
    assert logits.shape == (4, manifest.num_classes)


def test_close_ends_the_worker(manifest, images):
    worker = start_worker(manifest)
    pid = worker.pid
    worker.close()
    assert gone(pid)
    with pytest.raises(WorkerDied, match="no mslite worker is running"):
        worker.predict(images[:1])


@pytest.mark.parametrize("front_signal, hung", [(signal.SIGTERM, False), (signal.SIGKILL, True)],
                         ids=["sigterm-idle-worker", "sigkill-hung-worker"])
def test_no_worker_outlives_its_front(front_signal, hung, version_dir, tmp_path):
    with open(str(tmp_path / "front.log"), "w") as log:
        front = subprocess.Popen([sys.executable, "-c", FRONT, str(version_dir)], cwd=str(REPO_ROOT),
                                 stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = front.stdout.readline()
        assert line.strip().isdigit(), (tmp_path / "front.log").read_text()[-3000:]
        worker_pid = int(line)
        if hung:  # a stopped worker never reads the end of its pipe: only PR_SET_PDEATHSIG can end it
            os.kill(worker_pid, signal.SIGSTOP)
        os.kill(front.pid, front_signal)
        front.wait(60)
        deadline = time.monotonic() + 30
        while not gone(worker_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        survived = not gone(worker_pid)
        if survived:
            os.kill(worker_pid, signal.SIGKILL)
        assert not survived, f"worker {worker_pid} outlived its front"
    finally:
        front.kill()
        front.wait()


def test_channel_carries_a_tensor_and_refuses_one_it_cannot_read_safely():
    read_fd, write_fd = os.pipe()
    channel = Channel(read_fd, write_fd)
    try:
        channel.send({"op": "predict"}, np.arange(6, dtype=np.float32).reshape(2, 3))
        header, tensor = channel.receive()
        assert header["op"] == "predict" and tensor.dtype == np.float32 and tensor.tolist() == [[0, 1, 2], [3, 4, 5]]
        channel.send({"op": "predict"}, np.arange(3, dtype=">i4")[:0])
        assert channel.receive()[1].shape == (0,)
        channel.send({"op": "close"})
        assert channel.receive() == ({"op": "close"}, None)
        for bad in ({"dtype": "object", "shape": [2]}, {"dtype": "float32", "shape": [3]}, ["not", "an", "object"]):
            encoded = json.dumps(bad).encode()
            os.write(write_fd, PREFIX.pack(len(encoded), 16) + encoded + bytes(16))
            with pytest.raises(ProtocolError):
                channel.receive()
            os.read(read_fd, 16)  # the refused payload
    finally:
        channel.close()
