"""The one exception type of the export: its message names the problem for the user."""


class ExportError(Exception):
    """An export that cannot be completed (bad input, failed conversion or verification)."""
