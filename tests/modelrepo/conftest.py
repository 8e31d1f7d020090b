"""Fixtures of the model repository tests: versions written through the contract, no runtime needed."""
import pytest

from tests.modelrepo.versions import MODEL_NAME, write_version


@pytest.fixture
def version_copy(tmp_path):
    """A writable version as <tmp>/genet_res50/2, its manifest saying version 2."""
    return write_version(tmp_path / MODEL_NAME / "2", 2)

