"""Hot reload under load: a new version published into the served repository mid-load, zero failed calls.

The new version is a copy of the served one with the next version number (manifest "version" and
directory name agree; the model files and their sha256 are unchanged), published the way export
publishes: built in a .staging directory beside the versions, then renamed into place. A closed
loop keeps the images in flight below the queue bound, so every call must be OK: no rejection,
no UNAVAILABLE, no error while the server verifies, loads, warms and swaps in the new version.
"""
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

from clients.benchmark.load import Measurement, run_closed_loop
from clients.client import ClassifierClient, ClientError
from clients.stress.repository import publish_next_version
from clients.stress.results import CheckResult, codes, examples

RELOAD_OPTION = "--reload-interval-s"
TIMEOUT_S = 30.0


def _served_version(client: ClassifierClient) -> Optional[str]:
    try:
        return client.model_info(timeout_s=5.0).version
    except ClientError:
        return None


def run_reload(client: ClassifierClient, requests: Sequence, concurrency: int, repository: Path, name: str,
               duration_s: float, publish_after_s: float = 1.0) -> CheckResult:
    """Closed loop for duration_s; publishes the next version after publish_after_s and waits for the swap."""
    result = CheckResult("reload")
    outcome = {}
    loader = threading.Thread(target=lambda: outcome.setdefault("m", run_closed_loop(
        client, requests, concurrency, 0.0, duration_s, TIMEOUT_S)), name="reload-load")
    old_version = _served_version(client)
    loader.start()
    time.sleep(publish_after_s)
    new_version = publish_next_version(repository, name)
    published = time.monotonic()
    swapped = None
    while loader.is_alive() and swapped is None:
        if _served_version(client) == new_version:
            swapped = time.monotonic()
        time.sleep(0.1)
    loader.join()
    measurement: Measurement = outcome["m"]
    failed = [r for r in measurement.records if r.code != "OK"]
    after_swap = [r for r in measurement.records if swapped is not None and r.sent > swapped and r.code == "OK"]
    result.requests = len(measurement.records) + measurement.unfinished
    result.lost = len(failed) + measurement.unfinished
    result.load = {"concurrency": concurrency, "duration_s": duration_s,
                   "achieved_rps": round(result.requests / duration_s, 1)}
    result.require(result.lost == 0, f"{result.lost} calls failed: {examples(failed)}")
    result.require(swapped is not None, f"version {new_version} was not served within the "
                                        f"{duration_s - publish_after_s:g} s load")
    result.require(swapped is None or bool(after_swap), "no call was answered after the swap")
    result.faults = 1
    swap_s = None if swapped is None else round(swapped - published, 2)
    result.details = {"old_version": old_version, "new_version": new_version, "swap_after_publish_s": swap_s,
                      "codes": codes(measurement.records), "ok_after_swap": len(after_swap)}
    result.summary = (f"concurrency {concurrency} for {duration_s:g} s; version {old_version} -> {new_version} "
                      f"swapped {swap_s} s after publishing; {result.requests} calls, {result.lost} failed")
    return result
