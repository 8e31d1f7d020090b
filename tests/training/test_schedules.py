"""Learning-rate schedules against the reference formulas (REFERENCE.md section 3)."""
import math

import numpy as np
import pytest

from training.schedules import build_lr_schedule


def test_linear_matches_formula():
    total, lr_init, lr_end = 1000, 0.8, 0.0
    lr = build_lr_schedule("linear", lr_init=lr_init, lr_end=lr_end, total_steps=total)
    assert lr.dtype == np.float32 and lr.shape == (total,)
    for i in (0, 1, 499, 999):
        assert lr[i] == pytest.approx(lr_init - (lr_init - lr_end) * i / total, rel=1e-6)


def test_cosine_matches_formula():
    total, lr_init = 777, 0.8
    lr = build_lr_schedule("cosine", lr_init=lr_init, lr_end=0.0, total_steps=total)
    for i in (0, 5, 388, 776):
        damping = (total - i) / total
        expected = lr_init * (damping * 0.5 * (1 + math.cos(2 * math.pi * 0.47 * i / total)) + 1e-5)
        assert lr[i] == pytest.approx(expected, rel=1e-6)


def test_warmup_ramps_then_decays_over_the_rest():
    lr = build_lr_schedule("linear", lr_init=0.2, lr_end=0.0, total_steps=100, warmup_steps=10)
    assert lr.shape == (100,)
    np.testing.assert_allclose(lr[:10], 0.2 * np.arange(1, 11) / 10, rtol=1e-6)
    np.testing.assert_allclose(lr[10:], 0.2 - 0.2 * np.arange(90) / 90, rtol=1e-5, atol=1e-7)


def test_unknown_schedule_lists_valid_ones():
    with pytest.raises(ValueError, match="valid: linear, cosine"):
        build_lr_schedule("step", lr_init=0.1, lr_end=0.0, total_steps=10)
