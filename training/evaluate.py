"""Evaluate a checkpoint on an ImageNet-layout folder: top-1, top-5 and the number of images.

    python -m training.evaluate --ckpt runs/demo/final.ckpt --data data/fmnist/val

Every image is scored (no dropped remainder). Prints one line
`top1=<0..1> top5=<0..1> images=<N>` and writes the same as JSON to `<ckpt>.eval.json`.
The network is rebuilt from the `config.yaml` beside the checkpoint unless --config is given.
"""
import argparse
import json
import logging
from pathlib import Path

import mindspore as ms
import numpy as np

from training.config import load_config
from training.dataset import DatasetError, create_dataset
from training.model import build_model

LOGGER = logging.getLogger(__name__)
TOP_K = 5


def count_correct(logits, labels, k=TOP_K):
    """Return (top-1 hits, top-k hits) of a batch of logits against integer labels."""
    k = min(k, logits.shape[1])
    ranked = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    hits = ranked == labels.reshape(-1, 1)
    return int(hits[:, 0].sum()), int(hits.any(axis=1).sum())


def evaluate_network(network, dataset):
    """Score every batch of `dataset` with `network`; return top1, top5 and the counts.

    A short last batch is zero-padded to the first batch's size and the padding's logits
    dropped: every image is scored without compiling the graph for a second shape.
    """
    network.set_train(False)
    images = top1 = top5 = 0
    batch_size = None
    for batch, labels in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True):
        count = len(labels)
        batch_size = batch_size or count
        if count < batch_size:
            padding = np.zeros((batch_size - count, *batch.shape[1:]), batch.dtype)
            batch = np.concatenate([batch, padding])
        logits = network(ms.Tensor(batch)).asnumpy()[:count]
        hit1, hit5 = count_correct(logits, labels)
        images, top1, top5 = images + count, top1 + hit1, top5 + hit5
    if images == 0:
        raise ValueError("the evaluation set is empty")
    return {"top1": top1 / images, "top5": top5 / images, "images": images,
            "correct_top1": top1, "correct_top5": top5}


def format_metrics(metrics):
    """The one-line summary: `top1=<0..1> top5=<0..1> images=<N>`."""
    return f"top1={metrics['top1']:.6f} top5={metrics['top5']:.6f} images={metrics['images']}"


def load_network(cfg, ckpt_path):
    """Build the configured network and load its weights from a checkpoint."""
    network = build_model(cfg.model)
    params = ms.load_checkpoint(str(ckpt_path))
    missing, _ = ms.load_param_into_net(network, params, strict_load=True)
    if missing:
        raise ValueError(f"{ckpt_path} lacks parameters of the configured network: {missing[:5]}")
    return network


def set_context(device_target):
    """Graph mode on the configured backend."""
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device(device_target)


def parse_args(argv):
    """Command-line arguments; positional `key=value` items override the config."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", required=True, type=Path, help="checkpoint to evaluate")
    parser.add_argument("--data", required=True, type=Path,
                        help="folder of class sub-folders (e.g. data/fmnist/val)")
    parser.add_argument("--config", type=Path,
                        help="training config (default: config.yaml beside the checkpoint)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train.batch_size=64")
    return parser.parse_args(argv)


def main(argv=None):
    """Evaluate, print the summary line and write `<ckpt>.eval.json`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        cfg = load_config(args.config or args.ckpt.parent / "config.yaml", args.overrides)
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    set_context(cfg.train.device_target)
    try:
        dataset, classes = create_dataset(args.data, train=False, batch_size=cfg.train.batch_size,
                                          image_size=cfg.model.image_size,
                                          num_workers=cfg.data.num_workers)
    except DatasetError as err:
        raise SystemExit(f"error: {err}") from None
    if len(classes) != cfg.model.num_classes:
        raise SystemExit(f"error: {args.data} has {len(classes)} classes, the model "
                         f"{cfg.model.num_classes}")
    metrics = evaluate_network(load_network(cfg, args.ckpt), dataset)
    out = args.ckpt.with_name(f"{args.ckpt.name}.eval.json")
    out.write_text(json.dumps({**metrics, "ckpt": str(args.ckpt.resolve()),
                               "data": str(args.data.resolve())}, indent=2) + "\n")
    print(format_metrics(metrics), flush=True)
    return metrics


if __name__ == "__main__":
    main()
