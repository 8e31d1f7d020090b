"""ImageNet-style folder datasets (root/<class>/<image>) through the train or eval preset.

Class ids are the indices of the sorted class folder names. Accepted files: IMAGE_EXTENSIONS
(JPEG or PNG content; matched case-sensitively, like ImageFolderDataset). Because MindSpore's
Decode kills the whole process with SIGFPE on a JPEG that ends before its scan data starts,
create_dataset checks every file's header structure first (a few small reads per file) and
raises DatasetError naming the bad files instead.
"""
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import mindspore as ms
import mindspore.dataset as ds
from mindspore.dataset import transforms

from training.presets import EvalPreset, TrainPreset

LOG = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".JPEG", ".jpeg", ".jpg", ".JPG", ".png", ".PNG")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG markers without a length field: TEM and RST0..RST7.
_STANDALONE_MARKERS = {0x01, *range(0xD0, 0xD8)}
_MAX_REPORTED = 10
# Bytes read per file for the header check; longer headers trigger a full read.
_HEAD_BYTES = 4096
_NEED_MORE = "need more data"


class DatasetError(ValueError):
    """A dataset folder or file that cannot be used; the message names the path."""


def _image_names(folder: Path) -> List[str]:
    """Names of the accepted image files directly inside `folder`, sorted."""
    return sorted(entry.name for entry in os.scandir(folder)
                  if entry.is_file() and entry.name.endswith(IMAGE_EXTENSIONS))


def find_classes(root: Path) -> Dict[str, List[str]]:
    """Map each class folder name (sorted) to its sorted image names; DatasetError if unusable."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist or is not a directory")
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not classes:
        raise DatasetError(f"dataset root {root} has no class folders "
                           f"(expected {root}/<class>/<image>)")
    images = {name: _image_names(root / name) for name in classes}
    empty = [name for name, files in images.items() if not files]
    if empty:
        raise DatasetError(f"class folder(s) without {'/'.join(IMAGE_EXTENSIONS)} images: "
                           + ", ".join(str(root / name) for name in empty))
    return images


def _jpeg_problem(data: bytes) -> Optional[str]:
    """Walk the JPEG marker segments in `data` up to the start of scan; say what is wrong, or None.

    Returns _NEED_MORE when the headers run past the end of `data` but the file may continue.
    """
    pos = 2
    while True:
        pos = data.find(b"\xff", pos)  # libjpeg skips extraneous bytes between segments
        while 0 <= pos < len(data) - 1 and data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        if pos < 0 or pos + 1 >= len(data):
            return _NEED_MORE
        marker = data[pos + 1]
        if marker in _STANDALONE_MARKERS:
            pos += 2
            continue
        if marker == 0xD9:
            return "reaches its end marker before any scan data"
        if pos + 4 > len(data):
            return _NEED_MORE
        segment_end = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if segment_end < pos + 4:
            return "has an invalid marker segment length"
        if marker == 0xDA:  # start of scan: its header must be complete
            return None if segment_end <= len(data) else _NEED_MORE
        pos = segment_end


def image_problem(path: Path) -> Optional[str]:
    """Describe why `path` is not a decodable-looking JPEG or PNG file, or return None.

    Cheap structural check, not a decode: it rejects what would crash MindSpore's Decode (a JPEG
    cut off before its scan data) and files that are neither JPEG nor PNG. Damage later in the
    file raises an ordinary RuntimeError in the pipeline instead.
    """
    with open(path, "rb") as stream:
        data = stream.read(_HEAD_BYTES)
        if data.startswith(PNG_SIGNATURE):
            return None
        if not data.startswith(b"\xff\xd8"):
            return "is neither a JPEG nor a PNG file"
        problem = _jpeg_problem(data)
        if problem == _NEED_MORE and len(data) == _HEAD_BYTES:  # large headers (EXIF, ICC)
            problem = _jpeg_problem(data + stream.read())
    return "ends before its scan data (truncated)" if problem == _NEED_MORE else problem


def check_images(root: Path, images: Dict[str, List[str]]) -> None:
    """Raise DatasetError listing the files that `image_problem` rejects."""
    problems = []
    for name, files in images.items():
        for file_name in files:
            path = Path(root) / name / file_name
            problem = image_problem(path)
            if problem:
                problems.append(f"{path} {problem}")
    if problems:
        shown = "; ".join(problems[:_MAX_REPORTED])
        hidden = len(problems) - _MAX_REPORTED
        more = f" (and {hidden} more)" if hidden > 0 else ""
        raise DatasetError(f"{len(problems)} unusable image file(s): {shown}{more}")


def _shard_args(train: bool, count: int, rank_id: int, rank_size: int, eval_images: int = 0) -> dict:
    """ImageFolderDataset sampling arguments for this rank.

    Training uses MindSpore's distributed sampler, which pads the shards to equal length by
    repeating images (every rank must run the same number of steps). Evaluation scores every
    image, or `eval_images` of them evenly spaced in file order (so each class keeps its share),
    and each rank takes every rank_size-th of those: the shards are disjoint and cover each once.
    """
    if train:
        if rank_size == 1:
            return {"shuffle": True}
        return {"shuffle": True, "num_shards": rank_size, "shard_id": rank_id}
    scored = range(count)
    if 0 < eval_images < count:
        scored = [i * count // eval_images for i in range(eval_images)]
    if rank_size == 1 and len(scored) == count:
        return {"shuffle": False}
    return {"sampler": ds.SubsetSampler(list(scored)[rank_id::rank_size])}


def create_dataset(root: Path, *, train: bool, batch_size: int, image_size: int,
                   num_workers: int = 2, rank_id: int = 0, rank_size: int = 1,
                   crop_scale_min: float = 0.08, images_per_epoch: int = 0,
                   eval_images: int = 0, verify_images: bool = True) -> Tuple[ds.Dataset, List[str]]:
    """Batched (float32 NCHW image, int32 label) dataset over root/<class>/<image>; class names.

    Training shuffles, keeps images_per_epoch images (0: all), applies TrainPreset (crop area from
    crop_scale_min to 1) and drops the last incomplete batch; evaluation applies
    EvalPreset in file order to every image, or to eval_images of them evenly spaced (0: all;
    the last batch may be smaller).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if rank_size < 1 or not 0 <= rank_id < rank_size:
        raise ValueError(f"need 0 <= rank_id < rank_size, got rank_id={rank_id}, "
                         f"rank_size={rank_size}")
    images = find_classes(root)
    if verify_images:
        check_images(root, images)
    classes = list(images)
    count = sum(len(files) for files in images.values())
    if train:
        preset = TrainPreset(image_size=image_size, scale=(crop_scale_min, 1.0))
    else:
        preset = EvalPreset(image_size=image_size)
    data = ds.ImageFolderDataset(str(root), num_parallel_workers=num_workers,
                                 extensions=list(IMAGE_EXTENSIONS),
                                 class_indexing={name: index for index, name in enumerate(classes)},
                                 **_shard_args(train, count, rank_id, rank_size, eval_images))
    data = data.map(operations=preset.ops(), input_columns="image",
                    num_parallel_workers=num_workers)
    data = data.map(operations=transforms.TypeCast(ms.int32), input_columns="label",
                    num_parallel_workers=num_workers)
    if train and images_per_epoch:
        data = data.take(images_per_epoch)  # after the shuffle: a new subset every epoch
    data = data.batch(batch_size, drop_remainder=train)
    drawn = f", {images_per_epoch} drawn per epoch" if train and images_per_epoch else ""
    if not train and 0 < eval_images < count:
        drawn = f", {eval_images} evenly spaced scored"
    LOG.info("%s dataset %s: %d images%s in %d classes, %r, shard %d/%d, batch %d",
             "train" if train else "eval", root, count, drawn, len(classes), preset, rank_id,
             rank_size, batch_size)
    return data, classes
