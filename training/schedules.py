"""Per-step learning-rate schedules of the reference recipe (REFERENCE.md section 3).

Each schedule returns one float32 value per optimiser step, T = total steps, i = 0 .. T-1:
  linear: lr_i = lr_init - (lr_init - lr_end) * i / T
  cosine: lr_i = lr_init * ((T - i) / T * 0.5 * (1 + cos(2 * pi * 0.47 * i / T)) + 1e-5)
An optional linear warmup (an extension; the reference has none) ramps up to lr_init over the
first W steps, and the decay formula then runs over the remaining T - W steps.
"""
import numpy as np

SCHEDULES = ("linear", "cosine")


def linear_decay(lr_init, lr_end, total_steps):
    """The reference linear decay from lr_init towards lr_end."""
    i = np.arange(total_steps, dtype=np.float64)
    return lr_init - (lr_init - lr_end) * i / total_steps


def cosine_decay(lr_init, total_steps):
    """The reference 'cosine' schedule of theta-minus (0.47 of a period, damped linearly)."""
    i = np.arange(total_steps, dtype=np.float64)
    t = float(total_steps)
    return lr_init * ((t - i) / t * 0.5 * (1 + np.cos(2 * np.pi * 0.47 * i / t)) + 1e-5)


def build_lr_schedule(kind, *, lr_init, lr_end, total_steps, warmup_steps=0):
    """Return the float32 per-step learning rates of schedule `kind` with optional warmup."""
    if kind not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {kind!r}; valid: {', '.join(SCHEDULES)}")
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"warmup_steps must be in [0, {total_steps}), got {warmup_steps}")
    decay_steps = total_steps - warmup_steps
    if kind == "linear":
        decay = linear_decay(lr_init, lr_end, decay_steps)
    else:
        decay = cosine_decay(lr_init, decay_steps)
    warmup = lr_init * np.arange(1, warmup_steps + 1, dtype=np.float64) / warmup_steps \
        if warmup_steps else np.zeros(0)
    return np.concatenate([warmup, decay]).astype(np.float32)
