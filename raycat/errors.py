"""The one exception family the CLI prints as a single line (no traceback): user errors."""


class RaycatError(Exception):
    """Wrong input from the user: a missing file, an unknown band, a bad value, bad data."""
