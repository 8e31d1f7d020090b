"""Benchmark of a GENet server: latency and throughput sweeps, accuracy, offline baseline, report."""
