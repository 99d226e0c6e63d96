"""The HATS margin catalog of a finished catalog (``infer.margin_arcsec``): for each partition,
the rows of its neighbours near its border, so an lsdb crossmatch finds pairs across edges.

Layout, under the catalog root: ``margin/`` is a HATS catalog of type margin whose partition
``Norder=k/Dir=d/Npix=n`` holds the margin of the catalog's partition ``k/n``, and
``collection.properties`` names the root as the main catalog and ``margin`` as its default
margin: ``lsdb.open_catalog("<root>/collection.properties")`` opens both, while
``lsdb.open_catalog("<root>")`` still opens the catalog alone.

As hats-import does, a partition's margin is every row of the other partitions that falls in
the ring of HEALPix pixels bordering it at the margin order (the deepest order whose pixels
are at least ``margin_arcsec`` across): every row within the threshold, and a few beyond.

A resume may rewrite any partition, and a margin is made of its neighbours' rows, so a job
removes the margin before it changes any partition (``CatalogJob.begin``) and rebuilds it
whole after finalize: the collection file is removed first (a reader never meets a stale or
half-built margin through it), then the old margin's files (only names a raycat catalog
consists of), then every margin partition is written whole (in Ray tasks when Ray is up) and
the collection file goes last. A crash leaves no collection file and the next finish starts
again from nothing, so a row is never in a margin twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raycat import fsutil
from raycat import schema as S
from raycat.catalog.atomic import remove_files
from raycat.catalog.keys import order_pixel, partition_relpath
from raycat.catalog.read import existing_schema, partition_keys
from raycat.catalog.versions import remove_version
from raycat.catalog.write import _to_parquet
from raycat.errors import RaycatError
from raycat.fsutil import put_atomic
from raycat.healpix import ORDER as HEALPIX_ORDER
from raycat.healpix import Partitioning, unit_orders_pixels

KEYS_PER_TASK = 64  # margin partitions per Ray task: one task per partition would be too small


def sync_margin(
    fs, root: str, url: str, storage_options: dict, catalog_name: str, arcsec: float | None
) -> dict[str, int] | None:
    """Bring the margin of the finished catalog at ``root`` in line with ``arcsec``: remove
    the old one, and write a new one unless ``arcsec`` is None; returns its rows and
    partitions (None without a margin)."""
    remove_margin(fs, root)
    if arcsec is None:
        return None
    keys = sorted(partition_keys(fs, root))
    order = margin_order(arcsec, keys)
    written = dict(_margin_partitions(url, storage_options, keys, order))
    written = {k: n for k, n in written.items() if n}
    _write_metadata(fs, root, url, storage_options, catalog_name, arcsec, written)
    return {"rows": sum(written.values()), "partitions": len(written)}


def remove_margin(fs, root: str) -> None:
    """Remove the collection file and the margin raycat wrote (files of other names stay)."""
    collection = f"{root}/{S.HATS_COLLECTION_FILE}"
    fs.invalidate_cache()
    if fs.exists(collection):
        remove_files(fs, [collection])
    remove_version(fs, f"{root}/{S.MARGIN_DIR}")


def margin_order(arcsec: float, keys: Sequence[int]) -> int:
    """The HEALPix order of the margin's ring pixels: the deepest whose pixels are at least
    ``arcsec`` across, deeper than every partition (else a ring pixel would lie in the
    partition itself and rows beyond the neighbours would be missed)."""
    import hats.pixel_math.healpix_shim as hp

    order = int(hp.margin2order(margin_thr_arcmin=np.asarray(arcsec / 60.0)))
    deepest = int(unit_orders_pixels(np.asarray(keys, np.int64))[0].max())
    if order <= deepest:
        widest = float(hp.order2mindist(deepest + 1)) * 60.0
        raise RaycatError(
            f"infer.margin_arcsec {arcsec:g} is wider than the catalog's smallest partitions "
            f"(order {deepest}) allow: use at most {widest:.3g} arcsec"
        )
    return order


def _margin_partitions(url, storage_options, keys: list[int], order: int) -> list:
    """(key, margin rows) of every partition, written in Ray tasks of KEYS_PER_TASK
    partitions when Ray is up (in the driver otherwise: small catalogs, tests)."""
    import ray

    chunks = [keys[i : i + KEYS_PER_TASK] for i in range(0, len(keys), KEYS_PER_TASK)]
    partitioning = Partitioning(keys)
    if not ray.is_initialized():
        args = (url, storage_options)
        return [r for c in chunks for r in write_margins(*args, c, partitioning, order)]
    task = ray.remote(num_cpus=0.25)(write_margins)
    shared = ray.put(partitioning)  # O(partitions), once: every task finds neighbours in it
    refs = [task.remote(url, storage_options, chunk, shared, order) for chunk in chunks]
    return [r for done in ray.get(refs) for r in done]


def write_margins(
    url: str, storage_options: dict, keys: list[int], partitioning: Partitioning, order: int
) -> list[tuple[int, int]]:
    """Write the margin partitions of ``keys`` (each whole, one PUT); returns (key, rows)."""
    fs, root = fsutil.filesystem(url, storage_options)
    root = root.rstrip("/")
    written = []
    for key in keys:
        table = margin_rows(fs, root, key, partitioning, order)
        if table is not None:
            path = f"{root}/{S.MARGIN_DIR}/{partition_relpath(key)}"
            put_atomic(fs, path, _to_parquet(table))
        written.append((key, 0 if table is None else table.num_rows))
    return written


def margin_rows(fs, root: str, key: int, partitioning: Partitioning, order: int) -> pa.Table | None:
    """The rows of other partitions in the ring of order-``order`` pixels around partition
    ``key``, sorted by ``_healpix_29``; None if there are none. A neighbour is read whole
    only when its ``_healpix_29`` column shows rows in the ring."""
    from hats.pixel_math import get_margin

    partition_order, pixel = order_pixel(key)
    ring = np.asarray(get_margin(partition_order, pixel, order - partition_order), np.int64)
    shift = 2 * (HEALPIX_ORDER - order)
    owners = partitioning.unit_of(ring << shift)
    parts = []
    for neighbour in np.unique(owners[owners >= 0]):
        path = f"{root}/{partition_relpath(int(neighbour))}"
        cells = pq.read_table(path, columns=[S.HEALPIX_29], filesystem=fs)[S.HEALPIX_29]
        rows = np.flatnonzero(np.isin(cells.to_numpy() >> shift, ring[owners == neighbour]))
        if len(rows):
            parts.append(pq.read_table(path, filesystem=fs).take(rows))
    return pa.concat_tables(parts).sort_by(S.HEALPIX_29) if parts else None


def _write_metadata(fs, root, url, storage_options, catalog_name, arcsec, written) -> None:
    """The margin's HATS metadata (hats' own writers), then the collection file, last."""
    from hats.catalog import PartitionInfo, TableProperties
    from hats.io import write_parquet_metadata
    from hats.pixel_math import HealpixPixel
    from upath import UPath

    base = UPath(fsutil.join(url, S.MARGIN_DIR), **storage_options)
    schema = existing_schema(fs, root)
    assert schema is not None  # finalize found partitions
    if written:
        write_parquet_metadata(base)
    else:  # no neighbours near any border: an empty margin, as lsdb writes one
        put_atomic(fs, f"{root}/{S.MARGIN_DIR}/{S.COMMON_METADATA_RELPATH}", _schema_bytes(schema))
    pixels = PartitionInfo([HealpixPixel(*order_pixel(k)) for k in sorted(written)])
    pixels.write_to_file(base / S.PARTITION_INFO_FILE)
    fields: dict = dict(  # hats' aliases are its field names: mypy sees neither
        catalog_name=S.margin_catalog_name(catalog_name, arcsec),
        catalog_type="margin",
        total_rows=sum(written.values()),
        ra_column=S.RA,
        dec_column=S.DEC,
        healpix_column=S.HEALPIX_29,
        healpix_order=HEALPIX_ORDER,
        hats_order=max((order_pixel(k)[0] for k in written), default=0),
        primary_catalog=catalog_name,
        margin_threshold=float(arcsec),
        default_columns=[n for n in schema.names if not S.is_heavy_column(n)],
    )
    TableProperties(**fields).to_properties_file(base)
    _write_collection(fs, root, url, catalog_name)


def _write_collection(fs, root, url, catalog_name) -> None:
    """``collection.properties`` at the root, put in place whole: the root is the main
    catalog (``.`` on a local disk, its own URL on an object store, where ``.`` would be a
    key of its own) and ``margin`` its default margin."""
    import tempfile

    from hats.catalog.dataset.collection_properties import CollectionProperties

    primary = S.COLLECTION_SELF if fsutil.is_local(fs) else url.rstrip("/")
    fields: dict = dict(
        name=catalog_name,
        hats_primary_table_url=primary,
        all_margins=[S.MARGIN_DIR],
        default_margin=S.MARGIN_DIR,
    )
    properties = CollectionProperties(**fields)
    with tempfile.TemporaryDirectory() as local:  # hats writes files; a store takes bytes
        properties.to_properties_file(local)
        blob = Path(local, S.HATS_COLLECTION_FILE).read_bytes()
    put_atomic(fs, f"{root}/{S.HATS_COLLECTION_FILE}", blob)


def _schema_bytes(schema: pa.Schema) -> bytes:
    """A Parquet file of no rows with ``schema``: a ``_common_metadata``."""
    sink = pa.BufferOutputStream()
    pq.write_metadata(schema, sink)
    return sink.getvalue().to_pybytes()
