"""Robust statistics shared by the photo-z metrics and the image checks.

The photo-z NMAD (``raycat.photoz.pdf``), the background noise of the source detector and the
cross-survey offsets (``raycat.quality``) all measure scatter by the median absolute
deviation; one function keeps them on one definition and one scale factor.
"""

from __future__ import annotations

import numpy as np

MAD_TO_SIGMA = 1.4826  # makes the MAD of a Gaussian equal its standard deviation


def mad_sigma(values, centre: float | None = None) -> float:
    """MAD of ``values`` about ``centre`` (default: their median), scaled to a Gaussian sigma.

    Robust to outliers: up to half the values may be anything without moving it far.
    Callers drop non-finite values first; a centre they already hold saves a second median.
    """
    values = np.asarray(values, dtype=float)
    if centre is None:
        centre = np.median(values)
    return float(MAD_TO_SIGMA * np.median(np.abs(values - centre)))
