"""Seeded synthetic object lists at sky scale: what the planner is benchmarked and tested on.

A real full-sky list (Legacy Surveys, PS1 3pi) is not uniform: stars and extinction make the
object density vary tens of times with Galactic latitude, and deep fields add small dense
patches. The adaptive partitioning exists for exactly that, so its test data must have it.
The law here, per steradian, is

    rho(ra, dec) ~ min(1 / sin|b|, cap) + (boost - 1) * mean_cone(f) * [inside the deep cone]

a ``1/sin|b|`` rise toward the Galactic plane (the path length through a thin disk), capped
(``cap`` is the plane-to-pole contrast), plus a deep cone ``boost`` times denser than its
surroundings (COSMOS by default). Like lsdb's generators it is a public function of a seed.

Sampling streams: rows are drawn in fixed blocks, each from its own seed (``seed``, block
number), and re-cut into chunks of at most ``chunk_rows``; memory is one chunk plus one
block whatever ``n``, and the rows depend only on ``seed`` (and ``box``), not on the chunk
size. Full sky, the latitude law is sampled exactly by inverse CDF (no rejection) and the
deep cone as a mixture component; in a box, by rejection from a uniform proposal.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from raycat import schema
from raycat.fsutil import filesystem, join

BLOCK_ROWS = 1 << 16  # rows drawn per seeded block: the unit of reproducibility
# One file of a synthetic list (the list is a directory of them, read as one Parquet dataset).
PART_FILE = schema.SYNTHETIC_OBJECTS_FILE

# ICRS -> Galactic rotation (Hipparcos, ESA 1997 vol. 1 sec. 1.5.3): r_gal = GAL @ r_icrs.
GAL = np.array(
    [
        [-0.0548755604162154, -0.8734370902348850, -0.4838350155487132],
        [+0.4941094278755837, -0.4448296299600112, +0.7469822444972189],
        [-0.8676661490190047, -0.1980763734312015, +0.4559837761750669],
    ]
)


@dataclass(frozen=True)
class SkyDensity:
    """Parameters of the density law (see the module docstring); angles in degrees."""

    cap: float = 100.0  # plane-to-pole contrast of the latitude law
    deep_ra: float = 150.1  # the deep cone: COSMOS, inside the RA 150:160, DEC -5:5 box
    deep_dec: float = 2.2
    deep_area_deg2: float = 10.0
    deep_boost: float = 10.0  # density inside the cone over the latitude law's

    @property
    def deep_radius(self) -> float:
        """Radius (deg) of the cone of ``deep_area_deg2``: area = 2 pi (1 - cos r) sr."""
        sr = self.deep_area_deg2 * (np.pi / 180) ** 2
        return float(np.degrees(np.arccos(1 - sr / (2 * np.pi))))

    @cached_property
    def deep_extra(self) -> float:
        """Density the cone adds, in units of the latitude law: (boost - 1) x its mean there."""
        ra, dec = cone_grid(self.deep_ra, self.deep_dec, self.deep_radius)
        return (self.deep_boost - 1) * float(latitude_law(ra, dec, self.cap).mean())


def radec_to_unit(ra, dec) -> np.ndarray:
    """Unit vectors (3, n) of positions in degrees."""
    ra, dec = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])


def unit_to_radec(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ra in [0, 360), dec) in degrees of unit vectors (3, n)."""
    ra = np.degrees(np.arctan2(xyz[1], xyz[0])) % 360.0
    return ra, np.degrees(np.arcsin(np.clip(xyz[2], -1.0, 1.0)))


def galactic_to_icrs(l_deg, b_deg) -> tuple[np.ndarray, np.ndarray]:
    """ICRS (ra, dec) of Galactic (l, b), degrees: one matrix product, no astropy frames."""
    return unit_to_radec(GAL.T @ radec_to_unit(l_deg, b_deg))


def sin_abs_b(ra, dec) -> np.ndarray:
    """|sin b| (Galactic latitude) of ICRS positions in degrees."""
    return np.abs(GAL[2] @ radec_to_unit(ra, dec))


def latitude_law(ra, dec, cap: float) -> np.ndarray:
    """The latitude part of the density, min(1 / sin|b|, cap): 1 at the Galactic poles."""
    return 1.0 / np.maximum(sin_abs_b(ra, dec), 1.0 / cap)


def angular_distance(ra, dec, ra0: float, dec0: float) -> np.ndarray:
    """Great-circle distance (deg) from (ra0, dec0)."""
    cos_d = radec_to_unit(ra0, dec0) @ radec_to_unit(ra, dec)
    return np.degrees(np.arccos(np.clip(cos_d, -1.0, 1.0)))


def cone_grid(ra0: float, dec0: float, radius: float, n: int = 64) -> tuple:
    """Positions that sample a cone evenly in area: a deterministic quadrature grid."""
    rho = np.sqrt((np.arange(n) + 0.5) / n)  # equal-area rings (small-cone approximation)
    phi = 2 * np.pi * (np.arange(n) + 0.5) / n
    r, p = (g.ravel() for g in np.meshgrid(rho * radius, phi))
    dec = dec0 + r * np.sin(p)
    return ra0 + r * np.cos(p) / np.cos(np.radians(dec)), dec


def uniform_in_cone(rng, m: int, ra0: float, dec0: float, radius: float) -> tuple:
    """``m`` positions uniform on the sphere inside a cone: uniform in cos(distance)."""
    cos_t = rng.uniform(np.cos(np.radians(radius)), 1.0, m)
    phi = rng.uniform(0, 2 * np.pi, m)
    sin_t = np.sqrt(1 - cos_t**2)
    local = np.stack([cos_t, sin_t * np.cos(phi), sin_t * np.sin(phi)])  # about +x
    ra, dec = np.radians(ra0), np.radians(dec0)
    to_sky = np.array(  # columns: the cone axis, the local east and north
        [
            [np.cos(dec) * np.cos(ra), -np.sin(ra), -np.sin(dec) * np.cos(ra)],
            [np.cos(dec) * np.sin(ra), np.cos(ra), -np.sin(dec) * np.sin(ra)],
            [np.sin(dec), 0.0, np.cos(dec)],
        ]
    )
    return unit_to_radec(to_sky @ local)


def full_sky_positions(rng, m: int, law: SkyDensity) -> tuple[np.ndarray, np.ndarray]:
    """``m`` positions from the law over the whole sky: a mixture, no rejection.

    Latitude part: s = sin|b| has density min(1/s, cap) on [0, 1], CDF cap*s below 1/cap
    and 1 + ln(cap*s) above, of total 1 + ln(cap); inverted exactly. Its weight over the
    sphere is 4 pi (1 + ln cap), the cone's ``deep_extra`` x its solid angle.
    """
    cone_sr = law.deep_area_deg2 * (np.pi / 180) ** 2
    cone_weight = law.deep_extra * cone_sr
    n_cone = rng.binomial(m, cone_weight / (cone_weight + 4 * np.pi * (1 + np.log(law.cap))))
    t = rng.uniform(0, 1 + np.log(law.cap), m - n_cone)
    s = np.where(t < 1, t, np.exp(t - 1)) / law.cap
    b = np.degrees(np.arcsin(np.minimum(s, 1.0))) * rng.choice([-1.0, 1.0], m - n_cone)
    ra, dec = galactic_to_icrs(rng.uniform(0, 360, m - n_cone), b)
    cra, cdec = uniform_in_cone(rng, n_cone, law.deep_ra, law.deep_dec, law.deep_radius)
    order = rng.permutation(m)  # the cone's rows spread through the block, not at its end
    return np.concatenate([ra, cra])[order], np.concatenate([dec, cdec])[order]


def density(ra, dec, law: SkyDensity) -> np.ndarray:
    """The (unnormalised) density of the law at ICRS positions."""
    inside = angular_distance(ra, dec, law.deep_ra, law.deep_dec) <= law.deep_radius
    return latitude_law(ra, dec, law.cap) + law.deep_extra * inside


def box_bound(box: tuple[float, float, float, float], law: SkyDensity) -> float:
    """An upper bound of the density over a box, for rejection sampling.

    |b| is 1-Lipschitz in angle, so its minimum over the box is at least its minimum over a
    grid less the grid's diagonal step; the cone term is added whether or not it overlaps.
    """
    ra_min, ra_max, dec_min, dec_max = box
    ra, dec = (g.ravel() for g in np.meshgrid(*_box_axes(box, 256)))
    step = np.hypot((ra_max - ra_min) / 255, (dec_max - dec_min) / 255)
    b_min = np.degrees(np.arcsin(sin_abs_b(ra, dec).min())) - step
    return 1.0 / max(np.sin(np.radians(max(b_min, 0.0))), 1.0 / law.cap) + law.deep_extra


def _box_axes(box, n: int) -> tuple[np.ndarray, np.ndarray]:
    ra_min, ra_max, dec_min, dec_max = box
    return np.linspace(ra_min, ra_max, n), np.linspace(dec_min, dec_max, n)


def box_positions(rng, m: int, box, law: SkyDensity, bound: float) -> tuple:
    """Up to ``m`` positions from the law inside a box: uniform proposals, kept with
    probability density / bound (fewer than ``m`` come back; the caller draws again)."""
    ra_min, ra_max, dec_min, dec_max = box
    ra = rng.uniform(ra_min, ra_max, m)
    sin_dec = rng.uniform(np.sin(np.radians(dec_min)), np.sin(np.radians(dec_max)), m)
    dec = np.degrees(np.arcsin(sin_dec))
    keep = rng.uniform(0, bound, m) < density(ra, dec, law)
    return ra[keep], dec[keep]


def _check_box(box) -> tuple[float, float, float, float]:
    ra_min, ra_max, dec_min, dec_max = (float(v) for v in box)
    if not (0 <= ra_min < ra_max <= 360 and -90 <= dec_min < dec_max <= 90):
        raise ValueError(f"box must be (ra_min < ra_max in [0, 360], dec_min < dec_max), {box}")
    return ra_min, ra_max, dec_min, dec_max


def _block(seed: int, index: int, rows: int, box, law: SkyDensity, bound: float) -> tuple:
    """Block ``index``: exactly ``rows`` positions and redshifts, from its own seed."""
    rng = np.random.default_rng([seed, index])
    if box is None:
        ra, dec = full_sky_positions(rng, rows, law)
    else:
        ras, decs, got = [], [], 0
        while got < rows:
            ra, dec = box_positions(rng, 2 * (rows - got) + 64, box, law, bound)
            ras.append(ra)
            decs.append(dec)
            got += len(ra)
        ra, dec = np.concatenate(ras)[:rows], np.concatenate(decs)[:rows]
    z = rng.gamma(2.0, 0.25, rows)  # a broad n(z) peaking near 0.25, mean 0.5
    return ra, dec, z


def _blocks(n: int, seed: int, box, law: SkyDensity) -> Iterator[pd.DataFrame]:
    bound = box_bound(box, law) if box is not None else 0.0
    for index, start in enumerate(range(0, n, BLOCK_ROWS)):
        rows = min(BLOCK_ROWS, n - start)
        ra, dec, z = _block(seed, index, rows, box, law, bound)
        ids = np.arange(start, start + rows, dtype=np.int64)
        yield pd.DataFrame({schema.ID: ids, schema.RA: ra, schema.DEC: dec, schema.TRUTH_Z: z})


def synthetic_objects(
    n: int,
    seed: int,
    *,
    chunk_rows: int = 1_000_000,
    box: tuple[float, float, float, float] | None = None,
    law: SkyDensity | None = None,
) -> Iterator[pd.DataFrame]:
    """``n`` objects (``id`` 0..n-1, ``ra``, ``dec`` in degrees, ``z``) in chunks of at most
    ``chunk_rows`` rows; ``box`` = (ra_min, ra_max, dec_min, dec_max) restricts them to it.

    Streaming: memory is one chunk plus one block; the same ``seed`` and ``box`` give the
    same rows whatever ``chunk_rows``.
    """
    if n < 0 or chunk_rows < 1:
        raise ValueError(f"need n >= 0 and chunk_rows >= 1, got {n} and {chunk_rows}")
    box = _check_box(box) if box is not None else None
    pending: list[pd.DataFrame] = []
    held = 0
    for block in _blocks(n, seed, box, law or SkyDensity()):
        pending.append(block)
        held += len(block)
        while held >= chunk_rows:
            merged = pd.concat(pending, ignore_index=True)
            yield merged.iloc[:chunk_rows].reset_index(drop=True)
            pending, held = [merged.iloc[chunk_rows:]], held - chunk_rows
    if held:
        yield pd.concat(pending, ignore_index=True)


def write_synthetic_objects(
    out_dir: str,
    n: int,
    seed: int,
    rows_per_file: int = 1_000_000,
    storage_options: dict | None = None,
    *,
    box: tuple[float, float, float, float] | None = None,
    law: SkyDensity | None = None,
) -> list[str]:
    """Write :func:`synthetic_objects` as Parquet files of at most ``rows_per_file`` rows
    under ``out_dir`` (a path or URL): a directory the planner reads as ``data.objects``.
    Returns the files' URLs in order; one chunk is in memory at a time."""
    fs, root = filesystem(out_dir, storage_options)
    fs.makedirs(root, exist_ok=True)
    written = []
    chunks = synthetic_objects(n, seed, chunk_rows=rows_per_file, box=box, law=law)
    for part, chunk in enumerate(chunks):
        path = join(root, PART_FILE.format(part=part))
        with fs.open(path, "wb") as handle:
            chunk.to_parquet(handle, index=False)
        written.append(join(out_dir, PART_FILE.format(part=part)))
    return written
