"""An index pixel's tile rows as arrays, and which of them may reach a set of objects.

The finder (``raycat.plan.tiles``) reads an index pixel once into a ``PixelRows``: each
tile's enclosing circle, and for a plain TAN tile the tangent-plane axes that give its pixel
position as dot products. ``candidates`` then lists, per group of objects (or per finer cell
they occupy), the rows whose circle reaches them, and the distinct geometries among those
rows (the bands of one tile share a geometry, so its margins are computed once).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from raycat import schema

FINE_STEPS = (3, 4, 5, 6)  # finer orders (index order + step) objects are matched to rows at


@dataclass
class PixelRows:
    """The rows of one index pixel as arrays (sorted by band, then URI)."""

    uris: np.ndarray  # object array of tile URIs
    band: np.ndarray  # band number (position in the finder's bands)
    plain: np.ndarray  # bool: plain TAN, computed in NumPy
    centre: np.ndarray  # (n, 3) unit vector of CRVAL
    ax: np.ndarray  # (n, 3): x - x0 = (p . ax) / (p . centre)
    ay: np.ndarray
    x0: np.ndarray  # 0-based pixel of CRVAL
    y0: np.ndarray
    nx: np.ndarray
    ny: np.ndarray
    pixel: int  # the index pixel (its header strings are read only if astropy must decide)
    wcs: np.ndarray | None  # object array of header strings, once read
    tile: np.ndarray  # (n, 3) unit vector of the centre of the tile's enclosing circle
    radius: np.ndarray  # radius of that circle (radians, grown a little)
    fine_order: int  # the order objects are matched to rows at (about 3 cells per tile radius)
    geometry: np.ndarray  # the row's geometry: rows with equal WCS numbers share one
    geometries: int


@dataclass
class Candidates:
    """Candidate rows of each cell (CSR, in row order), and the distinct geometries among
    them (CSR, a representative row each) with the position of each row's geometry."""

    starts: np.ndarray
    rows: np.ndarray
    geo_starts: np.ndarray
    geo_rows: np.ndarray
    geo_at: np.ndarray  # per entry of ``rows``: its geometry's place in its cell's list


def unit_vectors(ra, dec) -> np.ndarray:
    ra, dec = np.radians(ra), np.radians(dec)
    cos_dec = np.cos(dec)
    return np.stack([cos_dec * np.cos(ra), cos_dec * np.sin(ra), np.sin(dec)], axis=-1)


def pixel_rows(rows: pa.Table, pixel: int, order: int, bands: list[str]) -> PixelRows:
    """Arrays of a pixel's rows, re-sorted from (URI, band) to (band, URI)."""
    import pyarrow.compute as pc

    code = pc.index_in(rows[schema.TILE_BAND], value_set=pa.array(bands)).to_numpy()
    at = np.argsort(code, kind="stable")  # URIs stay sorted within a band

    def column(name: str, dtype=float) -> np.ndarray:
        return rows[name].to_numpy()[at].astype(dtype)

    num = {c: column(c) for c in schema.TILE_WCS_NUMBERS}
    centre = unit_vectors(num[schema.TILE_CRVAL1], num[schema.TILE_CRVAL2])
    east, north = _tangent_axes(num[schema.TILE_CRVAL1], num[schema.TILE_CRVAL2])
    a, b = num[schema.TILE_CD11], num[schema.TILE_CD12]
    c, d = num[schema.TILE_CD21], num[schema.TILE_CD22]
    det = a * d - b * c
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.degrees(1.0) / det  # xi, eta come out in radians; CD is in degrees
    ax = (d * inv)[:, None] * east - (b * inv)[:, None] * north
    ay = -(c * inv)[:, None] * east + (a * inv)[:, None] * north
    radius = column(schema.TILE_RADIUS)
    nx, ny = column(schema.TILE_NAXIS1), column(schema.TILE_NAXIS2)
    ra, dec = column(schema.TILE_RA), column(schema.TILE_DEC)
    plain = column(schema.TILE_PLAIN_TAN, bool) & np.isfinite(inv)
    # rows with the same numbers are one geometry (the bands of a tile); a non-TAN row is
    # evaluated by astropy from its own header, so it stays one of its own
    own = np.where(plain, -1, np.arange(len(plain)))
    shape = np.column_stack([*num.values(), nx, ny, ra, dec, radius, own])
    as_bytes = np.dtype((np.void, shape.itemsize * shape.shape[1]))  # one row, one value:
    _, geometry = np.unique(shape.view(as_bytes).ravel(), return_inverse=True)  # 6x faster
    return PixelRows(
        uris=column(schema.TILE_URI, object),
        band=code[at],
        plain=plain,
        centre=centre,
        ax=ax,
        ay=ay,
        x0=num[schema.TILE_CRPIX1] - 1.0,
        y0=num[schema.TILE_CRPIX2] - 1.0,
        nx=nx,
        ny=ny,
        pixel=pixel,
        wcs=None,
        tile=unit_vectors(ra, dec),
        radius=np.radians(radius * 1.0001),
        fine_order=order + _fine_step(order, radius),
        geometry=geometry.ravel(),
        geometries=int(geometry.max()) + 1 if len(geometry) else 0,
    )


def _fine_step(order: int, radius: np.ndarray) -> int:
    """How many orders finer than the index pixel objects are matched to rows: ~3 cells
    across the pixel's median tile radius, within ``FINE_STEPS``."""
    side = np.degrees(np.sqrt(4 * np.pi / (12 * 4.0**order)))
    want = np.log2(side / max(float(np.median(radius)) / 3, 1e-9))
    return int(np.clip(np.ceil(want), FINE_STEPS[0], FINE_STEPS[-1]))


def _tangent_axes(ra0, dec0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors east and north at (ra0, dec0): the gnomonic xi and eta directions."""
    a, d = np.radians(ra0), np.radians(dec0)
    east = np.stack([-np.sin(a), np.cos(a), np.zeros_like(a)], axis=-1)
    north = np.stack([-np.sin(d) * np.cos(a), -np.sin(d) * np.sin(a), np.cos(d)], axis=-1)
    return east, north


def cell_circles(cells: np.ndarray, order: int) -> tuple[np.ndarray, float]:
    """Unit vectors of the centres of ``cells`` (nested, at ``order``) and a radius about
    them that holds every point of each."""
    import astropy.units as u
    from cdshealpix.nested import healpix_to_lonlat, vertices

    # one thread: a few thousand cells take ~1 ms, less than starting a thread pool
    lon, lat = healpix_to_lonlat(cells, order, num_threads=1)
    centres = unit_vectors(lon.to_value(u.deg), lat.to_value(u.deg))
    vlon, vlat = vertices(cells, order, num_threads=1)
    corner = unit_vectors(vlon.to_value(u.deg), vlat.to_value(u.deg))
    cos_r = np.clip(np.einsum("ijk,ik->ij", corner, centres), -1, 1)
    return centres, float(np.arccos(cos_r.min())) * 1.05  # edges bulge a little


def candidates(table: PixelRows, centres: np.ndarray, reach: float) -> Candidates:
    """The rows whose enclosing circle may reach each circle (unit vector of its centre,
    radius ``reach``), and their distinct geometries."""
    limit = np.cos(np.minimum(table.radius + reach, np.pi))
    cell, row = np.nonzero(centres @ table.tile.T >= limit[None, :])  # by cell, then row
    key = cell * table.geometries + table.geometry[row]
    distinct, first, geo_of = np.unique(key, return_index=True, return_inverse=True)
    ends = np.arange(len(centres) + 1)
    geo_starts = np.searchsorted(distinct // max(table.geometries, 1), ends)
    return Candidates(
        starts=np.searchsorted(cell, ends),
        rows=row.astype(np.int64),
        geo_starts=geo_starts,
        geo_rows=row[first].astype(np.int64),
        geo_at=geo_of.ravel() - geo_starts[cell],
    )


def ranges(lo: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated ``lo[i] + arange(counts[i])``."""
    return np.repeat(lo - (np.cumsum(counts) - counts), counts) + np.arange(counts.sum())
