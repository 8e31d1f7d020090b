"""The dynamic batcher on its own: merging, splitting, admission, drops, failures, draining.

The "model" is a plain numpy function run on a real inference thread; each test drives the
batcher through its public coroutines on a fresh event loop.
"""
import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from serving.batcher import DynamicBatcher
from serving.errors import DeadlineExpired, InternalError, QueueFull, Unavailable
from serving.metrics import ServingMetrics


class RecordingModel:
    """logits = (sum of the image, 2 * sum); records batch sizes; can be held on a gate."""

    def __init__(self, fail_on_value=None):
        self.batch_sizes = []
        self.seen = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.fail_on_value = fail_on_value

    def __call__(self, arrays):
        self.started.set()
        self.gate.wait(10)
        batch = np.stack(arrays)
        self.batch_sizes.append(len(arrays))
        self.seen.extend(float(a.flat[0]) for a in arrays)
        if self.fail_on_value is not None and (batch == self.fail_on_value).any():
            raise ValueError("poisoned batch")
        total = batch.reshape(len(arrays), -1).sum(axis=1)
        return np.stack([total, 2 * total], axis=1)


def images(*values):
    """One 1x2x2 image per value, filled with it."""
    return [np.full((1, 2, 2), v, np.float32) for v in values]


def run(scenario, model, **options):
    """Run `scenario(batcher, metrics)` with a started batcher on a new loop; close it afterwards."""
    settings = dict(max_batch_size=4, max_delay_s=0.05, max_queue_images=16)
    settings.update(options)
    metrics = ServingMetrics(settings["max_batch_size"])

    async def main():
        """Start the batcher, run the scenario, always close it."""
        with ThreadPoolExecutor(1) as executor:
            batcher = DynamicBatcher(model, executor, metrics=metrics, **settings)
            batcher.start()
            try:
                return await scenario(batcher, metrics)
            finally:
                model.gate.set()
                await batcher.close()

    return asyncio.run(main())


def sample(metrics, name, **labels):
    """A metric's current value."""
    return metrics.registry.get_sample_value(name, labels)


async def classify(batcher, arrays, deadline=None):
    """Admit and submit one request, as the data plane does."""
    ticket = batcher.reserve(len(arrays))
    return await batcher.submit(ticket, arrays, deadline)


def test_concurrent_requests_share_batches_and_keep_their_results():
    model = RecordingModel()

    async def scenario(batcher, metrics):
        return await asyncio.gather(*(classify(batcher, images(v)) for v in range(1, 6)))

    results = run(scenario, model)
    assert model.batch_sizes == [4, 1]
    for value, logits in zip(range(1, 6), results):
        np.testing.assert_array_equal(logits, [[4 * value, 8 * value]])


def test_a_request_larger_than_the_batch_is_split_and_reassembled_in_order():
    model = RecordingModel()

    async def scenario(batcher, metrics):
        return await classify(batcher, images(*range(10)))

    logits = run(scenario, model)
    assert model.batch_sizes == [4, 4, 2]
    np.testing.assert_array_equal(logits[:, 0], 4 * np.arange(10))


def test_a_lone_request_waits_at_most_the_queue_delay():
    model = RecordingModel()

    async def scenario(batcher, metrics):
        started = time.monotonic()
        await classify(batcher, images(1))
        return time.monotonic() - started

    elapsed = run(scenario, model, max_delay_s=0.2)
    assert model.batch_sizes == [1]
    assert elapsed >= 0.2


def test_admission_beyond_the_queue_size_is_refused_at_once_and_freed_after_compute():
    model = RecordingModel()

    async def scenario(batcher, metrics):
        ticket = batcher.reserve(3)
        with pytest.raises(QueueFull, match="3 of 4 images admitted"):
            batcher.reserve(2)
        assert sample(metrics, "genet_queue_depth_images") == 3
        await batcher.submit(ticket, images(1, 2, 3), None)
        batcher.reserve(4).release()
        return sample(metrics, "genet_queue_depth_images")

    assert run(scenario, model, max_queue_images=4) == 0


def test_expired_work_is_dropped_before_compute():
    model = RecordingModel()
    model.gate.clear()

    async def scenario(batcher, metrics):
        first = asyncio.ensure_future(classify(batcher, images(1)))
        await asyncio.get_running_loop().run_in_executor(None, model.started.wait, 5)
        late = asyncio.ensure_future(classify(batcher, images(7, 7), deadline=time.monotonic() + 0.05))
        await asyncio.sleep(0.1)
        model.gate.set()
        await first
        with pytest.raises(DeadlineExpired):
            await late
        return sample(metrics, "genet_dropped_images_total", reason="expired")

    assert run(scenario, model, max_batch_size=1) == 2
    assert 7.0 not in model.seen


def test_cancelled_work_is_dropped_before_compute():
    model = RecordingModel()
    model.gate.clear()

    async def scenario(batcher, metrics):
        first = asyncio.ensure_future(classify(batcher, images(1)))
        await asyncio.get_running_loop().run_in_executor(None, model.started.wait, 5)
        abandoned = asyncio.ensure_future(classify(batcher, images(7, 7, 7)))
        await asyncio.sleep(0.01)
        abandoned.cancel()
        model.gate.set()
        await first
        await asyncio.sleep(0.05)
        return (sample(metrics, "genet_dropped_images_total", reason="cancelled"),
                sample(metrics, "genet_queue_depth_images"))

    assert run(scenario, model, max_batch_size=1) == (3, 0)
    assert 7.0 not in model.seen


def test_a_failing_batch_fails_only_its_own_requests():
    model = RecordingModel(fail_on_value=-1)

    async def scenario(batcher, metrics):
        return await asyncio.gather(classify(batcher, images(-1)), classify(batcher, images(2)),
                                    return_exceptions=True)

    poisoned, healthy = run(scenario, model, max_batch_size=1)
    assert isinstance(poisoned, InternalError) and "poisoned batch" in poisoned.message
    np.testing.assert_array_equal(healthy, [[8, 16]])


class RaggedModel(RecordingModel):
    """Returns rows of different lengths: the batcher's own reassembly (np.stack) then raises."""

    def __call__(self, arrays):
        return [np.zeros(1 + i) for i in range(len(arrays))]


def test_when_the_batching_task_dies_every_waiter_fails_and_new_work_is_refused():
    async def scenario(batcher, metrics):
        outcomes = await asyncio.wait_for(asyncio.gather(
            classify(batcher, images(1, 2)), classify(batcher, images(3)), return_exceptions=True), 5)
        with pytest.raises(Unavailable, match="batcher failed"):
            batcher.reserve(1)
        return outcomes

    outcomes = run(scenario, RaggedModel())
    assert len(outcomes) == 2
    assert all(isinstance(outcome, InternalError) for outcome in outcomes)


def test_close_finishes_queued_work_and_then_refuses_new_work():
    model = RecordingModel()

    async def scenario(batcher, metrics):
        pending = [asyncio.ensure_future(classify(batcher, images(v))) for v in range(6)]
        await asyncio.sleep(0)
        await batcher.close()
        with pytest.raises(Unavailable, match="shutting down"):
            batcher.reserve(1)
        return await asyncio.gather(*pending)

    results = run(scenario, model, max_delay_s=10.0)
    assert [r[0, 0] for r in results] == [4 * v for v in range(6)]
