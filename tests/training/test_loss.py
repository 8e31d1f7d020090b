"""Label-smoothing cross-entropy against the reference targets (on 0.9, off 0.1 / classes)."""
import mindspore as ms
import numpy as np
import pytest

from training.loss import LabelSmoothingCrossEntropy


def test_matches_smoothed_targets():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 10)).astype(np.float32)
    labels = np.array([0, 3, 9, 3], np.int32)
    loss = LabelSmoothingCrossEntropy(10, smoothing=0.1)(ms.Tensor(logits), ms.Tensor(labels))
    targets = np.full((4, 10), 0.1 / 10)
    targets[np.arange(4), labels] = 0.9
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = -(targets * log_softmax).sum(axis=1).mean()
    assert float(loss.asnumpy()) == pytest.approx(expected, rel=1e-5)
