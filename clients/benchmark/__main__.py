"""Entry point of `python -m clients.benchmark`."""
import sys

from clients.benchmark.cli import main

sys.exit(main())
