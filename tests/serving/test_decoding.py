"""Untrusted image bytes reach only the decoders the server accepts (JPEG, PNG, BMP, TIFF, PNM).

Each check runs `decode_rgb` in a fresh interpreter of both server environments: .venv (Python
3.11, Pillow 13) and .venv-lite (Python 3.7, Pillow 9.5, whose bundled libwebp has CVE-2023-4863).
A refused file must not even import its Pillow plugin, and once every plugin is loaded (as another
library in the process might do), the refused plugins' `_open` must still never run.
"""
import io
import json
import os
import subprocess
import sys
from typing import Dict

import numpy as np
import pytest
from PIL import Image

from clients.benchmark.servers import REPO_ROOT
from runtime_env import lite_python

ACCEPTED = "training's decoder reads JPEG, PNG, BMP, TIFF and PNM"
REFUSED_PLUGINS = {"WebPImagePlugin": "WebPImageFile", "GifImagePlugin": "GifImageFile",
                   "TgaImagePlugin": "TgaImageFile", "IcoImagePlugin": "IcoImageFile"}
PROBE = """
import importlib, json, sys
from pathlib import Path
from serving.decoding import decode_rgb
from serving.errors import InvalidInput

PLUGINS = json.loads(sys.argv[3])

def decode_all(folder):
    outcome = {}
    for path in sorted(Path(folder).iterdir()):
        try:
            outcome[path.name] = list(decode_rgb(path.read_bytes(), 10 ** 6).shape)
        except InvalidInput as error:
            outcome[path.name] = f"{error.code}: {error}"
    return outcome

def record_opens():
    from PIL import Image
    Image.init()  # every plugin Pillow has, imported and registered
    for module_name, class_name in PLUGINS.items():
        image_class = getattr(importlib.import_module("PIL." + module_name), class_name)
        def _open(self, name=module_name):
            calls.append(name)
            raise SyntaxError("plugin called")
        image_class._open = _open

calls = []
fresh = decode_all(sys.argv[1])
imported = sorted(name for name in PLUGINS if "PIL." + name in sys.modules)
record_opens()
after_init = decode_all(sys.argv[1])
accepted = decode_all(sys.argv[2])
print(json.dumps({"fresh": fresh, "imported": imported, "after_init": after_init, "accepted": accepted,
                  "calls": calls}))
"""


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _refused_files(image: Image.Image) -> Dict[str, bytes]:
    """Files of formats MindSpore's Decode refuses, as their own tools write them."""
    tga = _save(image, "TGA")
    assert tga.endswith(b"TRUEVISION-XFILE.\x00")
    return {"image.webp": _save(image, "WEBP"), "image.gif": _save(image, "GIF"), "image.tga": tga,
            "image.ico": _save(image, "ICO"), "footerless.tga": tga[:-26],
            "text.txt": b"hello, this is not an image"}


def _accepted_files(image: Image.Image) -> Dict[str, bytes]:
    """One file per accepted format, MPO and plain PBM included."""
    return {"image.jpg": _save(image, "JPEG"), "image.mpo": _save(image, "MPO", save_all=True,
                                                                  append_images=[image]),
            "image.png": _save(image, "PNG"), "image.bmp": _save(image, "BMP"), "image.tif": _save(image, "TIFF"),
            "image.ppm": _save(image, "PPM"), "plain.pbm": b"P1\n3 2\n1 0 1\n0 1 0\n"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(refused files folder, accepted files folder)."""
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), np.uint8))
    root = tmp_path_factory.mktemp("decoding")
    for name, files in (("refused", _refused_files(image)), ("accepted", _accepted_files(image))):
        (root / name).mkdir()
        for file_name, data in files.items():
            (root / name / file_name).write_bytes(data)
    return root / "refused", root / "accepted"


@pytest.mark.parametrize("python", [sys.executable, lite_python()], ids=["venv", "venv-lite"])
def test_refused_formats_never_reach_their_pillow_plugin(python, folders):
    completed = subprocess.run([python, "-c", PROBE, str(folders[0]), str(folders[1]), json.dumps(REFUSED_PLUGINS)],
                               cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=120,
                               env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(completed.stdout)
    assert result["imported"] == [] and result["calls"] == []
    for phase in ("fresh", "after_init"):
        messages = result[phase]
        for name, fmt in (("image.webp", "WebP"), ("image.gif", "GIF"), ("image.tga", "TGA"), ("image.ico", "ICO")):
            assert messages[name] == f"INVALID_ARGUMENT: {fmt} images are not supported: {ACCEPTED}"
        for name in ("footerless.tga", "text.txt"):
            assert messages[name].startswith("INVALID_ARGUMENT: not an image in an accepted format")
    assert result["accepted"] == {path.name: [2, 3, 3] if path.name == "plain.pbm" else [20, 30, 3]
                                  for path in folders[1].iterdir()}

