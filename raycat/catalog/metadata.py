"""The HATS metadata of a finished catalog, written so that a crash never leaves it half-written.

``finalize`` checks that every partition file has its done marker, that no two partitions
overlap (partitions may be of mixed orders, a pixel never beside its ancestor) and that all
markers name one model and one config, then has the ``hats`` package's own writers prepare
``dataset/_common_metadata``, ``dataset/_metadata``, ``partition_info.csv`` and the properties
in a temp directory, and puts each file in place whole (temp + rename locally, one PUT on
object stores). ``hats.properties`` goes last: a catalog without it is still being written.
The properties carry the catalog's name (``infer.catalog_name``) and, as default columns,
everything but the PDF and the attributions, so lsdb loads the light columns unless asked.
"""

from __future__ import annotations

import uuid

from raycat import __version__
from raycat import schema as S
from raycat.catalog.atomic import remove_temp_files
from raycat.catalog.keys import label, order_pixel, overlapping_pair
from raycat.catalog.markers import DoneMarker, read_markers
from raycat.catalog.read import existing_schema, partition_keys
from raycat.catalog.versions import remove_version
from raycat.errors import RaycatError
from raycat.fsutil import put_atomic
from raycat.healpix import ORDER as HEALPIX_ORDER

# the order files are put in place: the properties (which readers open first) last
METADATA_FILES = (
    S.COMMON_METADATA_RELPATH,
    S.METADATA_RELPATH,
    S.PARTITION_INFO_FILE,
    *reversed(S.PROPERTIES_FILES),
)


def finalize(
    fs, root: str, url: str, storage_options: dict, catalog_name: str = "raycat"
) -> dict[str, int]:
    """Write the HATS metadata of the catalog at ``root`` (partitions of any orders);
    returns its rows and partitions."""
    remove_temp_files(fs, root)
    keys = partition_keys(fs, root)
    markers = _checked_markers(fs, root, url, keys)
    if not keys:
        raise RaycatError(f"catalog {url}: no rows written, nothing to finalize")
    temp = f"{root}/{S.METADATA_TEMP_PREFIX}{uuid.uuid4().hex[:12]}"
    properties = {"catalog_name": catalog_name, "default_columns": _default_columns(fs, root)}
    total_rows = _prepare(url, temp, keys, markers, storage_options, properties)
    expected = sum(m.rows for m in markers.values())
    if total_rows != expected:
        raise RaycatError(
            f"catalog {url}: partitions hold {total_rows} rows, their markers {expected}: "
            "rerun with mode resume"
        )
    for relpath in METADATA_FILES:
        put_atomic(fs, f"{root}/{relpath}", fs.cat_file(f"{temp}/{relpath}"))
    remove_version(fs, temp)
    return {"rows": int(total_rows), "partitions": len(keys)}


def _checked_markers(fs, root: str, url: str, files: set[int]) -> dict[int, DoneMarker]:
    """The markers by key; an error for a file without one, overlapping partitions (a pixel
    and its ancestor), or markers of two models or configs (the catalog is not finished: a
    resume is). ``files``: the keys of the partition files."""
    found = read_markers(fs, root)
    unmarked = [label(k) for k in sorted(files) if found.get(k) is None]
    if unmarked:
        raise RaycatError(
            f"catalog {url}: partition(s) {unmarked[:5]} not marked done "
            "(interrupted write); rerun with mode resume before finalizing"
        )
    overlap = overlapping_pair({*files, *found})
    if overlap is not None:
        outer, inner = map(label, overlap)
        raise RaycatError(
            f"catalog {url}: partitions overlap (pixel {inner} lies inside partition {outer}); "
            "rerun with mode resume to remove the one the plan does not have"
        )
    markers = {k: m for k, m in found.items() if m is not None}
    kinds = {(m.model_id, m.config_hash) for m in markers.values()}
    if len(kinds) > 1:
        raise RaycatError(
            f"catalog {url}: partitions of {len(kinds)} model/config versions "
            f"{sorted(kinds)[:3]}: rerun with mode resume or overwrite"
        )
    return markers


def _default_columns(fs, root: str) -> list[str]:
    """Every column but the PDF and the attributions: what ``lsdb.open_catalog`` reads
    unless asked for more, so a crossmatch or a cone search does not load the heavy ones."""
    schema = existing_schema(fs, root)
    return [n for n in (schema.names if schema else []) if not S.is_heavy_column(n)]


def _prepare(url, temp, keys, markers, storage_options, properties: dict) -> int:
    """Have hats write every metadata file under ``temp``; returns the rows it counted.

    The properties follow hats' own writers for a catalog of mixed orders (``lsdb``'s
    ``to_hats``): ``hats_order`` is the deepest partition order and ``hats_max_rows`` the
    rows of the largest partition; ``properties`` adds the name and default columns."""
    from hats.catalog import PartitionInfo, TableProperties
    from hats.catalog.dataset.hats_properties import HatsProperties
    from hats.io import write_parquet_metadata
    from hats.pixel_math import HealpixPixel
    from upath import UPath

    base, out = UPath(url, **storage_options), UPath(_join(url, temp), **storage_options)
    total_rows = write_parquet_metadata(base, output_path=out)
    partition_info = PartitionInfo([HealpixPixel(*order_pixel(k)) for k in sorted(keys)])
    partition_info.write_to_file(out / S.PARTITION_INFO_FILE)
    provenance = HatsProperties.new_provenance_dict(base, builder=f"raycat v{__version__}")
    TableProperties(
        catalog_type="object",
        total_rows=int(total_rows),
        ra_column=S.RA,
        dec_column=S.DEC,
        healpix_column=S.HEALPIX_29,
        healpix_order=HEALPIX_ORDER,
        hats_order=partition_info.get_highest_order(),
        hats_max_rows=max(m.rows for m in markers.values()),
        moc_sky_fraction=float(partition_info.calculate_fractional_coverage()),
        **provenance,
        **properties,
    ).to_properties_file(out)
    return int(total_rows)


def _join(url: str, temp: str) -> str:
    """The URL of the temp directory (``temp`` is the filesystem path under the root)."""
    return f"{url.rstrip('/')}/{temp.rsplit('/', 1)[-1]}"
