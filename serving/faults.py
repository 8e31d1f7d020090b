"""Fault injection for tests of real server processes: inert unless GENET_SERVING_FAULTS is set.

Integration tests never mock the runtime, yet --inference-timeout-s and the shutdown bound need an
inference call that never returns, as one stuck in native code would. With
GENET_SERVING_FAULTS=hang-batch-of=N every inference call on a batch of exactly N images blocks
forever (warm-up is not affected). Every model load logs a warning while it is set.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Callable, List

import numpy as np

LOG = logging.getLogger(__name__)
ENVIRONMENT_VARIABLE = "GENET_SERVING_FAULTS"
_HANG = "hang-batch-of="

PredictFn = Callable[[List[np.ndarray]], np.ndarray]


def with_faults(predict: PredictFn) -> PredictFn:
    """`predict` itself, or wrapped with the fault GENET_SERVING_FAULTS asks for (ValueError if unknown)."""
    spec = os.environ.get(ENVIRONMENT_VARIABLE, "")
    if not spec:
        return predict
    if not (spec.startswith(_HANG) and spec[len(_HANG):].isdigit()):
        raise ValueError("{}={!r}: the only fault is {}N".format(ENVIRONMENT_VARIABLE, spec, _HANG))
    size = int(spec[len(_HANG):])
    LOG.warning("FAULT INJECTION (%s=%s): inference on a batch of exactly %d images never returns",
                ENVIRONMENT_VARIABLE, spec, size)

    def predict_or_hang(arrays: List[np.ndarray]) -> np.ndarray:
        if len(arrays) == size:
            threading.Event().wait()
        return predict(arrays)

    return predict_or_hang
