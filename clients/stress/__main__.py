"""`python -m clients.stress`: the fault-and-load suite."""
import sys

from clients.stress.cli import main

sys.exit(main())
