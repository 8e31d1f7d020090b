"""Export's side of the model repository: a repository failure reaches the user as ExportError
(the layout itself is tested in tests/modelrepo/test_layout.py)."""
import pytest

from export.errors import ExportError
from export.repository import create_staging


def test_unwritable_repository_is_named(tmp_path):
    blocker = tmp_path / "models"
    blocker.write_text("a file where the repository should be")
    with pytest.raises(ExportError, match="model repository .*models is not writable"):
        create_staging(blocker, "net")
