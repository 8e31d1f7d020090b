"""Export's side of the model repository (modelrepo.layout): staging and publication, failures as ExportError."""
from contextlib import contextmanager

from export.errors import ExportError
from modelrepo import layout
from modelrepo.errors import RepositoryError


def create_staging(repository, name):
    """A fresh staging directory for a version of `name` (modelrepo.layout.create_staging)."""
    with _as_export_error():
        return layout.create_staging(repository, name)


def publish(staging, prepare):
    """Rename `staging` to the next free version after `prepare(version)` (modelrepo.layout.publish)."""
    with _as_export_error():
        return layout.publish(staging, prepare)


def discard(staging):
    """Remove a staging directory and everything in it."""
    layout.discard(staging)


@contextmanager
def _as_export_error():
    """Repository failures reach the user as ExportError, with their message."""
    try:
        yield
    except RepositoryError as error:
        raise ExportError(str(error)) from None
