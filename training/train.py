"""Train GENet_Res50 with MindSpore's Model API in graph mode.

    python -m training.train --config training/configs/demo.yaml [--resume] [key=value ...]

The run is written to <run.output_dir>/<run.name>/ (config.yaml, labels.txt, log.jsonl,
checkpoints) and <run.output_dir>/latest points at it. The validation set is scored at the
end; the last line printed is the absolute path of the final checkpoint. Under msrun with
train.distributed=true the workers train data-parallel and only rank 0 writes.
"""
import argparse
import dataclasses
import logging
import os
from pathlib import Path

# `training` before `mindspore`: training/__init__ sets ONEDNN_MAX_CPU_ISA (runtime_env) before
# MindSpore loads, also when msrun starts this file as a script.
from training.callbacks import (FINAL_CHECKPOINT, CheckpointSaver, JsonLinesLog, ProgressLogger,
                                list_checkpoints, remove_partial_checkpoints, save_checkpoint_atomic)
from training.config import load_config, save_config
from training.dataset import DatasetError, create_dataset
from training.evaluate import evaluate_network, format_metrics
from training.loss import LabelSmoothingCrossEntropy
from training.model import build_model, count_trainable_parameters
from training.optim import build_optimizer
from training.schedules import build_lr_schedule

import mindspore as ms
from mindspore.communication import get_group_size, get_rank, init
from mindspore.train import FixedLossScaleManager, Model

LOGGER = logging.getLogger("training.train")
LATEST_LINK = "latest"


def parse_args(argv=None):
    """Command-line arguments; positional `key=value` items override the config file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="YAML config file")
    parser.add_argument("--resume", action="store_true",
                        help="continue run.name from its newest checkpoint (same as resume=true)")
    parser.add_argument("overrides", nargs="*", help="overrides such as train.epochs=3")
    return parser.parse_args(argv)


def build_config(args):
    """Load the YAML config, then apply the overrides (and --resume)."""
    overrides = list(args.overrides) + (["run.resume=true"] if args.resume else [])
    try:
        return load_config(args.config, overrides)
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None


def build_context(train_cfg):
    """Graph mode, device, seeds and (when distributed) communication; return (rank, size)."""
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device(train_cfg.device_target)
    ms.set_seed(train_cfg.seed)
    ms.dataset.config.set_seed(train_cfg.seed)
    if not train_cfg.distributed:
        return 0, 1
    init()
    rank_id, rank_size = get_rank(), get_group_size()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL,
                                 gradients_mean=True, device_num=rank_size)
    LOGGER.info("data-parallel worker %d of %d", rank_id, rank_size)
    return rank_id, rank_size


def build_run_dir(run_cfg):
    """Resolve the run directory: the named one to resume, else the first free name-N."""
    base = Path(run_cfg.output_dir)
    run_dir = base / run_cfg.name
    if run_cfg.resume:
        if not list_checkpoints(run_dir):
            raise SystemExit(f"cannot resume: no epoch_*.ckpt in {run_dir}")
        return run_dir
    suffix = 1
    while run_dir.exists() and any(run_dir.iterdir()):
        suffix += 1
        run_dir = base / f"{run_cfg.name}-{suffix}"
    return run_dir


def prepare_run_dir(cfg, run_dir, classes):
    """Create the run directory, write the resolved config and labels, point `latest` at it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, name=run_dir.name))
    save_config(cfg, run_dir / "config.yaml")
    (run_dir / "labels.txt").write_text("".join(f"{name}\n" for name in classes))
    update_latest_link(run_dir)
    return cfg


def update_latest_link(run_dir):
    """Atomically point <output_dir>/latest at `run_dir` (a relative symlink)."""
    tmp = run_dir.parent / f".{LATEST_LINK}-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.name)
    os.replace(tmp, run_dir.parent / LATEST_LINK)


def open_dataset(root, **kwargs):
    """create_dataset, with an unusable folder reported as a one-line error."""
    try:
        return create_dataset(str(root), **kwargs)
    except DatasetError as err:
        raise SystemExit(f"error: {err}") from None


def build_datasets(cfg, rank_id, rank_size):
    """Training split sharded by rank, and (rank 0) the validation split; class names."""
    sizes = {"batch_size": cfg.train.batch_size, "image_size": cfg.model.image_size,
             "num_workers": cfg.data.num_workers}
    root = Path(cfg.data.root)
    train_set, classes = open_dataset(root / cfg.data.train_dir, train=True, rank_id=rank_id,
                                      rank_size=rank_size, crop_scale_min=cfg.data.crop_scale_min,
                                      images_per_epoch=cfg.data.train_images_per_epoch, **sizes)
    if len(classes) != cfg.model.num_classes:
        raise SystemExit(f"error: {root / cfg.data.train_dir} has {len(classes)} classes but "
                         f"model.num_classes is {cfg.model.num_classes}")
    if train_set.get_dataset_size() == 0:
        raise SystemExit(f"error: {root / cfg.data.train_dir} has fewer images per worker than "
                         f"train.batch_size={cfg.train.batch_size}")
    val_set = None
    if rank_id == 0:
        val_set, val_classes = open_dataset(root / cfg.data.val_dir, train=False,
                                            eval_images=cfg.data.val_images, **sizes)
        if val_classes != classes:
            raise SystemExit(f"error: {root / cfg.data.val_dir} has other classes than the "
                             "training split")
    return train_set, val_set, classes


def build_lr(train_cfg, steps_per_epoch):
    """The per-step learning-rate array of the whole run."""
    return build_lr_schedule(train_cfg.lr_schedule, lr_init=train_cfg.lr_init,
                             lr_end=train_cfg.lr_end,
                             total_steps=train_cfg.epochs * steps_per_epoch,
                             warmup_steps=round(train_cfg.warmup_epochs * steps_per_epoch))


def build_trainer(network, optimizer, cfg):
    """Model with label-smoothing loss, fixed loss scale and (on Ascend) mixed precision."""
    loss = LabelSmoothingCrossEntropy(cfg.model.num_classes, cfg.train.label_smoothing)
    amp_level = cfg.train.amp_level if cfg.train.device_target == "Ascend" else "O0"
    scale = FixedLossScaleManager(cfg.train.loss_scale, drop_overflow_update=False)
    return Model(network, loss_fn=loss, optimizer=optimizer, loss_scale_manager=scale,
                 amp_level=amp_level)


def restore_state(run_dir, network, optimizer):
    """Load the newest checkpoint into network and optimiser; return (epoch, step) done."""
    for name in remove_partial_checkpoints(run_dir):
        LOGGER.warning("removed %s, a checkpoint save that was interrupted", name)
    epoch, path = list_checkpoints(run_dir)[-1]
    params = ms.load_checkpoint(str(path))
    step = int(params.pop("step_num").asnumpy())
    if int(params.pop("epoch_num").asnumpy()) != epoch:
        raise SystemExit(f"{path}: epoch in the file does not match its name")
    # The schedule is rebuilt from the config; global_step restores its position.
    params.pop("learning_rate", None)
    missing, _ = ms.load_param_into_net(network, params, strict_load=True)
    if missing:
        raise SystemExit(f"{path} does not fit the configured network: lacks {missing[:5]}")
    ms.load_param_into_net(optimizer, params, strict_load=True)
    restored = int(optimizer.global_step.asnumpy().reshape(-1)[0])
    if restored != step:
        raise SystemExit(f"{path}: optimiser step {restored} != saved step {step}")
    LOGGER.info("resumed from %s: epoch %d, step %d", path, epoch, step)
    return epoch, step


def build_callbacks(cfg, run_dir, lr, rank_id, rank_size):
    """Progress on every worker; the JSON log and checkpoints on rank 0 only."""
    log = JsonLinesLog(run_dir / "log.jsonl") if rank_id == 0 else None
    callbacks = [ProgressLogger(lr_schedule=lr, images_per_step=cfg.train.batch_size * rank_size,
                                every_steps=cfg.train.log_every_steps, log=log)]
    if rank_id == 0:
        callbacks.append(CheckpointSaver(run_dir, every_epochs=cfg.checkpoint.every_epochs,
                                         keep=cfg.checkpoint.keep, total_epochs=cfg.train.epochs,
                                         log=log))
    return callbacks


def finish(run_dir, network, val_set, epoch, step):
    """Save final.ckpt, score the validation set, log and return (checkpoint, metrics)."""
    final = save_checkpoint_atomic(network, run_dir / FINAL_CHECKPOINT,
                                   append_dict={"epoch_num": epoch, "step_num": step})
    metrics = evaluate_network(network, val_set)
    JsonLinesLog(run_dir / "log.jsonl").write("eval", epoch=epoch, step=step, **metrics)
    return final.resolve(), metrics


def main(argv=None):
    """Train, evaluate and print the metrics line, then the final checkpoint's path."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg = build_config(parse_args(argv))
    rank_id, rank_size = build_context(cfg.train)
    train_set, val_set, classes = build_datasets(cfg, rank_id, rank_size)
    run_dir = build_run_dir(cfg.run)
    if rank_id == 0:
        cfg = prepare_run_dir(cfg, run_dir, classes)
    steps_per_epoch = train_set.get_dataset_size()
    lr = build_lr(cfg.train, steps_per_epoch)
    network = build_model(cfg.model)
    LOGGER.info("%s: %d trainable parameters", cfg.model.variant,
                count_trainable_parameters(network))
    optimizer = build_optimizer(network, ms.Tensor(lr), momentum=cfg.train.momentum,
                                weight_decay=cfg.train.weight_decay,
                                loss_scale=cfg.train.loss_scale)
    epoch, step = restore_state(run_dir, network, optimizer) if cfg.run.resume else (0, 0)
    model = build_trainer(network, optimizer, cfg)
    if epoch < cfg.train.epochs:
        model.train(cfg.train.epochs, train_set, initial_epoch=epoch,
                    callbacks=build_callbacks(cfg, run_dir, lr, rank_id, rank_size),
                    dataset_sink_mode=cfg.train.device_target != "CPU")
        epoch, step = cfg.train.epochs, cfg.train.epochs * steps_per_epoch
    if rank_id != 0:
        return None
    final, metrics = finish(run_dir, network, val_set, epoch, step)
    print(format_metrics(metrics), flush=True)
    print(final, flush=True)
    return final


if __name__ == "__main__":
    main()
