"""A live progress line on the terminal (stderr), rewritten in place when stderr is a terminal."""
import sys
import time
from typing import List, TextIO

import numpy as np

from clients.benchmark.load import Record


class ProgressLine:
    """Writes the current state of a load level or of the accuracy pass on one line."""

    def __init__(self, stream: TextIO = sys.stderr, log_interval_s: float = 5.0):
        self._stream = stream
        self._live = stream.isatty()
        self._width = 0
        self._log_interval_s = log_interval_s
        self._last_logged = time.monotonic()

    def show(self, text: str) -> None:
        """Replaces the line with text; off a terminal, prints it as a new line every log_interval_s."""
        if self._live:
            self._stream.write(f"\r{text.ljust(self._width)}")
            self._width = len(text)
        elif time.monotonic() - self._last_logged >= self._log_interval_s:
            self._stream.write(f"{text}\n")
            self._last_logged = time.monotonic()
        self._stream.flush()

    def done(self, text: str = "") -> None:
        """Ends the line, replacing it with text when given (printed off a terminal too)."""
        if self._live and (self._width or text):
            self._stream.write(f"\r{text.ljust(self._width)}\n" if text else "\n")
        elif text:
            self._stream.write(f"{text}\n")
        self._stream.flush()
        self._width = 0
        self._last_logged = time.monotonic()

    def load(self, label: str):
        """A progress callback for clients.benchmark.load, prefixed with label."""
        def update(records: List[Record], elapsed_s: float) -> None:
            ok = [r for r in records if r.code == "OK"]
            p99 = np.percentile([(r.end - r.start) * 1000.0 for r in ok], 99) if ok else float("nan")
            images_per_s = sum(r.images for r in ok) / max(elapsed_s, 1e-9)
            self.show(f"{label}  {elapsed_s:5.1f} s  {len(records):6d} calls  {images_per_s:8.1f} img/s  "
                      f"p99 {p99:7.1f} ms  errors {len(records) - len(ok)}")
        return update

    def count(self, label: str):
        """A progress callback (done, total) prefixed with label."""
        def update(done: int, total: int) -> None:
            self.show(f"{label}  {done}/{total} images")
        return update
