"""The one exception family the CLI prints as a single line (no traceback): user errors."""


class RaycatError(Exception):
    """Wrong input from the user: a missing file, an unknown band, a bad value, bad data."""


class StorePathError(RaycatError):
    """A tile URI that is not a plain path inside its store root."""
