"""Real survey tilings computed from their published geometry: lookup and index rows.

A full-sky tile index must not need a listing of millions of files: the unWISE atlas and the
Pan-STARRS1 RINGS.V3 tessellation are both regular, so tile names, centres and WCS follow
from a few constants (docs/tiling.md gives the derivations and the checks against real
headers). Both are TAN projections with north up and east left.

unWISE / AllWISE atlas (18,240 tiles of 2048 x 2048 px at 2.75"/px):
  rows at dec_k = k * 5452" (k = -59..59, 1.5144 deg apart); row k holds
  n_k = round(360 cos(|dec_k| - h) / 1.5144) tiles (h = half a tile side, 0.7822 deg) at
  ra_j = j * 360 / n_k; the name is int(10 ra) (4 digits) + p/m + int(10 |dec|) (3 digits).
Pan-STARRS1 RINGS.V3 (2644 projection cells of 10 x 10 skycells, 0.25"/px):
  zone z (0..45) is centred at dec -90 + 4z, spans +-2 deg and holds
  n_z = floor(90 cos(|dec_z| - 2)) cells (one at each pole), numbered from the south pole
  up, at ra = i * 360 / n_z; all skycells of a cell share its tangent point. Skycell
  row * 10 + col counts rows from south and columns from east (pixel x runs west).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from raycat.errors import RaycatError
from raycat.surveys.tan import tan_deproject, tan_project

ARCSEC = 1.0 / 3600.0


@dataclass(frozen=True)
class RealTile:
    """One tile of a computed tiling: its name, tangent point and pixel grid."""

    survey: str
    name: str
    crval: tuple[float, float]  # tangent point (ra, dec), degrees
    crpix: tuple[float, float]  # FITS (1-based) pixel of the tangent point
    naxis: tuple[int, int]
    scale_arcsec: float
    fields: dict = field(default_factory=dict)  # extra URI template fields

    def wcs_header(self):
        """NAXIS and TAN WCS keywords (east left, north up), as the survey writes them."""
        from astropy.io import fits

        header = fits.Header()
        header["NAXIS"], header["NAXIS1"], header["NAXIS2"] = 2, *self.naxis
        header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
        header["CRVAL1"], header["CRVAL2"] = self.crval
        header["CRPIX1"], header["CRPIX2"] = self.crpix
        header["CD1_1"], header["CD1_2"] = -self.scale_arcsec * ARCSEC, 0.0
        header["CD2_1"], header["CD2_2"] = 0.0, self.scale_arcsec * ARCSEC
        header["LONPOLE"] = 180.0  # also at a pole, where the FITS default would flip the axes
        header["RADESYS"] = "ICRS"
        return header


def _wrap_ra(ra) -> np.ndarray:
    return np.mod(np.asarray(ra, dtype=float), 360.0)


def _check_positions(ra, dec) -> tuple[np.ndarray, np.ndarray]:
    ra, dec = np.atleast_1d(np.asarray(ra, float)), np.atleast_1d(np.asarray(dec, float))
    if ra.shape != dec.shape:
        raise RaycatError("ra and dec must have the same shape")
    if (~np.isfinite(ra) | ~np.isfinite(dec) | (np.abs(dec) > 90)).any():
        raise RaycatError("positions must have finite ra and |dec| <= 90")
    return _wrap_ra(ra), dec


def _box_rings(centres: np.ndarray, half_height: float, dec_min: float, dec_max: float):
    """Indices of rings (centre decs) whose band of half-height reaches [dec_min, dec_max]."""
    return np.flatnonzero((centres + half_height >= dec_min) & (centres - half_height <= dec_max))


def _ra_in_range(ra, ra_min: float, ra_max: float, pad: float) -> np.ndarray:
    """RA inside [ra_min - pad, ra_max + pad] on the circle (ra_min > ra_max wraps 360)."""
    width = (ra_max - ra_min) % 360.0 or (360.0 if ra_max != ra_min else 0.0)
    if width + 2 * pad >= 360.0:
        return np.ones(np.shape(ra), dtype=bool)
    return (np.asarray(ra) - (ra_min - pad)) % 360.0 <= width + 2 * pad


def _ra_pad(radius: float, dec_min: float, dec_max: float) -> float:
    """RA half-width of a circle of ``radius`` at the most poleward dec of a band."""
    worst = min(89.999, max(abs(dec_min), abs(dec_max)) + radius)
    return min(360.0, radius / math.cos(math.radians(worst)))


# --- unWISE -------------------------------------------------------------------------------


class UnwiseTiling:
    """The unWISE (AllWISE atlas) tile set: 18,240 tiles, names like ``1866p257``."""

    survey = "unwise"
    naxis = 2048
    scale_arcsec = 2.75
    row_step = 5452 * ARCSEC  # 1.51444 deg between rows, and the along-row target spacing
    n_rows_half = 59  # rows k = -59..59; row 59 (89.35 deg) still covers the pole

    def __init__(self):
        self.half_side = self.naxis * self.scale_arcsec * ARCSEC / 2
        k = np.arange(-self.n_rows_half, self.n_rows_half + 1)
        self.row_dec = k * self.row_step
        equatorward = np.radians(np.maximum(np.abs(self.row_dec) - self.half_side, 0.0))
        self.row_count = np.maximum(np.round(360 * np.cos(equatorward) / self.row_step), 1).astype(
            int
        )

    @property
    def n_tiles(self) -> int:
        return int(self.row_count.sum())

    @staticmethod
    def tile_name(ra: float, dec: float) -> str:
        """unWISE name of a tile centre: int(10 ra), p/m, int(10 |dec|) (truncated, not rounded)."""
        ra, sign = float(ra) % 360.0, "p" if dec >= 0 else "m"
        return f"{int(ra * 10 + 1e-6):04d}{sign}{int(abs(dec) * 10 + 1e-6):03d}"

    def _tile(self, row: int, j: int) -> RealTile:
        ra = j * 360.0 / self.row_count[row]
        dec = float(self.row_dec[row])
        name = self.tile_name(ra, dec)
        centre = (self.naxis + 1) / 2.0
        return RealTile(
            self.survey,
            name,
            (ra, dec),
            (centre, centre),
            (self.naxis, self.naxis),
            self.scale_arcsec,
        )

    def lookup(self, ra, dec) -> np.ndarray:
        """Name of the tile holding each position farthest from its edge."""
        row, j = self._best(*_check_positions(ra, dec))
        return np.array([self._tile(r, c).name for r, c in zip(row, j)], dtype=object)

    def centre(self, name: str) -> tuple[float, float]:
        """Tile centre (ra, dec) of a tile name of this tiling."""
        tile = self.tile(name)
        return tile.crval

    def tile(self, name: str) -> RealTile:
        """The tile of a name (``1866p257``); RaycatError for a name not in the tiling."""
        try:
            ra, dec = int(name[:4]) / 10.0, int(name[5:8]) / 10.0 * (1 if name[4] == "p" else -1)
        except (ValueError, IndexError):
            raise RaycatError(f"not an unWISE tile name: {name!r}") from None
        row, j = self._best(np.array([ra + 0.05]), np.array([dec]))
        tile = self._tile(int(row[0]), int(j[0]))
        if tile.name != name:
            raise RaycatError(f"no unWISE tile named {name!r}")
        return tile

    def _best(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, index in row) of the candidate tile with the largest edge margin."""
        nearest = np.rint(dec / self.row_step).astype(int) + self.n_rows_half
        best = (np.zeros(len(ra), int), np.zeros(len(ra), int), np.full(len(ra), -np.inf))
        for drow in (-1, 0, 1):
            row = np.clip(nearest + drow, 0, len(self.row_dec) - 1)
            n = self.row_count[row]
            for dj in (-1, 0, 1):
                j = (np.rint(ra * n / 360.0).astype(int) + dj) % n
                xi, eta = tan_project(ra, dec, j * 360.0 / n, self.row_dec[row])
                margin = self.half_side - np.maximum(np.abs(xi), np.abs(eta))
                best = _better(best, (row, j, margin), np.ones(len(ra), dtype=bool))
        return best[0], best[1]

    def tiles(self, ra_min=0.0, ra_max=360.0, dec_min=-90.0, dec_max=90.0) -> Iterator[RealTile]:
        """Tiles that may touch the box (centre within the box grown by the tile radius)."""
        box = (ra_min, ra_max, dec_min, dec_max)
        for row, cells in self.cells(box):
            yield from self.cell_tiles(row, cells, box)

    def cells(self, box: tuple[float, float, float, float]) -> Iterator[tuple[int, np.ndarray]]:
        """(row, tile numbers in it) of the tiles that may touch the box: the units a
        parallel build splits the tiling into."""
        ra_min, ra_max, dec_min, dec_max = box
        radius = self.half_side * math.sqrt(2)
        for row in _box_rings(self.row_dec, radius, dec_min, dec_max):
            n = self.row_count[row]
            ras = np.arange(n) * 360.0 / n
            pad = _ra_pad(radius, dec_min, dec_max)
            yield int(row), np.flatnonzero(_ra_in_range(ras, ra_min, ra_max, pad))

    def cell_centres(self, row: int, cells) -> tuple[np.ndarray, float]:
        """(RAs, dec) of the centres of tile numbers ``cells`` of a row."""
        return np.asarray(cells) * 360.0 / self.row_count[row], float(self.row_dec[row])

    def cell_tiles(self, row: int, cells, box) -> Iterator[RealTile]:
        """The tiles of ``cells`` (tile numbers of one row: already inside the box)."""
        for j in cells:
            yield self._tile(int(row), int(j))


# --- Pan-STARRS1 RINGS.V3 -----------------------------------------------------------------


class PS1Tiling:
    """The PS1 3pi RINGS.V3 skycells: names like ``1329.005`` (projection cell.skycell).

    Skycell images are ``core + 2 * pad`` pixels on a side, neighbours overlapping by 2 pads.
    The core width of zone 23 (dec +2) is 5760 x 5763 px as in the real headers (their
    CELL.TRIMSEC is [1:6240,1:6243]); other zones use the same rule: the x core covers the
    cell's RA span at its equatorward edge, the y core the +-2 deg zone in the tangent plane.
    """

    survey = "ps1"
    scale_arcsec = 0.25
    pad = 240  # pixels added on each side of a skycell core
    zone_deg = 4.0
    n_zones = 46

    def __init__(self):
        z = np.arange(self.n_zones)
        self.zone_dec = -90.0 + self.zone_deg * z
        half = self.zone_deg / 2
        count = np.floor(90 * np.cos(np.radians(np.abs(self.zone_dec) - half)) + 1e-9)
        count[[0, -1]] = 1  # one cell on each pole
        self.zone_count = count.astype(int)
        self.zone_first = np.concatenate([[0], np.cumsum(self.zone_count)[:-1]])
        px_deg = self.scale_arcsec * ARCSEC
        core_y = 2 * math.degrees(math.tan(math.radians(half))) / 10
        equatorward = np.radians(np.maximum(np.abs(self.zone_dec) - half, 0.0))
        core_x = 360.0 / self.zone_count * np.cos(equatorward) / 10
        core_x[[0, -1]] = core_y  # the polar cells are squares about the pole
        self.core_x = np.ceil(core_x / px_deg - 1e-6).astype(int)
        self.core_y = np.maximum(math.ceil(core_y / px_deg - 1e-6), self._corner_core_y())

    def _corner_core_y(self) -> np.ndarray:
        """Smallest y core (px) whose padded cells reach their zone's curved corners.

        Away from the equator a zone edge bends in the tangent plane, so the corners of a
        cell lie beyond +-2 deg; zone 23 needs no more than the meridian value (5763 px).
        """
        n, dec, half = self.zone_count, self.zone_dec, self.zone_deg / 2
        _, eta_lo = tan_project(180.0 / n, np.maximum(dec - half, -90), 0.0, dec)
        _, eta_hi = tan_project(180.0 / n, np.minimum(dec + half, 90), 0.0, dec)
        reach = np.maximum(np.abs(eta_lo), np.abs(eta_hi)) / (self.scale_arcsec * ARCSEC)
        need = np.ceil((np.where(np.isfinite(reach), reach, 0) - self.pad) / 5)
        need[[0, -1]] = 0  # polar cells are squares about the pole
        return need.astype(int)

    @property
    def n_cells(self) -> int:
        return int(self.zone_count.sum())

    def lookup(self, ra, dec) -> np.ndarray:
        """Skycell name ("pppp.sss") of each position, as the PS1 archive's own lookup picks:
        the zone holding the dec (dec_min < dec <= dec_max), the cell nearest in RA, the
        skycell whose core holds the point; near a pole, the cell farther from its edge.
        Where that skycell's image misses the point (zone edges curve in the tangent plane,
        far from the cell centre), the neighbouring zone's skycell that holds it is used."""
        ra, dec = _check_positions(ra, dec)
        zone = np.clip(np.searchsorted(self.zone_dec + self.zone_deg / 2, dec), 0, self.n_zones - 1)
        best = self._in_zone(ra, dec, zone)
        polar = (zone <= 1) | (zone >= self.n_zones - 2)
        for step in (-1, 1):  # the next zone where the pick misses (curved zone edges)
            other = self._in_zone(ra, dec, np.clip(zone + step, 0, self.n_zones - 1))
            best = _better(best, other, (best[3] < 0) | polar)
        cell, k, j, _ = best
        return np.array([f"{c:04d}.{10 * r + q:03d}" for c, q, r in zip(cell, k, j)], dtype=object)

    def _in_zone(self, ra, dec, zone):
        """(cell, col, row, edge margin in px) of positions placed in the given zones."""
        n = self.zone_count[zone]
        index = np.rint(ra * n / 360.0).astype(int) % n
        xi, eta = tan_project(ra, dec, index * 360.0 / n, self.zone_dec[zone])
        x = -xi / (self.scale_arcsec * ARCSEC)  # pixel x runs west
        y = eta / (self.scale_arcsec * ARCSEC)
        px, py = self.core_x[zone], self.core_y[zone]
        with np.errstate(invalid="ignore"):
            k = np.clip(np.floor(x / px) + 5, 0, 9).astype(int)
            j = np.clip(np.floor(y / py) + 5, 0, 9).astype(int)
        margin = np.minimum.reduce(
            [x - (k - 5) * px, (k - 4) * px - x, y - (j - 5) * py, (j - 4) * py - y]
        )
        margin = np.where(np.isfinite(margin), margin + self.pad, -np.inf)
        return self.zone_first[zone] + index, k, j, margin

    def tile(self, name: str) -> RealTile:
        """The skycell of a name (``1329.005``); RaycatError for a name not in the tiling."""
        try:
            cell, sub = (int(part) for part in name.split("."))
        except ValueError:
            raise RaycatError(f"not a PS1 skycell name: {name!r}") from None
        if not (0 <= cell < self.n_cells and 0 <= sub < 100):
            raise RaycatError(f"no PS1 skycell named {name!r}")
        zone = int(np.searchsorted(self.zone_first, cell, side="right") - 1)
        return self._skycell(zone, cell - int(self.zone_first[zone]), sub)

    def _skycell(self, zone: int, index: int, sub: int) -> RealTile:
        row, col = divmod(sub, 10)
        px, py = int(self.core_x[zone]), int(self.core_y[zone])
        crval = (index * 360.0 / self.zone_count[zone], float(self.zone_dec[zone]))
        crpix = (self.pad + 0.5 + (5 - col) * px, self.pad + 0.5 + (5 - row) * py)
        cell = int(self.zone_first[zone]) + index
        return RealTile(
            self.survey,
            f"{cell:04d}.{sub:03d}",
            crval,
            crpix,
            (px + 2 * self.pad, py + 2 * self.pad),
            self.scale_arcsec,
            {"projcell": cell, "skycell": sub},
        )

    def tiles(self, ra_min=0.0, ra_max=360.0, dec_min=-90.0, dec_max=90.0) -> Iterator[RealTile]:
        """Skycells that may touch the box (centre within the box grown by their radius)."""
        box = (ra_min, ra_max, dec_min, dec_max)
        for zone, cells in self.cells(box):
            yield from self.cell_tiles(zone, cells, box)

    def cells(self, box: tuple[float, float, float, float]) -> Iterator[tuple[int, np.ndarray]]:
        """(zone, projection cells in it) that may hold skycells touching the box: the units
        a parallel build splits the tiling into (skycells are picked in ``cell_tiles``)."""
        for zone in _box_rings(self.zone_dec, self.zone_deg, box[2], box[3]):
            yield int(zone), np.arange(int(self.zone_count[zone]))

    def cell_centres(self, zone: int, cells) -> tuple[np.ndarray, float]:
        """(RAs, dec) of the tangent points of projection cells ``cells`` of a zone."""
        return np.asarray(cells) * 360.0 / self.zone_count[zone], float(self.zone_dec[zone])

    def cell_tiles(self, zone: int, cells, box) -> Iterator[RealTile]:
        """The skycells of projection cells ``cells`` of ``zone`` that may touch the box."""
        ra_min, ra_max, dec_min, dec_max = box
        n = int(self.zone_count[zone])
        sub = np.arange(100)
        xi = -((sub % 10) - 4.5) * self.core_x[zone] * self.scale_arcsec * ARCSEC
        eta = ((sub // 10) - 4.5) * self.core_y[zone] * self.scale_arcsec * ARCSEC
        radius = (
            math.hypot(self.core_x[zone] + 2 * self.pad, self.core_y[zone] + 2 * self.pad)
            * self.scale_arcsec
            * ARCSEC
            / 2
        )
        pad = _ra_pad(radius, dec_min, dec_max)
        for index in cells:
            ra, dec = tan_deproject(xi, eta, int(index) * 360.0 / n, self.zone_dec[zone])
            keep = (
                (dec + radius >= dec_min)
                & (dec - radius <= dec_max)
                & _ra_in_range(ra, ra_min, ra_max, pad)
            )
            for s in np.flatnonzero(keep):
                yield self._skycell(int(zone), int(index), int(s))


def _better(best: tuple, other: tuple, allowed: np.ndarray) -> tuple:
    """Per position, ``other`` where allowed and its edge margin (last item) is larger."""
    take = allowed & (other[-1] > best[-1])
    return tuple(np.where(take, o, b) for b, o in zip(best, other))


TILINGS = {"unwise": UnwiseTiling, "ps1": PS1Tiling}


def get_tiling(survey: str):
    """The computed tiling of a survey ("unwise", "ps1")."""
    if survey not in TILINGS:
        raise RaycatError(f"no computed tiling for survey {survey!r}; known: {', '.join(TILINGS)}")
    return TILINGS[survey]()


# --- index rows ---------------------------------------------------------------------------


def index_rows(
    tiling,
    bands: list[str],
    uri_template: str,
    box: tuple[float, float, float, float] = (0.0, 360.0, -90.0, 90.0),
) -> Iterator[dict]:
    """Tile index rows (the mock sky's columns) of every tile of ``tiling`` in ``box``.

    ``box`` is (ra_min, ra_max, dec_min, dec_max); ra_min > ra_max wraps through 0.
    ``uri_template`` is formatted with ``tile``, ``band``, ``filter`` (band without survey
    prefix) and the tiling's own fields; the URIs must stay relative to the store. The
    footprints are computed in NumPy, a ring at a time (``tile_rows.tile_frame``).
    """
    from raycat.surveys.tile_rows import tile_frame

    for ring, cells in tiling.cells(box):
        tiles = list(tiling.cell_tiles(ring, cells, box))
        yield from tile_frame(tiling.survey, tiles, bands, uri_template).to_dict("records")
