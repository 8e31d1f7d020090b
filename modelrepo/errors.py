"""The errors of the model repository contract: one base, one subclass per concern."""


class ModelRepositoryError(ValueError):
    """A model repository, or a version in it, that cannot be used as asked, with the reason."""


class RepositoryError(ModelRepositoryError):
    """The repository has nothing servable for the request, or a version cannot be staged or published."""


class ManifestError(ModelRepositoryError):
    """A version directory whose manifest, labels or files cannot be served."""
