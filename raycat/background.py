"""Work the driver starts on a daemon thread and collects later: a module import (hats
takes about a second) or a hash (hashing releases the GIL), overlapped with the plan or
the stream instead of added to them."""

from __future__ import annotations

import importlib
import sys
import threading
from concurrent.futures import Future

_IMPORTS: dict[str, Future] = {}


def in_background(fn, *args) -> Future:
    """``fn(*args)`` on a daemon thread; ``.result()`` waits for its value (or raises)."""
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as err:  # handed to whoever waits on the result
            future.set_exception(err)

    threading.Thread(target=run, daemon=True).start()
    return future


def import_in_background(module: str) -> None:
    """Start importing ``module`` on a thread, unless it is imported or being imported; use
    it after ``imported(module)``."""
    if module not in sys.modules and module not in _IMPORTS:
        _IMPORTS[module] = in_background(importlib.import_module, module)


def imported(module: str) -> None:
    """Wait for a background import of ``module`` (and raise its error): importing a
    submodule of a package that another thread is half-way through importing can fail
    ("partially initialized module": importlib breaks the two threads' lock cycle that way).
    ``import hats`` alone is safe."""
    future = _IMPORTS.pop(module, None)
    if future is not None:
        future.result()
