"""Clients of the GENet classification service: client library, command line and benchmark."""
