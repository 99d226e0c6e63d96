"""The on-disk contracts of raycat.schema: names and patterns the writers make and the readers
find again. Literal expected values on purpose: a changed contract must fail here, not only
stay self-consistent."""

from __future__ import annotations

import fnmatch
from pathlib import PurePosixPath

import pytest

from raycat import schema as S
from raycat.errors import RaycatError
from raycat.surveys.indexer import tile_name

PIXELS = [(0, 0), (3, 767), (5, 9_999), (5, 10_000), (9, 123_456), (13, 805_306_367)]


def test_uris_that_escape_the_store_are_refused():
    assert S.relative_tile_uri("tiles/./a.fits") == "tiles/a.fits"
    assert S.relative_tile_uri("tiles/x/../a.fits") == "tiles/a.fits"
    for bad in [
        "../x",
        "../x.fits",
        "tiles/../../x.fits",
        "..",
        ".",
        "/etc/passwd",
        "s3://other/x",
        "s3://other/x.fits",
        "file:x",
        "~/x",
        "a\\b",
    ]:
        with pytest.raises(RaycatError, match="escapes"):
            S.relative_tile_uri(bad)
    for empty in ["", "   ", None]:
        with pytest.raises(RaycatError, match="non-empty"):
            S.relative_tile_uri(empty)


def test_partition_paths_are_hats_paths():
    assert S.partition_relpath(5, 12_345) == "dataset/Norder=5/Dir=10000/Npix=12345.parquet"
    assert S.partition_relpath(3, 767) == "dataset/Norder=3/Dir=0/Npix=767.parquet"
    assert S.done_marker_relpath(5, 12_345) == "_raycat_done/Norder=5_Npix=12345.done"


@pytest.mark.parametrize("order, pixel", PIXELS)
def test_partition_paths_round_trip_through_the_glob_and_the_regex(order, pixel):
    relpath = S.partition_relpath(order, pixel)
    for path in (relpath, f"/data/cat/{relpath}", f"s3://bucket/cat/{relpath}"):
        assert PurePosixPath(path).match(S.PARTITION_GLOB)
        assert S.partition_of(path) == (order, pixel)
    marker = S.done_marker_relpath(order, pixel)
    assert S.done_marker_of(f"bucket/cat/{marker}") == (order, pixel)
    assert S.partition_of(marker) is None and S.done_marker_of(relpath) is None


def test_temp_files_are_found_by_their_glob_and_never_taken_for_partitions():
    relpath = S.partition_relpath(4, 99)
    directory, name = relpath.rsplit("/", 1)
    temp = f"{directory}/.{name}.0123abcd{S.TEMP_SUFFIX}"
    assert PurePosixPath(temp).match(S.PARTITION_TEMP_GLOB)
    assert not PurePosixPath(temp).match(S.PARTITION_GLOB)
    assert S.partition_of(temp) is None
    assert not PurePosixPath(relpath).match(S.PARTITION_TEMP_GLOB)


def test_overwrite_removes_named_entries_only():
    """Overwrite deletes CATALOG_ENTRIES under the root: each must be one plain name, never
    the root itself, and everything that marks a catalog must be among them."""
    assert set(S.CATALOG_MARKS) <= set(S.CATALOG_ENTRIES)
    assert {"dataset", "_raycat_done", "hats.properties", "partition_info.csv"} <= set(
        S.CATALOG_ENTRIES
    )
    for entry in S.CATALOG_ENTRIES:
        assert entry and "/" not in entry and entry not in (".", "..")
    for relpath in (S.METADATA_RELPATH, S.COMMON_METADATA_RELPATH, S.PARTITION_GLOB):
        assert relpath.split("/")[0] == S.CATALOG_DATASET_DIR


@pytest.mark.parametrize("name", ["t.fits", "t.fits.fz", "t.fits.gz", "t.fits.bz2", "t.FITS.GZ"])
def test_the_default_index_pattern_lists_what_tile_names_strip(name):
    assert fnmatch.fnmatch(name.lower(), S.INDEX_FILE_PATTERN)
    assert tile_name(f"survey/dir/{name}") == "t"


def test_tile_names_keep_everything_but_fits_suffixes():
    assert tile_name("x/unwise-1866p257-w1-img-m.fits") == "unwise-1866p257-w1-img-m"
    assert tile_name("frame-r-003918-3-0213.fit") == "frame-r-003918-3-0213"
    assert tile_name("a.b.fts") == "a.b" and tile_name("a.parquet") == "a.parquet"
