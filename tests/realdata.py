"""Where the real survey files are: ``$RAYCAT_REALDATA``, else ``../shared/realdata`` beside
the repository (read-only; tests that need it skip without it)."""

import os
from pathlib import Path

REALDATA = Path(
    os.environ.get("RAYCAT_REALDATA", Path(__file__).resolve().parents[2] / "shared" / "realdata")
)
