"""The one exception family the CLI prints as a single line (no traceback): user errors."""


class RaycatError(Exception):
    """Wrong input from the user: a missing file, an unknown band, a bad value, bad data."""


class StorePathError(RaycatError):
    """A tile URI that is not a plain path inside its store root."""


def user_error(err: BaseException) -> RaycatError | None:
    """The user error behind ``err``, or None when there is none.

    A RaycatError raised inside a Ray task reaches the driver as a RayTaskError whose
    ``cause`` is the original (``runtime.configure_data_context`` asks Ray Data not to wrap
    it in a UserCodeException), so the CLI can print it as one line like any other.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        wrapped = getattr(current, "cause", None)  # a RayTaskError's original exception
        if isinstance(wrapped, BaseException):
            current = wrapped
            continue
        if isinstance(current, RaycatError):
            return current
        current = current.__cause__ or current.__context__
    return None


def one_line(err: BaseException) -> str:
    """The first line of an error's message (Ray appends its retry advice to a task's)."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
