"""`python -m serving`: serve the latest exported model over gRPC."""
import sys

from serving.cli import main

sys.exit(main())
