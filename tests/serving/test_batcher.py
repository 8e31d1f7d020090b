"""The dynamic batcher on its own: merging, splitting, admission, drops, failures, timeouts, draining.

The "model" is a plain numpy function run on a real thread, awaited as the batcher awaits the worker
pool's predict coroutine; each test drives the batcher through its public coroutines on a fresh
event loop.
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
    """logits = (sum of the image, 2 * sum); records batch sizes; can be held on a gate (every batch, or
    only those holding an image of value `held_value`); raises on any batch holding an image of value
    `fail_on_value`."""

    def __init__(self, fail_on_value=None, held_value=None):
        self.batch_sizes = []
        self.seen = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.fail_on_value = fail_on_value
        self.held_value = held_value
        self.cancelled = 0  # calls cancelled while awaited

    def __call__(self, arrays):
        self.started.set()
        batch = np.stack(arrays)
        if self.held_value is None or (batch == self.held_value).any():
            self.gate.wait(10)
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
        with ThreadPoolExecutor(settings.get("concurrency", 1)) as executor:
            async def predict(arrays):
                try:
                    return await asyncio.get_running_loop().run_in_executor(executor, model, arrays)
                except asyncio.CancelledError:
                    model.cancelled += 1
                    raise

            batcher = DynamicBatcher(predict, metrics=metrics, **settings)
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
    with batcher.admit(len(arrays), deadline) as ticket:
        return await ticket.submit(arrays)


def admit_and_leave(batcher, images):
    """Admit `images` and release them unsubmitted."""
    with batcher.admit(images):
        pass


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


def test_an_idle_batcher_starts_a_lone_request_at_once():
    """However long the queue delay, a request arriving with no batch computing computes alone at once: the
    next request, sent once it has started, is not merged into its batch."""
    model = RecordingModel()

    async def scenario(batcher, metrics):
        first = asyncio.ensure_future(classify(batcher, images(1)))
        started = await asyncio.get_running_loop().run_in_executor(None, model.started.wait, 5)
        await asyncio.gather(first, classify(batcher, images(2)))
        return started

    assert run(scenario, model, max_delay_s=10.0)
    assert model.batch_sizes == [1, 1]


def test_while_a_batch_computes_the_next_one_collects_requests_until_the_batch_ends():
    """Two workers: while the first request computes (held), the next ones wait for each other on the free
    worker instead of starting alone; once the first batch ends, they start at once, together."""
    model = RecordingModel(held_value=1)
    model.gate.clear()

    async def scenario(batcher, metrics):
        first = asyncio.ensure_future(classify(batcher, images(1)))
        await asyncio.get_running_loop().run_in_executor(None, model.started.wait, 5)
        second = asyncio.ensure_future(classify(batcher, images(2)))
        await asyncio.sleep(0.05)
        third = asyncio.ensure_future(classify(batcher, images(3)))
        await asyncio.sleep(0.05)
        model.gate.set()
        await asyncio.wait_for(asyncio.gather(first, second, third), 5)  # not the 10 s delay

    run(scenario, model, concurrency=2, max_delay_s=10.0)
    assert model.batch_sizes == [1, 2] and model.seen == [1.0, 2.0, 3.0]


def test_while_a_batch_computes_the_next_one_runs_once_its_oldest_image_has_waited_the_queue_delay():
    """A batch computes (held) on one of two workers. A request arrives every quarter delay: the next batch
    takes the first of them and those that came within its delay; it neither runs at once nor waits for
    later arrivals, a full batch or the held batch."""
    model = RecordingModel(held_value=0)
    model.gate.clear()
    delay = 0.2

    async def scenario(batcher, metrics):
        held = asyncio.ensure_future(classify(batcher, images(0)))
        await asyncio.get_running_loop().run_in_executor(None, model.started.wait, 5)
        first = asyncio.ensure_future(classify(batcher, images(1)))
        later = []
        while len(later) < 40:  # 40 arrivals span 10 delays
            await asyncio.wait([first], timeout=delay / 4)
            if first.done():
                break
            later.append(asyncio.ensure_future(classify(batcher, images(2))))
        assert first.done(), "the first request still waits after 40 later arrivals"
        model.gate.set()
        await asyncio.gather(held, first, *later)
        return len(later)

    arrivals = run(scenario, model, max_batch_size=64, max_queue_images=64, max_delay_s=delay, concurrency=2)
    assert model.seen[0] == 1.0 and 1 < model.batch_sizes[0] <= 1 + arrivals


def test_with_wait_when_idle_a_lone_request_waits_the_delay_for_company():
    model = RecordingModel()

    async def scenario(batcher, metrics):
        first = asyncio.ensure_future(classify(batcher, images(1)))
        await asyncio.sleep(0.05)
        await asyncio.gather(first, classify(batcher, images(2)))

    run(scenario, model, max_delay_s=1.0, wait_when_idle=True)
    assert model.batch_sizes == [2]


def test_when_a_batch_ends_the_queued_batch_goes_to_predict_before_the_finished_callers_resume():
    """One worker computes a held batch while two requests queue behind it. When it ends, the queued batch is
    handed to predict first and the finished batch's caller resumes after: the worker computes while the
    front answers."""
    log = []

    async def main():
        release = asyncio.get_running_loop().create_future()

        async def predict(arrays):
            values = [float(array.flat[0]) for array in arrays]
            log.append(f"predict {values}")
            if values == [1.0]:
                await release
            return np.stack([[value, value] for value in values])

        batcher = DynamicBatcher(predict, max_batch_size=4, max_delay_s=10.0, max_queue_images=16,
                                 metrics=ServingMetrics(4))
        batcher.start()

        async def caller(value):
            logits = await classify(batcher, images(value))
            log.append(f"resumed {value}")
            return logits

        first = asyncio.ensure_future(caller(1))
        await asyncio.sleep(0.01)
        queued = [asyncio.ensure_future(caller(value)) for value in (2, 3)]
        await asyncio.sleep(0.01)
        release.set_result(None)
        results = await asyncio.wait_for(asyncio.gather(first, *queued), 5)
        await batcher.close()
        return results

    results = asyncio.run(main())
    assert log == ["predict [1.0]", "predict [2.0, 3.0]", "resumed 1", "resumed 2", "resumed 3"]
    for value, logits in zip((1, 2, 3), results):
        np.testing.assert_array_equal(logits, [[value, value]])


def test_admission_beyond_the_queue_size_is_refused_at_once_and_freed_after_compute():
    model = RecordingModel()

    async def scenario(batcher, metrics):
        with batcher.admit(3) as ticket:
            with pytest.raises(QueueFull, match="3 of 4 images admitted"):
                admit_and_leave(batcher, 2)
            assert sample(metrics, "genet_queue_depth_images") == 3
            await ticket.submit(images(1, 2, 3))
        admit_and_leave(batcher, 4)
        return sample(metrics, "genet_queue_depth_images")

    assert run(scenario, model, max_queue_images=4) == 0


def test_images_never_submitted_are_released_on_exit_and_counted_as_dropped_if_the_caller_went_away():
    """Callers that fail, are cancelled, or expire while preparing their images (preprocessing)."""
    model = RecordingModel()

    async def preparing(batcher, count, deadline=None, failure=None):
        with batcher.admit(count, deadline):
            await asyncio.sleep(0.02)
            if failure is not None:
                raise failure
            await asyncio.sleep(10)

    async def scenario(batcher, metrics):
        bad = asyncio.ensure_future(preparing(batcher, 1, failure=ValueError("undecodable")))
        late = asyncio.ensure_future(preparing(batcher, 2, time.monotonic(), DeadlineExpired("late")))
        abandoned = asyncio.ensure_future(preparing(batcher, 3))
        await asyncio.sleep(0)
        depth_while_preparing = sample(metrics, "genet_queue_depth_images")
        abandoned.cancel()
        await asyncio.gather(bad, late, abandoned, return_exceptions=True)
        return (depth_while_preparing, sample(metrics, "genet_queue_depth_images"),
                sample(metrics, "genet_dropped_images_total", reason="expired"),
                sample(metrics, "genet_dropped_images_total", reason="cancelled"))

    assert run(scenario, model, max_queue_images=6) == (6, 0, 2, 3)
    assert model.seen == []


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


def test_a_failing_batch_is_retried_in_halves_so_only_the_bad_request_fails():
    """Four requests share one batch; one holds a poisoned image. Halves [A, B] and [C, D] are re-run,
    then [A] and [B]: A, whose images fail together, is the only request to fail."""
    model = RecordingModel(fail_on_value=-1)

    async def scenario(batcher, metrics):
        outcomes = await asyncio.gather(classify(batcher, images(5, -1)), classify(batcher, images(2)),
                                        classify(batcher, images(3, 4)), classify(batcher, images(6)),
                                        return_exceptions=True)
        counts = [sample(metrics, name) for name in ("genet_batch_retries_total", "genet_inference_failures_total",
                                                     "genet_queue_depth_images")]
        return outcomes, counts

    (poisoned, *healthy), counts = run(scenario, model, max_batch_size=6)
    assert model.batch_sizes == [6, 3, 2, 1, 3]  # all, [A, B], [A], [B], [C, D]
    assert isinstance(poisoned, InternalError) and "poisoned batch" in poisoned.message
    for values, logits in zip([[2], [3, 4], [6]], healthy):
        np.testing.assert_array_equal(logits, [[4 * v, 8 * v] for v in values])
    assert counts == [4, 1, 0]  # 4 re-runs, 1 request failed, every admitted image released


class RaggedModel(RecordingModel):
    """Returns rows of different lengths: the batcher's own reassembly (np.stack) then raises."""

    def __call__(self, arrays):
        return [np.zeros(1 + i) for i in range(len(arrays))]


def test_when_the_batching_task_dies_every_waiter_fails_and_the_version_goes_out_of_service():
    failures = []

    async def scenario(batcher, metrics):
        outcomes = await asyncio.wait_for(asyncio.gather(
            classify(batcher, images(1, 2)), classify(batcher, images(3)), return_exceptions=True), 5)
        with pytest.raises(Unavailable, match="out of service: the batcher failed"):
            admit_and_leave(batcher, 1)
        return outcomes, batcher.failed, sample(metrics, "genet_queue_depth_images")

    outcomes, failed, depth = run(scenario, RaggedModel(), on_failure=lambda: failures.append(1))
    assert len(outcomes) == 2
    assert all(isinstance(outcome, InternalError) for outcome in outcomes)
    assert failed and failures == [1] and depth == 0


def test_close_cancels_a_batch_still_computing_after_its_timeout():
    model = RecordingModel()
    model.gate.clear()
    failures = []

    async def scenario(batcher, metrics):
        pending = [asyncio.ensure_future(classify(batcher, images(v))) for v in (1, 2)]
        await asyncio.get_running_loop().run_in_executor(None, model.started.wait, 5)
        await asyncio.wait_for(batcher.close(0.1), 5)
        return await asyncio.gather(*pending, return_exceptions=True), sample(metrics, "genet_queue_depth_images")

    outcomes, depth = run(scenario, model, max_batch_size=1, on_failure=lambda: failures.append(1))
    assert all(isinstance(outcome, Unavailable) and "stopped before" in outcome.message for outcome in outcomes)
    assert model.cancelled == 1  # the computing batch's predict was cancelled before close() returned
    assert depth == 0 and failures == []  # a shutdown, not a failure of the version


def test_close_finishes_queued_work_and_then_refuses_new_work():
    model = RecordingModel()

    async def scenario(batcher, metrics):
        pending = [asyncio.ensure_future(classify(batcher, images(v))) for v in range(6)]
        await asyncio.sleep(0)
        await batcher.close()
        with pytest.raises(Unavailable, match="shutting down"):
            admit_and_leave(batcher, 1)
        return await asyncio.gather(*pending)

    results = run(scenario, model, max_delay_s=10.0)
    assert [r[0, 0] for r in results] == [4 * v for v in range(6)]
