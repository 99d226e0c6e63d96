"""The output catalog: HATS-layout Parquet partitioned by HEALPix, written one partition at a time.

A work unit of the pipeline is one HEALPix pixel at any order ``k`` (a catalog mixes orders:
dense pixels are split into their children); its objects are one catalog partition,
``<root>/dataset/Norder=k/Dir=d/Npix=n.parquet``. Each partition is
written atomically and then marked done (``_raycat_done/``, ``raycat.catalog.markers``), so a
rerun after a crash rewrites unfinished ones whole: every object appears exactly once.
``finalize`` adds the HATS metadata (``raycat.catalog.metadata``), so ``hats.read_hats`` and
``lsdb.open_catalog`` read the result. Which partitions a job writes, the lease and the
versions an overwrite switches are ``raycat.catalog.job``'s business.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raycat import fsutil
from raycat import schema as S
from raycat.catalog.atomic import remove_temp_files
from raycat.catalog.info import CatalogInfo
from raycat.catalog.keys import key_of_marker, label, marker_relpath, order_pixel, partition_relpath
from raycat.catalog.markers import DoneMarker, read_markers, write_marker
from raycat.catalog.metadata import finalize
from raycat.catalog.parquet import parquet_settings
from raycat.catalog.read import existing_schema
from raycat.errors import RaycatError
from raycat.fsutil import put_atomic
from raycat.healpix import healpix29, pixel_at_order
from raycat.photoz.pdf import point_estimates

WriteMode = Literal["resume", "new"]


# --- rows -------------------------------------------------------------------------------------


def _float_column(values: np.ndarray, type_: pa.DataType) -> pa.Array:
    values = np.asarray(values, dtype=np.float64)
    return pa.array(values, mask=~np.isfinite(values)).cast(type_)


def _pdf_column(pdf: np.ndarray, missing: np.ndarray, type_: pa.FixedSizeListType) -> pa.Array:
    values = np.where(missing[:, None], 0.0, pdf).astype(type_.value_type.to_pandas_dtype())
    return pa.FixedSizeListArray.from_arrays(
        pa.array(values.ravel()), type_.list_size, mask=pa.array(missing)
    )


def partition_table(
    schema: pa.Schema,
    *,
    ids: np.ndarray,
    ra: np.ndarray,
    dec: np.ndarray,
    flags: np.ndarray,
    pdf: np.ndarray,
    extra: Mapping[str, np.ndarray] | None = None,
) -> pa.Table:
    """Catalog rows from predictions: point estimates and ``_healpix_29`` computed here.

    ``pdf`` is ``[n, n_bins]``; a row with any non-finite value means "no prediction":
    its PDF and point estimates are null and ``Flag.NO_PREDICTION`` is set. ``extra``
    holds the optional columns of ``schema`` (``z_spec``, ``attr_*``, ...); NaN is null.
    """
    info = CatalogInfo.from_schema(schema)
    pdf = np.asarray(pdf, dtype=np.float64).reshape(len(ids), len(info.bin_edges) - 1)
    missing = ~np.all(np.isfinite(pdf), axis=1) | (np.sum(pdf, axis=1) <= 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        pdf = pdf / np.sum(pdf, axis=1, keepdims=True)  # the stored PDF sums to 1
    estimates = point_estimates(np.where(missing[:, None], np.nan, pdf), info.bin_edges)
    flags = np.asarray(flags, np.int32) | np.where(missing, int(S.Flag.NO_PREDICTION), 0)
    columns = {
        S.ID: pa.array(np.asarray(ids), type=schema.field(S.ID).type),  # int64 or text
        S.RA: pa.array(np.asarray(ra, float)),
        S.DEC: pa.array(np.asarray(dec, float)),
        S.HEALPIX_29: pa.array(healpix29(ra, dec)),
        S.PDF: _pdf_column(pdf, missing, schema.field(S.PDF).type),
        S.FLAGS: pa.array(flags.astype(np.int32)),
    }
    for name, values in {**estimates, **(extra or {})}.items():
        if name not in schema.names:
            raise RaycatError(f"catalog: column {name!r} is not in the catalog schema")
        columns[name] = _float_column(values, schema.field(name).type)
    absent = [name for name in schema.names if name not in columns]
    if absent:
        raise RaycatError(f"catalog: no values for column(s) {', '.join(absent)}")
    return pa.table([columns[name] for name in schema.names], schema=schema)


# --- writer ---------------------------------------------------------------------------------


class CatalogWriter:
    """Writes the partitions of a catalog, each whole and then marked done.

    A partition is a work unit: one HEALPix pixel at any order, named by its NUNIQ key
    (``raycat.healpix.unit_key``), so one catalog holds partitions of mixed orders.

    Parameters
    ----------
    root : str
        Catalog root, a path or fsspec URL.
    schema : pyarrow.Schema
        From :func:`catalog_schema`; every partition is cast to it, and its model id and
        config hash go into every done marker.
    mode : {"resume", "new", None}
        resume: refuse a catalog of another model or other columns, remove crashed writes'
        temp files; new: refuse an existing catalog. ``None`` attaches to a catalog the
        driver already prepared (what the sink does): it never removes anything.
    storage_options : dict, optional
        fsspec options (endpoint...). Credentials come from the usual chains.
    """

    def __init__(
        self,
        root: str,
        schema: pa.Schema,
        *,
        mode: WriteMode | None = "resume",
        storage_options: dict | None = None,
        parquet_kwargs: dict | None = None,
    ):
        self.url, self.schema = root, schema
        self.parquet_kwargs = parquet_kwargs  # None: worked out (by hats) at the first write
        self.storage_options = dict(storage_options or {})
        self.fs, self.root = fsutil.filesystem(root, storage_options)
        self.root = self.root.rstrip("/")
        info = CatalogInfo.from_schema(schema)
        self.model_id, self.config_hash = info.model_id, info.config_hash
        if mode == "new" and any(self.fs.exists(self._path(e)) for e in S.CATALOG_MARKS):
            raise RaycatError(
                f"catalog {self.url} already exists; write to a new path, or "
                "use mode resume or overwrite"
            )
        if mode == "resume":
            check_compatible(self.fs, self.root, self.url, schema)
            remove_temp_files(self.fs, self.root)

    def _path(self, relpath: str) -> str:
        return f"{self.root}/{relpath}"

    # -- partitions --
    def is_done(self, key: int) -> bool:
        """True when the partition ``key`` is written and marked done."""
        marker = self._path(marker_relpath(key))
        self.fs.invalidate_cache(marker.rsplit("/", 1)[0])  # other writers add markers
        return self.fs.exists(marker)

    def done_units(self) -> set[int]:
        """Keys of the finished partitions, every order, from one listing (not one request
        per partition)."""
        directory = self._path(S.DONE_DIR)
        self.fs.invalidate_cache(directory)
        if not self.fs.exists(directory):
            return set()
        return set(filter(None, map(key_of_marker, self.fs.ls(directory, detail=False))))

    def markers(self) -> dict[int, DoneMarker]:
        """The readable done markers by key (one listing, one fetch)."""
        return {k: m for k, m in read_markers(self.fs, self.root).items() if m is not None}

    def flag_counts(self, keys: set[int]) -> dict[str, int]:
        """Objects per flag over the given finished partitions, from their done markers, so a
        job summary counts exactly what the catalog holds."""
        totals = {str(f.name): 0 for f in S.Flag}
        for key, marker in self.markers().items():
            if key in keys:
                for name, n in marker.flags.items():
                    totals[name] = totals.get(name, 0) + n
        return {name: n for name, n in totals.items() if n}

    def write_partition(
        self, key: int, table: pa.Table, error_tiles: Iterable[str] = ()
    ) -> DoneMarker | None:
        """Write the rows of the partition ``key``, sorted by ``_healpix_29``; None if it is
        already done.

        The file appears whole or not at all (local: temp file + rename; object stores:
        one PUT), and the done marker goes last, so a crash at any point leaves the
        partition either done or to be redone. ``error_tiles`` are URIs of tiles that could
        not be read for these rows (kept in the marker). Returns the marker written.
        """
        if self.is_done(key):
            return None
        table = self._conform(key, table)
        if table.num_rows:
            if self.parquet_kwargs is None:
                self.parquet_kwargs = parquet_settings(self.schema)
            put_atomic(
                self.fs, self._path(partition_relpath(key)), _to_parquet(table, self.parquet_kwargs)
            )
        marker = DoneMarker.of_table(
            key,
            table,
            model_id=self.model_id,
            config_hash=self.config_hash,
            error_tiles=error_tiles,
        )
        write_marker(self.fs, self.root, marker)
        return marker

    def _conform(self, key: int, table: pa.Table) -> pa.Table:
        order, pixel = order_pixel(key)
        try:
            table = table.select(self.schema.names).cast(self.schema)
        except (KeyError, ValueError, pa.ArrowInvalid) as err:
            raise RaycatError(
                f"catalog: partition {label(key)} does not fit the schema ({err})"
            ) from None
        cells = pixel_at_order(np.asarray(table[S.HEALPIX_29]), order)
        if np.any(cells != pixel):
            raise RaycatError(
                f"catalog: {int(np.sum(cells != pixel))} row(s) given for pixel "
                f"{pixel} (order {order}) lie in other pixels"
            )
        return table.sort_by(S.HEALPIX_29)

    def finalize(self, catalog_name: str = "raycat") -> dict[str, int]:
        """Write the HATS metadata (``raycat.catalog.metadata.finalize``); refuses while a
        partition file lacks its done marker (an interrupted write: rerun with resume) or
        partitions overlap."""
        return finalize(self.fs, self.root, self.url, self.storage_options, catalog_name)


def check_compatible(fs, root: str, url: str, schema: pa.Schema) -> None:
    """Refuse a catalog of another model, or with other columns, than ``schema``'s."""
    existing = existing_schema(fs, root)
    if existing is None:
        return
    theirs = CatalogInfo.from_schema(existing).model_id
    ours = CatalogInfo.from_schema(schema).model_id
    if theirs != ours:
        raise RaycatError(
            f"catalog {url} holds predictions of model {theirs}, not {ours}: write a new "
            "catalog version (another path) or use mode overwrite"
        )
    if not existing.remove_metadata().equals(schema.remove_metadata()):
        raise RaycatError(
            f"catalog {url} has other columns than this run (pdf dtype, attributions, "
            "z_spec or the id type changed): use a new path or mode overwrite"
        )


def _to_parquet(table: pa.Table, settings: dict | None = None) -> bytes:
    """Serialise with HATS' write settings (``parquet_settings``; for ``table``'s schema
    when not given)."""
    settings = parquet_settings(table.schema) if settings is None else settings
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **settings)
    return sink.getvalue().to_pybytes()
