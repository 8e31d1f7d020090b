"""Clients of the GENet classification service: client library, command line and benchmark."""
import runtime_env

runtime_env.configure()  # before grpc, and before MindSpore in the offline benchmark
