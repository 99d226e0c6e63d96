"""Today's TileFinder (raycat/plan/manifest.py before the partitioned index), kept as the test
oracle: the partitioned index and raycat.plan.tiles.TileFinder must give exactly its choice.

A test-only reference, not product code: one astropy WCS per index row, a k-d tree of tile
centres, candidates within the largest tile radius.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from raycat import schema


class ReferenceTileFinder:
    """Picks, per object and band, the tile that holds the object farthest from its edge."""

    def __init__(self, index: pd.DataFrame, bands: list[str]):
        from astropy.io import fits
        from astropy.wcs import WCS
        from scipy.spatial import cKDTree

        self.bands = list(bands)
        self.index = index.reset_index(drop=True)
        headers = [fits.Header.fromstring(h) for h in self.index[schema.TILE_WCS]]
        self.wcs = [WCS(h) for h in headers]
        self.shape = np.array([(h["NAXIS1"], h["NAXIS2"]) for h in headers], dtype=float)
        centres = [
            w.pixel_to_world_values((nx - 1) / 2, (ny - 1) / 2)
            for w, (nx, ny) in zip(self.wcs, self.shape)
        ]
        self.xyz = _unit_vectors(*np.array(centres, dtype=float).reshape(-1, 2).T)
        # circle through the farthest corner, so every pixel of every tile is inside it
        self.radius = max(
            (_max_corner_distance(w, s, c) for w, s, c in zip(self.wcs, self.shape, self.xyz)),
            default=0.0,
        )
        self.tree = cKDTree(self.xyz) if len(self.index) else None

    def assign(self, ra: np.ndarray, dec: np.ndarray) -> dict[str, np.ndarray]:
        """Tile URI per object for each band; "" where no tile of that band holds it."""
        best = {b: np.full(len(ra), "", dtype=object) for b in self.bands}
        if self.tree is None or len(ra) == 0:
            return best
        obj, tile = self._candidate_pairs(np.asarray(ra, float), np.asarray(dec, float))
        margin = self._edge_margin(obj, tile, ra, dec)
        inside = margin >= 0
        pairs = pd.DataFrame({"obj": obj[inside], "tile": tile[inside], "margin": margin[inside]})
        pairs["band"] = self.index[schema.TILE_BAND].to_numpy()[pairs["tile"]]
        winners = pairs.loc[pairs.groupby(["band", "obj"])["margin"].idxmax()]
        uris = self.index[schema.TILE_URI].to_numpy()
        for band, rows in winners.groupby("band"):
            best[band][rows["obj"].to_numpy()] = uris[rows["tile"].to_numpy()]
        return best

    def _candidate_pairs(self, ra, dec) -> tuple[np.ndarray, np.ndarray]:
        chord = 2 * np.sin(np.radians(self.radius) / 2) * 1.0001
        assert self.tree is not None  # callers return early on an empty index
        lists = self.tree.query_ball_point(_unit_vectors(ra, dec), chord)
        obj = np.repeat(np.arange(len(ra)), [len(x) for x in lists])
        tile = np.fromiter((t for x in lists for t in x), dtype=np.int64, count=len(obj))
        return obj, tile

    def _edge_margin(self, obj, tile, ra, dec) -> np.ndarray:
        """Distance to the nearest tile edge in native pixels (negative: outside)."""
        margin = np.empty(len(obj))
        order = np.argsort(tile, kind="stable")
        splits = np.flatnonzero(np.diff(tile[order])) + 1
        for group in np.split(order, splits):
            if len(group) == 0:
                continue
            t = tile[group[0]]
            x, y = self.wcs[t].world_to_pixel_values(ra[obj[group]], dec[obj[group]])
            nx, ny = self.shape[t]
            margin[group] = np.minimum.reduce([x + 0.5, nx - 0.5 - x, y + 0.5, ny - 0.5 - y])
        return margin


def _unit_vectors(ra, dec) -> np.ndarray:
    ra, dec = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def _max_corner_distance(wcs, shape, centre_xyz) -> float:
    nx, ny = shape
    corners = np.array(
        wcs.pixel_to_world_values(
            [-0.5, nx - 0.5, nx - 0.5, -0.5], [-0.5, -0.5, ny - 0.5, ny - 0.5]
        )
    )
    cos = np.clip(_unit_vectors(*corners) @ centre_xyz, -1, 1)
    return float(np.degrees(np.arccos(cos)).max())
