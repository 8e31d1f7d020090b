"""Accuracy through the server: every image of an ImageNet-layout folder (root/<class>/<image>) classified.

Class ids follow training's convention, the indices of the sorted class folder names, which is
also the order of the server's labels: a folder is mapped to the label of the same name, or to
its sorted index when the labels name classes differently (e.g. human-readable names for wnids).
"""
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import grpc

from clients.client import ClassifierClient, ClientError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def list_images(root: Path) -> List[Tuple[Path, str]]:
    """(image path, class folder name) for every image under root/<class>/, sorted."""
    classes = sorted(p.name for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{root} has no class folders (expected an ImageNet layout root/<class>/<image>)")
    images = [
        (path, name)
        for name in classes
        for path in sorted((Path(root) / name).iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    ]
    if not images:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
    return images


def class_ids(folders: Sequence[str], labels: Sequence[str]) -> Tuple[Dict[str, int], str]:
    """Each folder's class id and how it was found: "labels" (by name) or "sorted_folders" (by index)."""
    names = sorted(set(folders))
    index = {label: i for i, label in enumerate(labels)}
    if all(name in index for name in names):
        return {name: index[name] for name in names}, "labels"
    if len(names) == len(labels):
        logger.warning("class folders are not the server's labels: mapping them by sorted index")
        return {name: i for i, name in enumerate(names)}, "sorted_folders"
    raise ValueError(f"{len(names)} class folders cannot be mapped to the server's {len(labels)} labels")


def evenly_spaced(items: Sequence, count: int) -> list:
    """`count` items spread evenly over `items` in order (each class keeps its share); all when count is 0."""
    if not 0 < count < len(items):
        return list(items)
    return [items[i * len(items) // count] for i in range(count)]


def measure_accuracy(
    client: ClassifierClient,
    root: Path,
    labels: Sequence[str],
    images_per_request: int = 8,
    concurrency: int = 4,
    progress: Optional[Callable[[int, int], None]] = None,
    limit: int = 0,
) -> dict:
    """Top-1 and top-5 over every image under root, or `limit` of them evenly spaced; images the server
    refuses count as wrong."""
    listed = list_images(root)
    images = evenly_spaced(listed, limit)
    ids, mapping = class_ids([name for _, name in images], labels)
    chunks = [images[i:i + images_per_request] for i in range(0, len(images), images_per_request)]
    top1 = top5 = failed = done = 0
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for chunk, ranked in zip(chunks, pool.map(lambda c: _classify_chunk(client, c), chunks)):
            for (path, name), predicted in zip(chunk, ranked):
                failed += predicted is None
                predicted = predicted or []
                top1 += predicted[:1] == [ids[name]]
                top5 += ids[name] in predicted[:5]
            done += len(chunk)
            if progress is not None:
                progress(done, len(images))
    total = len(images)
    return {
        "top1": top1 / total if total else None,
        "top5": top5 / total if total else None,
        "images": total,
        "images_in_data": len(listed),
        "top1_correct": top1,
        "top5_correct": top5,
        "failed": failed,
        "classes": len(ids),
        "label_mapping": mapping,
        "data": str(root),
    }


def _classify_chunk(client: ClassifierClient, chunk: List[Tuple[Path, str]]) -> List[Optional[List[int]]]:
    """Ranked class ids per image; a refused request is retried image by image, None for each that fails."""
    try:
        result = client.classify([path for path, _ in chunk], top_k=5)
        return [[p.class_id for p in predictions] for predictions in result.predictions]
    except ClientError as error:
        if len(chunk) == 1:
            logger.warning("%s not classified: %s", chunk[0][0], error)
            return [None]
        if error.code != grpc.StatusCode.INVALID_ARGUMENT:
            logger.warning("%d images not classified: %s", len(chunk), error)
            return [None] * len(chunk)
    return [ranked for item in chunk for ranked in _classify_chunk(client, [item])]
