"""scripts/imagenet_labels.py writes the 1000 ImageNet class names in class-index order."""
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "imagenet_labels.py"


def _labels(path, *args):
    result = subprocess.run([sys.executable, str(SCRIPT), str(path), *args], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(path)
    return path.read_text(encoding="utf-8").splitlines()


def test_names_are_unique_one_per_class_in_index_order(tmp_path):
    names = _labels(tmp_path / "labels.txt")
    assert len(names) == len(set(names)) == 1000
    assert all(name and name == name.strip() for name in names)
    assert names[:3] == ["tench", "goldfish", "great white shark"]
    assert names[999] == "toilet paper"
    # the two names the curated list repeats take their original ImageNet names
    assert (names[657], names[744], names[836], names[837]) == (
        "missile", "projectile", "sunglass", "sunglasses")


def test_wnids_are_sorted_like_imagenet_train_folders(tmp_path):
    wnids = _labels(tmp_path / "wnids.txt", "--wnids")
    assert len(wnids) == 1000 and wnids == sorted(wnids)
    assert (wnids[0], wnids[999]) == ("n01440764", "n15075141")
