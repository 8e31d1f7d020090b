"""Inference in worker processes: a runtime that cannot live in the front's interpreter runs in its own.

protocol.py frames the messages, worker.py serves one backend (`python -m serving.workers.worker`),
proxy.py is the front's Backend-shaped handle on a worker. docs/workers.md describes the design.
"""
