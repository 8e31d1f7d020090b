"""The manifest contract: what export writes, serving reads back; untrusted content (paths, checksums,
version names, versions written before the checksums) is refused with a message naming the problem."""
import hashlib
import json

import pytest

from modelrepo.errors import ManifestError
from modelrepo.manifest import Preprocessing, read_manifest, read_version
from tests.modelrepo.versions import rewrite_manifest


def test_what_is_written_is_read_back(version_copy):
    manifest = read_version(version_copy)
    assert (manifest.name, manifest.version, manifest.directory) == ("genet_res50", "2", str(version_copy))
    assert manifest.labels == ["class_0", "class_1", "class_2"] and manifest.num_classes == 3
    assert manifest.preprocessing == Preprocessing(9, 8, (123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
    model_file = manifest.file("mslite")
    assert (model_file.path, model_file.format, model_file.input_layout, model_file.batch) \
        == (str(version_copy / "model.ms"), "MINDIR_LITE", "NCHW", "dynamic")
    assert model_file.sha256 == hashlib.sha256((version_copy / "model.ms").read_bytes()).hexdigest()
    written = json.loads((version_copy / "manifest.json").read_text())
    assert list(written)[:7] == ["schema_version", "name", "version", "created_utc", "model", "labels_file",
                                 "labels_sha256"]
    assert (version_copy / "manifest.sha256").read_text() \
        == f"{hashlib.sha256((version_copy / 'manifest.json').read_bytes()).hexdigest()}  manifest.json\n"


def test_a_file_the_manifest_does_not_list_or_that_is_missing_is_refused(version_copy):
    with pytest.raises(ManifestError, match=r"no 'mindir' file \(files: mslite\)"):
        read_manifest(version_copy).file("mindir")
    (version_copy / "model.ms").unlink()
    with pytest.raises(ManifestError, match="the file is missing"):
        read_manifest(version_copy).file("mslite")


@pytest.mark.parametrize("labels_file", ["/etc/passwd", "../../../../../../../../etc/passwd", "link"])
def test_a_labels_file_outside_the_version_directory_is_refused(version_copy, labels_file):
    (version_copy / "link").symlink_to("/etc/passwd")
    rewrite_manifest(version_copy, labels_file=labels_file)
    with pytest.raises(ManifestError, match="outside the version directory"):
        read_manifest(str(version_copy))


@pytest.mark.parametrize("path", ["/etc/passwd", "../../../../../../../../etc/passwd", "../2/../../2/model.ms"])
def test_a_model_file_outside_the_version_directory_is_refused(version_copy, path):
    manifest = json.loads((version_copy / "manifest.json").read_text())
    manifest["files"]["mslite"]["path"] = path
    rewrite_manifest(version_copy, files=manifest["files"])
    with pytest.raises(ManifestError, match="outside the version directory"):
        read_manifest(str(version_copy)).file("mslite")


def test_edited_labels_and_an_edited_manifest_are_refused(version_copy):
    labels = version_copy / "labels.txt"
    labels.write_text(labels.read_text().replace("class_0", "class_zero"))
    with pytest.raises(ManifestError, match="labels.txt: sha256 mismatch"):
        read_manifest(str(version_copy))
    rewrite_manifest(version_copy, version=2)  # checksums now cover the new labels
    manifest_file = version_copy / "manifest.json"
    manifest_file.write_text(manifest_file.read_text().replace('"version": 2', '"version": 3'))
    with pytest.raises(ManifestError, match="manifest.json: sha256 mismatch"):
        read_manifest(str(version_copy))


def test_a_version_exported_without_checksums_is_refused_naming_re_export(version_copy):
    (version_copy / "manifest.sha256").unlink()
    with pytest.raises(ManifestError, match="no manifest.sha256: re-export"):
        read_manifest(str(version_copy))
    manifest = json.loads((version_copy / "manifest.json").read_text())
    del manifest["labels_sha256"]
    (version_copy / "manifest.json").write_text(json.dumps(manifest))
    (version_copy / "manifest.sha256").write_text(hashlib.sha256((version_copy / "manifest.json").read_bytes())
                                                  .hexdigest() + "  manifest.json\n")
    with pytest.raises(ManifestError, match="no labels_sha256: re-export"):
        read_manifest(str(version_copy))


def test_a_version_not_written_as_its_directory_name_is_refused(version_copy):
    rewrite_manifest(version_copy, version="02")
    with pytest.raises(ManifestError, match="the directory is version 2 but its manifest says version '02'"):
        read_version(str(version_copy))
