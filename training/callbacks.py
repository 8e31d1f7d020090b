"""Training callbacks: progress lines, a JSON-lines log and atomic, rotating checkpoints."""
import json
import logging
import os
import re
import time
from pathlib import Path

import mindspore as ms
from mindspore.train import Callback

LOGGER = logging.getLogger(__name__)
CHECKPOINT_PATTERN = re.compile(r"^epoch_(\d+)\.ckpt$")
FINAL_CHECKPOINT = "final.ckpt"


def checkpoint_name(epoch):
    """File name of the periodic checkpoint written after `epoch`."""
    return f"epoch_{epoch:04d}.ckpt"


def list_checkpoints(run_dir):
    """Periodic checkpoints in `run_dir` as (epoch, path), oldest first."""
    found = []
    for path in Path(run_dir).glob("epoch_*.ckpt"):
        match = CHECKPOINT_PATTERN.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def remove_partial_checkpoints(run_dir):
    """Delete temporary files that a save killed half-way left behind; return their names."""
    removed = []
    for path in Path(run_dir).glob(".tmp-*.ckpt"):
        path.unlink()
        removed.append(path.name)
    return removed


def save_checkpoint_atomic(save_obj, path, append_dict=None):
    """Write a checkpoint to a temporary file in the same folder, then rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")  # keeps the .ckpt suffix
    ms.save_checkpoint(save_obj, str(tmp), append_dict=append_dict)
    os.replace(tmp, path)
    return path


def global_step(cb_params):
    """Optimiser steps done so far, counting the epochs before a resume."""
    steps_per_epoch = cb_params.batch_num
    in_epoch = (cb_params.cur_step_num - 1) % steps_per_epoch + 1
    return (cb_params.cur_epoch_num - 1) * steps_per_epoch + in_epoch


class JsonLinesLog:
    """Append-only log of JSON records, one per line, flushed as written."""

    def __init__(self, path):
        self.path = Path(path)

    def write(self, event, **fields):
        """Append one record with an event name and a wall-clock time stamp."""
        record = {"event": event, "time": round(time.time(), 3), **fields}
        with self.path.open("a") as handle:
            handle.write(f"{json.dumps(record)}\n")


class ProgressLogger(Callback):
    """Logs loss, learning rate and images/s every `every_steps` steps and at each epoch end."""

    def __init__(self, *, lr_schedule, images_per_step, every_steps, log=None):
        super().__init__()
        self.lr_schedule = lr_schedule
        self.images_per_step = images_per_step
        self.every_steps = every_steps
        self.log = log
        self._last_time = self._last_step = self._epoch_start = None

    def on_train_epoch_begin(self, run_context):
        """Start the epoch's clocks."""
        cb_params = run_context.original_args()
        self._epoch_start = self._last_time = time.monotonic()
        self._last_step = (cb_params.cur_epoch_num - 1) * cb_params.batch_num

    def on_train_step_end(self, run_context):
        """Report every `every_steps` steps."""
        cb_params = run_context.original_args()
        step = global_step(cb_params)
        if step - self._last_step >= self.every_steps:
            self._report(cb_params, step)

    def on_train_epoch_end(self, run_context):
        """Report the epoch's last loss and its mean throughput."""
        cb_params = run_context.original_args()
        step = global_step(cb_params)
        elapsed = max(time.monotonic() - self._epoch_start, 1e-9)
        rate = cb_params.batch_num * self.images_per_step / elapsed
        LOGGER.info("epoch %d done: %d steps, %.1f s, %.1f img/s", cb_params.cur_epoch_num,
                    cb_params.batch_num, elapsed, rate)
        if self.log:
            self.log.write("epoch", epoch=cb_params.cur_epoch_num, step=step, loss=_loss(cb_params),
                           seconds=round(elapsed, 3), img_per_s=round(rate, 2))

    def _report(self, cb_params, step):
        now = time.monotonic()
        rate = (step - self._last_step) * self.images_per_step / max(now - self._last_time, 1e-9)
        lr = float(self.lr_schedule[min(step, len(self.lr_schedule)) - 1])
        loss = _loss(cb_params)
        LOGGER.info("epoch %d step %d/%d loss %.4f lr %.5f %.1f img/s", cb_params.cur_epoch_num,
                    step, len(self.lr_schedule), loss, lr, rate)
        if self.log:
            self.log.write("step", epoch=cb_params.cur_epoch_num, step=step, loss=loss, lr=lr,
                           img_per_s=round(rate, 2))
        self._last_time, self._last_step = now, step


class CheckpointSaver(Callback):
    """Saves the whole training state every N epochs and after the last one, keeping the newest K.

    The state is the train network's parameters (network, optimiser moments, global step)
    plus `epoch_num` and `step_num`, written atomically so a listed checkpoint is complete.
    """

    def __init__(self, run_dir, *, every_epochs, keep, total_epochs, log=None):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.every_epochs = every_epochs
        self.keep = keep
        self.total_epochs = total_epochs
        self.log = log

    def on_train_epoch_end(self, run_context):
        """Save when the epoch is due, then drop the oldest checkpoints beyond `keep`."""
        cb_params = run_context.original_args()
        epoch = cb_params.cur_epoch_num
        if epoch % self.every_epochs and epoch != self.total_epochs:
            return
        step = global_step(cb_params)
        path = self.run_dir / checkpoint_name(epoch)
        save_checkpoint_atomic(cb_params.train_network, path,
                               append_dict={"epoch_num": epoch, "step_num": step})
        LOGGER.info("saved %s", path)
        if self.log:
            self.log.write("checkpoint", epoch=epoch, step=step, path=str(path))
        for _, old in list_checkpoints(self.run_dir)[:-self.keep]:
            old.unlink()


def _loss(cb_params):
    outputs = cb_params.net_outputs
    if isinstance(outputs, (tuple, list)):
        outputs = outputs[0]
    return float(outputs.asnumpy())
