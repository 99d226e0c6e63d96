"""Optional dependencies, installed as extras: ``[sim]``, ``[report]``, ``[gcs]``, ``[rail]``.

``pip install raycat`` brings what ``raycat infer`` needs and nothing more: the mock sky
(GalSim, speclite), the plots and the photometry baseline (matplotlib, scikit-learn),
``gs://`` stores (gcsfs) and the qp export for RAIL (qp-prob, tables-io, h5py) come with
extras. Code that needs one imports it through
:func:`optional` (or turns the ImportError into :func:`missing_extra`), so a missing package
is one line that names the extra to install, never a traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from raycat.errors import RaycatError

MOCK_SKY = "the mock sky (raycat simulate, raycat demo)"  # what the [sim] extra is for


def missing_extra(extra: str, what: str, err: ImportError) -> RaycatError:
    """The one-line error for ``what`` needing ``extra``, whose import failed with ``err``."""
    module = err.name or str(err)
    return RaycatError(
        f"{what} needs the [{extra}] extra ({module} is not installed): "
        f"pip install 'raycat[{extra}]'"
    )


def optional(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module`` from ``extra``; a RaycatError naming the extra when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise missing_extra(extra, what, err) from None
