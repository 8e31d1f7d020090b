"""Prometheus metrics of the server, in a registry of their own, and the /metrics HTTP endpoint."""
from __future__ import annotations

import threading
from typing import Tuple
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from socketserver import ThreadingMixIn

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, make_wsgi_app

LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30)


class ServingMetrics:
    """Every metric the server exports; one instance per server."""

    def __init__(self, max_batch_size: int) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.requests = Counter("genet_requests", "RPCs finished, by method and gRPC status code",
                                ["method", "code"], registry=reg)
        self.request_latency = Histogram("genet_request_latency_seconds", "RPC latency, by method",
                                         ["method"], buckets=LATENCY_BUCKETS, registry=reg)
        self.in_progress = Gauge("genet_requests_in_progress", "RPCs being handled, by method",
                                 ["method"], registry=reg)
        self.preprocess_time = Histogram("genet_preprocess_seconds", "Decode + transform time per image",
                                         buckets=LATENCY_BUCKETS, registry=reg)
        self.queue_wait = Histogram("genet_queue_wait_seconds", "Time from queueing to batch start",
                                    buckets=LATENCY_BUCKETS, registry=reg)
        self.inference_time = Histogram("genet_inference_seconds", "Model time per batch",
                                        buckets=LATENCY_BUCKETS, registry=reg)
        self.batch_size = Histogram("genet_batch_size", "Images per inference batch",
                                    buckets=batch_size_buckets(max_batch_size), registry=reg)
        self.queue_depth = Gauge("genet_queue_depth_images", "Images admitted and not yet computed",
                                 registry=reg)
        self.dropped_images = Counter("genet_dropped_images", "Images dropped before compute, by reason "
                                      "(cancelled by the caller, or its deadline expired)", ["reason"],
                                      registry=reg)
        self.batch_retries = Counter("genet_batch_retries", "Sub-batches re-run after an inference call "
                                     "raised (a failed batch is retried in halves to isolate the failing request)",
                                     registry=reg)
        self.inference_failures = Counter("genet_inference_failures", "Requests failed because inference "
                                          "raised on their images alone", registry=reg)
        self.batches_in_flight = Histogram("genet_batches_in_flight", "Batches computing at once (on separate "
                                           "workers, --instances), observed as each batch starts",
                                           buckets=batch_size_buckets(64), registry=reg)
        self.worker_restarts = Counter("genet_worker_restarts", "Inference workers restarted, by why the previous "
                                       "one ended (died: exited or killed; timeout: hung past --inference-timeout-s "
                                       "and killed; error: broke the protocol)", ["reason"], registry=reg)
        self.workers_alive = Gauge("genet_workers_alive", "Inference workers loaded and serving, by model version",
                                   ["version"], registry=reg)
        self.inference_precision = Gauge("genet_inference_precision", "1 for the precision (f32, bf16) a loaded "
                                         "version's runtime computes in", ["version", "precision"], registry=reg)
        self.model_ready = Gauge("genet_model_ready", "1 when the served model is loaded, warm and in service",
                                 registry=reg)
        ProcessCollector(registry=reg)  # process_cpu_seconds_total, memory, open fds (Linux)


def batch_size_buckets(max_batch_size: int) -> Tuple[float, ...]:
    """Histogram buckets 1, 2, 3, 4, 6, 8, 12, 16, ... up to and including max_batch_size."""
    buckets = {1, max_batch_size}
    size = 2
    while size < max_batch_size:
        buckets.update((size, size + size // 2))
        size *= 2
    return tuple(sorted(b for b in buckets if b <= max_batch_size))


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002  (scrapes are not worth a log line)
        """Suppress the per-request access log."""


def start_metrics_server(metrics: ServingMetrics, host: str, port: int) -> Tuple[WSGIServer, int]:
    """Serve /metrics on host:port (0 picks one) in a daemon thread; returns the server and its port."""
    httpd = make_server(host, port, make_wsgi_app(metrics.registry), _ThreadingWSGIServer,
                        handler_class=_QuietHandler)
    threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True).start()
    return httpd, httpd.server_port
