"""Command-line options shared by the client CLIs: targets, deadline, retries, TLS and the bearer token."""
import argparse
import os
from pathlib import Path
from typing import Optional, Sequence

from clients.channel import TlsConfig, join_targets
from clients.client import ClassifierClient, RetryPolicy

TOKEN_ENV = "GENET_TOKEN"


def add_connection_arguments(parser: argparse.ArgumentParser, target_required: bool = True) -> None:
    """Adds --target, --timeout, --retries, the TLS options and --token-file to parser."""
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--target", action="append", required=target_required, metavar="HOST:PORT",
        help="server address; repeat it (or give any gRPC target, e.g. ipv4:a:p1,b:p2) to "
        "spread calls over replicas with round_robin",
    )
    group.add_argument("--timeout", type=float, default=30.0, metavar="S", help="deadline of each call (default 30)")
    group.add_argument("--retries", type=int, default=3, help="retries of UNAVAILABLE calls (default 3)")
    group.add_argument("--tls", action="store_true", help="use TLS with the system's root certificates")
    group.add_argument("--tls-ca", type=Path, metavar="PEM", help="use TLS, trusting this CA bundle")
    group.add_argument("--tls-cert", type=Path, metavar="PEM", help="client certificate for mutual TLS")
    group.add_argument("--tls-key", type=Path, metavar="PEM", help="client private key for mutual TLS")
    group.add_argument("--tls-server-name", metavar="NAME", help="name to verify the server certificate against")
    group.add_argument(
        "--token-file", type=Path, metavar="FILE",
        help=f"file holding a bearer token (default: the {TOKEN_ENV} environment variable, if set)",
    )


def tls_from_args(args: argparse.Namespace) -> Optional[TlsConfig]:
    """The TlsConfig the options ask for, or None for a plaintext channel."""
    wants_tls = args.tls or args.tls_ca or args.tls_cert or args.tls_key or args.tls_server_name
    if not wants_tls:
        return None
    return TlsConfig(root_ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key, server_name=args.tls_server_name)


def token_from_args(args: argparse.Namespace) -> Optional[str]:
    """The bearer token from --token-file or the environment (kept off the command line: ps shows it)."""
    if args.token_file is not None:
        return args.token_file.read_text().strip()
    return os.environ.get(TOKEN_ENV) or None


def client_from_args(args: argparse.Namespace, targets: Optional[Sequence[str]] = None) -> ClassifierClient:
    """A ClassifierClient configured by the connection options, to targets instead of --target if given."""
    return ClassifierClient(
        join_targets(targets or args.target),
        timeout_s=args.timeout,
        retry=RetryPolicy(max_attempts=args.retries + 1),
        tls=tls_from_args(args),
        token=token_from_args(args),
    )
