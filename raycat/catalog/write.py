"""The output catalog: HATS-layout Parquet partitioned by HEALPix, written one partition at a time.

A work unit of the pipeline is one HEALPix pixel at order ``k``; its objects are one
catalog partition, ``<root>/dataset/Norder=k/Dir=d/Npix=n.parquet``. Each partition is
written atomically and then marked done (``_raycat_done/``), so a rerun after a crash
skips finished pixels and rewrites unfinished ones whole: every object appears exactly
once. ``finalize`` adds the HATS metadata (``partition_info.csv``, ``dataset/_metadata``,
``dataset/_common_metadata``, ``hats.properties``) with the ``hats`` package's own writers,
so ``hats.read_hats`` and ``lsdb.open_catalog`` read the result.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from raycat import __version__, fsutil
from raycat import schema as S
from raycat.catalog.info import CatalogInfo
from raycat.catalog.read import existing_schema, partition_pixels
from raycat.errors import RaycatError
from raycat.healpix import ORDER as HEALPIX_ORDER
from raycat.healpix import healpix29, pixel_at_order
from raycat.photoz.pdf import point_estimates

if TYPE_CHECKING:
    pass

WriteMode = Literal["resume", "overwrite", "new"]


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
        S.ID: pa.array(np.asarray(ids, np.int64)),
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


# --- writer -----------------------------------------------------------------------------------


class CatalogWriter:
    """Writes a catalog partition by partition; safe to rerun after a crash.

    Parameters
    ----------
    root : str
        Catalog root, a path or fsspec URL.
    schema : pyarrow.Schema
        From :func:`catalog_schema`; every partition is cast to it.
    order : int
        HEALPix order of the partitions (the work units' order).
    mode : {"resume", "overwrite", "new", None}
        resume: keep finished partitions (refused if the catalog is another model's);
        overwrite: delete the catalog first; new: refuse an existing catalog. ``None``
        attaches to a catalog the driver already prepared: what parallel writers do, so
        that one writer never deletes another's files.
    storage_options : dict, optional
        fsspec options (endpoint...). Credentials come from the usual chains.
    """

    def __init__(
        self,
        root: str,
        schema: pa.Schema,
        order: int,
        *,
        mode: WriteMode | None = "resume",
        storage_options: dict | None = None,
    ):
        self.url, self.schema, self.order = root, schema, order
        self.storage_options = dict(storage_options or {})
        self.fs, self.root = fsutil.filesystem(root, storage_options)
        self.root = self.root.rstrip("/")
        self.model_id = CatalogInfo.from_schema(schema).model_id
        self._local = isinstance(self.fs, LocalFileSystem)
        if mode is not None:
            self._prepare(mode)

    def _path(self, relpath: str) -> str:
        return f"{self.root}/{relpath}"

    # -- modes --
    def _exists(self) -> bool:
        return any(self.fs.exists(self._path(e)) for e in S.CATALOG_MARKS)

    def _prepare(self, mode: WriteMode) -> None:
        self.fs.invalidate_cache()
        if mode == "overwrite":
            for entry in S.CATALOG_ENTRIES:
                if self.fs.exists(self._path(entry)):
                    self.fs.rm(self._path(entry), recursive=True)
        elif mode == "new" and self._exists():
            raise RaycatError(
                f"catalog {self.url} already exists; write to a new path, or "
                "use mode resume or overwrite"
            )
        elif mode == "resume":
            self._check_compatible()
            self._remove_temp_files()

    def _check_compatible(self) -> None:
        existing = existing_schema(self.fs, self.root)
        if existing is None:
            return
        theirs = CatalogInfo.from_schema(existing).model_id
        if theirs != self.model_id:
            raise RaycatError(
                f"catalog {self.url} holds predictions of model {theirs}, not "
                f"{self.model_id}: write a new catalog version (another path) "
                "or use mode overwrite"
            )
        if not existing.remove_metadata().equals(self.schema.remove_metadata()):
            raise RaycatError(
                f"catalog {self.url} has other columns than this run (pdf dtype, "
                "attributions or z_spec changed): use a new path or overwrite"
            )

    def _remove_temp_files(self) -> None:
        for path in self.fs.glob(self._path(S.PARTITION_TEMP_GLOB)):
            self.fs.rm(path)

    # -- partitions --
    def is_done(self, pixel: int) -> bool:
        """True when the partition of ``pixel`` is written and marked done."""
        marker = self._path(S.done_marker_relpath(self.order, pixel))
        self.fs.invalidate_cache(marker.rsplit("/", 1)[0])  # other writers add markers
        return self.fs.exists(marker)

    def done_pixels(self) -> set[int]:
        """Finished pixels at this order, from one listing (not one request per pixel)."""
        directory = self._path(S.DONE_DIR)
        self.fs.invalidate_cache(directory)
        if not self.fs.exists(directory):
            return set()
        markers = (S.done_marker_of(p) for p in self.fs.ls(directory, detail=False))
        return {pixel for order, pixel in filter(None, markers) if order == self.order}

    def flag_counts(self, pixels: set[int]) -> dict[str, int]:
        """Objects per flag over the given finished pixels, from their done markers (one
        concurrent fetch), so a job summary counts exactly what the catalog holds."""
        paths = [self._path(S.done_marker_relpath(self.order, p)) for p in sorted(pixels)]
        totals = {str(f.name): 0 for f in S.Flag}
        for blob in self.fs.cat(paths).values() if paths else ():
            for name, n in json.loads(blob).get("flags", {}).items():
                totals[name] = totals.get(name, 0) + int(n)
        return {name: n for name, n in totals.items() if n}

    def write_partition(self, pixel: int, table: pa.Table) -> bool:
        """Write the rows of one pixel, sorted by ``_healpix_29``; False if already done.

        The file appears whole or not at all (local: temp file + rename; object stores:
        one PUT), and the done marker goes last, so a crash at any point leaves the pixel
        either done or to be redone.
        """
        if self.is_done(pixel):
            return False
        table = self._conform(pixel, table)
        if table.num_rows:
            path = self._path(S.partition_relpath(self.order, pixel))
            self._put_atomic(path, _to_parquet(table))
        marker = {
            "rows": table.num_rows,
            "model_id": self.model_id,
            "flags": _flag_counts(np.asarray(table[S.FLAGS])),
        }
        self.fs.makedirs(self._path(S.DONE_DIR), exist_ok=True)
        self.fs.pipe_file(
            self._path(S.done_marker_relpath(self.order, pixel)), json.dumps(marker).encode()
        )
        return True

    def _conform(self, pixel: int, table: pa.Table) -> pa.Table:
        try:
            table = table.select(self.schema.names).cast(self.schema)
        except (KeyError, ValueError, pa.ArrowInvalid) as err:
            raise RaycatError(
                f"catalog: partition {pixel} does not fit the schema ({err})"
            ) from None
        cells = pixel_at_order(np.asarray(table[S.HEALPIX_29]), self.order)
        if np.any(cells != pixel):
            raise RaycatError(
                f"catalog: {int(np.sum(cells != pixel))} row(s) given for pixel "
                f"{pixel} (order {self.order}) lie in other pixels"
            )
        return table.sort_by(S.HEALPIX_29)

    def _put_atomic(self, path: str, blob: bytes) -> None:
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        if not self._local:
            self.fs.pipe_file(path, blob)  # an object appears only once its upload completes
            return
        directory, name = path.rsplit("/", 1)
        temp = f"{directory}/.{name}.{uuid.uuid4().hex}{S.TEMP_SUFFIX}"  # '.': readers skip it
        with open(temp, "wb") as out:
            out.write(blob)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)  # atomic on POSIX, replaces a partial earlier attempt

    # -- metadata --
    def finalize(self, catalog_name: str = "raycat") -> dict[str, int]:
        """Write the HATS metadata for every finished partition; returns rows and partitions.

        Refuses while a partition file exists without its done marker (an interrupted
        write): rerun with mode resume first.
        """
        from hats.catalog import PartitionInfo
        from hats.io import write_parquet_metadata
        from hats.pixel_math import HealpixPixel

        self._remove_temp_files()
        # Pixels with no objects are done but have no file; a file without a marker is an
        # interrupted write.
        pixels = set(partition_pixels(self.fs, self.root))
        unmarked = sorted(pixels - self.done_pixels())
        if unmarked:
            raise RaycatError(
                f"catalog {self.url}: partition(s) {unmarked[:5]} not marked done "
                "(interrupted write); rerun with mode resume before finalizing"
            )
        if not pixels:
            raise RaycatError(f"catalog {self.url}: no rows written, nothing to finalize")
        base = self._upath()
        total_rows = write_parquet_metadata(base)
        partition_info = PartitionInfo([HealpixPixel(self.order, p) for p in pixels])
        partition_info.write_to_file(base / S.PARTITION_INFO_FILE)
        self._write_properties(
            base,
            catalog_name,
            total_rows,
            self._max_partition_rows(),
            partition_info.calculate_fractional_coverage(),
        )
        return {"rows": int(total_rows), "partitions": len(pixels)}

    def _max_partition_rows(self) -> int:
        """Largest partition, from the row groups listed in dataset/_metadata."""
        path = self._path(S.METADATA_RELPATH)
        meta = pq.read_metadata(path, filesystem=self.fs)
        rows: dict[str, int] = {}
        for index in range(meta.num_row_groups):
            group = meta.row_group(index)
            path = group.column(0).file_path
            rows[path] = rows.get(path, 0) + group.num_rows
        return max(rows.values())

    def _upath(self):
        from upath import UPath

        return UPath(self.url, **self.storage_options)

    def _write_properties(
        self, base, catalog_name: str, total_rows: int, max_rows: int, sky_fraction: float
    ) -> None:
        from hats.catalog import TableProperties
        from hats.catalog.dataset.hats_properties import HatsProperties

        provenance = HatsProperties.new_provenance_dict(base, builder=f"raycat v{__version__}")
        TableProperties(
            catalog_name=catalog_name,
            catalog_type="object",
            total_rows=int(total_rows),
            ra_column=S.RA,
            dec_column=S.DEC,
            healpix_column=S.HEALPIX_29,
            healpix_order=HEALPIX_ORDER,
            hats_order=self.order,
            hats_max_rows=int(max_rows),
            moc_sky_fraction=float(sky_fraction),
            **provenance,
        ).to_properties_file(base)


def _to_parquet(table: pa.Table) -> bytes:
    """Serialise with HATS' write settings (byte-stream-split floats, delta-coded index)."""
    from hats.io.file_io.file_io import get_parquet_write_table_kwargs

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **get_parquet_write_table_kwargs(table.schema))
    return sink.getvalue().to_pybytes()


def _flag_counts(flags: np.ndarray) -> dict[str, int]:
    """Objects carrying each flag (non-zero counts only)."""
    counts = {str(f.name): int(np.count_nonzero(flags & int(f))) for f in S.Flag}
    return {name: n for name, n in counts.items() if n}
