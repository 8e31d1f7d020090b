"""Finds models and their versions in a model repository laid out as <name>/<version>/manifest.json."""
from __future__ import annotations

import os
import re
from typing import List, Optional

from serving.errors import StartupError

# A version directory is named by its number in canonical decimal: "2", never "02" or "²".
_VERSION_NAME = re.compile(r"(0|[1-9][0-9]{0,17})\Z")


class RepositoryError(StartupError, ValueError):
    """The repository has nothing servable for the request, with the reason."""


def model_names(repository: str) -> List[str]:
    """Sorted names of the models that have at least one complete version."""
    if not os.path.isdir(repository):
        raise RepositoryError("model repository {} is not a directory".format(repository))
    return sorted(name for name in os.listdir(repository)
                  if os.path.isdir(os.path.join(repository, name)) and versions(repository, name))


def versions(repository: str, name: str) -> List[int]:
    """Ascending complete versions of `name`: directories named by a number holding a manifest.json.

    Export writes each version to a temporary directory and renames it into place, so a
    numeric directory with a manifest is complete. Only canonical names count ("02" is ignored),
    so a version's number and its directory name convert both ways.
    """
    root = os.path.join(repository, name)
    found = []
    for entry in os.listdir(root):
        if _VERSION_NAME.match(entry) and os.path.isfile(os.path.join(root, entry, "manifest.json")):
            found.append(int(entry))
    return sorted(found)


def resolve_model_name(repository: str, requested: Optional[str]) -> str:
    """The model to serve: `requested`, or the repository's only model."""
    names = model_names(repository)
    if requested is not None:
        if requested not in names:
            raise RepositoryError("model {!r} has no complete version in {} (models: {})".format(
                requested, repository, ", ".join(names) or "none"))
        return requested
    if not names:
        raise RepositoryError("no model with a complete version (<name>/<version>/manifest.json) in {}"
                              .format(repository))
    if len(names) > 1:
        raise RepositoryError("{} holds several models ({}); choose one with --model-name".format(
            repository, ", ".join(names)))
    return names[0]


def latest_version_dir(repository: str, name: str) -> str:
    """The directory of the highest complete version of `name`."""
    found = versions(repository, name)
    if not found:
        raise RepositoryError("model {!r} has no complete version in {}".format(name, repository))
    return os.path.join(repository, name, str(found[-1]))
