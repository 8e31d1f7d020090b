"""Chooses the model to serve from a model repository (layout: modelrepo.layout)."""
from __future__ import annotations

from typing import Optional

from modelrepo.errors import RepositoryError
from modelrepo.layout import model_names


def resolve_model_name(repository: str, requested: Optional[str]) -> str:
    """The model to serve: `requested`, or the repository's only model."""
    names = model_names(repository)
    if requested is not None:
        if requested not in names:
            raise RepositoryError(f"model {requested!r} has no complete version in {repository} (models: "
                                  f"{', '.join(names) or 'none'})")
        return requested
    if not names:
        raise RepositoryError(f"no model with a complete version (<name>/<version>/manifest.json) in {repository}")
    if len(names) > 1:
        raise RepositoryError(f"{repository} holds several models ({', '.join(names)}); choose one with --model-name")
    return names[0]
