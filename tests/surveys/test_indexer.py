"""`raycat index`: tile index rows from headers only, local, gzip, S3 and real unWISE."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from realdata import REALDATA

from raycat import schema
from raycat.cli import main
from raycat.sky.tiles import TileGeometry
from raycat.surveys.indexer import build_index, header_rows, list_files
from raycat.surveys.store import open_store
from raycat.surveys.tile_index import open_tile_index

UNWISE = str(REALDATA / "unwise")


def _read(url, options=None) -> pd.DataFrame:
    """Every row of the partitioned index at ``url`` (each tile and band once)."""
    bands = list(open_tile_index(str(url), options, []).meta.tiles_per_band)
    index = open_tile_index(str(url), options, bands)
    return index.rows_for(index.pixels())


def _tile(name: str, ra: float, rotation: float = 0.0, n: int = 400) -> TileGeometry:
    return TileGeometry("ps1", name, 0, ra, 5.0, rotation, n, 0.25)


def _fits_bytes(header: fits.Header, n: int) -> bytes:
    hdu = fits.PrimaryHDU(np.zeros((n, n), np.float32), header=header)
    import io

    buf = io.BytesIO()
    hdu.writeto(buf)
    return buf.getvalue()


def _write_store(put) -> dict[str, TileGeometry]:
    """Two plain tiles, one rotated gzip tile and one file without WCS, via ``put``."""
    tiles = {
        "a/t1.ps1_g.fits": _tile("t1", 150.0),
        "a/t2.ps1_r.fits": _tile("t2", 150.1),
        "b/t3.ps1_g.fits.gz": _tile("t3", 150.2, rotation=30.0),
    }
    for uri, tile in tiles.items():
        header = tile.wcs_header.copy()
        header["BAND"] = uri.split(".")[1]
        data = _fits_bytes(header, tile.naxis)
        put(uri, gzip.compress(data) if uri.endswith(".gz") else data)
    bare = fits.Header()
    bare["FILTER"] = "g"
    put("b/nowcs.fits", _fits_bytes(bare, 50))
    put("notes.txt", b"not a tile")
    return tiles


def _write_local(root):
    def put(uri, data):
        (root / uri).parent.mkdir(parents=True, exist_ok=True)
        (root / uri).write_bytes(data)

    return _write_store(put)


def _check(index: pd.DataFrame, tiles: dict[str, TileGeometry]) -> None:
    assert sorted(index[schema.TILE_URI]) == sorted(tiles)
    for _, row in index.iterrows():
        expected = tiles[row[schema.TILE_URI]].index_row(row[schema.TILE_BAND])
        for column in (
            schema.TILE_NAXIS1,
            schema.TILE_RA,
            schema.TILE_DEC,
            schema.TILE_RADIUS,
            schema.TILE_ROTATION,
        ):
            assert row[column] == pytest.approx(expected[column], abs=1e-9), column
        assert np.allclose(list(row[schema.TILE_CORNERS_RA]), expected[schema.TILE_CORNERS_RA])
        assert row[schema.TILE_SURVEY] == "ps1"
    assert dict(zip(index[schema.TILE_NAME], index[schema.TILE_BAND])) == {
        "t1.ps1_g": "ps1_g",
        "t2.ps1_r": "ps1_r",
        "t3.ps1_g": "ps1_g",
    }  # file name stems


def test_index_local_store_reads_only_headers(tmp_path):
    tiles = _write_local(tmp_path)
    store = open_store(str(tmp_path))
    assert list_files(store) == sorted([*tiles, "b/nowcs.fits"])
    rows = header_rows(store, ["a/t1.ps1_g.fits"])
    assert rows[0]["_bytes_read"] < os.path.getsize(tmp_path / "a/t1.ps1_g.fits") / 10
    with pytest.warns(UserWarning, match="1 of 4 files not indexed.*nowcs.fits"):
        summary = build_index(str(tmp_path), use_ray=False, progress=None)
    assert (summary.files, summary.rows, summary.no_wcs, summary.unreadable) == (4, 3, 1, 0)
    _check(_read(tmp_path / schema.TILE_INDEX_DIR), tiles)


def test_band_from_regex_and_cli_errors(tmp_path, capsys):
    _write_local(tmp_path)
    out = tmp_path / "other"
    build_index(
        str(tmp_path),
        str(out),
        pattern="t*.fits*",
        band_from=r"\.(?P<band>ps1_\w)\.",
        use_ray=False,
        progress=None,
    )  # the pattern leaves out the file without WCS
    assert sorted(_read(out)[schema.TILE_BAND]) == ["ps1_g", "ps1_g", "ps1_r"]
    assert main(["index", "--store", str(tmp_path / "missing")]) == 2
    assert "no files matching" in capsys.readouterr().err
    assert main(["index", "--store", str(tmp_path), "--storage-options", "{bad"]) == 2


def test_index_s3_store(s3_bucket):
    import s3fs

    url, options = s3_bucket
    fs = s3fs.S3FileSystem(**options)
    tiles = _write_store(lambda uri, data: fs.pipe(f"{url}/sky/{uri}", data))
    with pytest.warns(UserWarning):
        summary = build_index(f"{url}/sky", storage_options=options, use_ray=False, progress=None)
    sizes = sum(fs.size(f"{url}/sky/{u}") for u in tiles if not u.endswith(".gz"))
    assert summary.rows == 3 and summary.bytes_read < sizes  # gzip is read whole, raw not
    _check(_read(f"{url}/sky/{schema.TILE_INDEX_DIR}", options), tiles)


@pytest.mark.slow
def test_index_cli_on_ray_reads_only_headers(tmp_path, ray_local, capsys):
    import json

    tiles = _write_local(tmp_path)
    with pytest.warns(UserWarning, match="nowcs.fits"):
        assert main(["index", "--store", str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["files"], summary["rows"], summary["no_wcs"]) == (4, 3, 1)
    raw = sum((tmp_path / u).stat().st_size for u in tiles if not u.endswith(".gz"))
    gz = sum((tmp_path / u).stat().st_size for u in tiles if u.endswith(".gz"))
    assert summary["bytes_read"] < gz + raw / 10  # gzip is read whole, the raw tiles are not
    _check(_read(tmp_path / schema.TILE_INDEX_DIR), tiles)


@pytest.mark.slow
def test_index_on_ray_real_unwise(tmp_path, ray_local, capsys):
    import json

    if not os.path.isdir(UNWISE):
        pytest.skip("real unWISE samples absent")
    out = tmp_path / "unwise"
    assert (
        main(
            [
                "index",
                "--store",
                UNWISE,
                "--out",
                str(out),
                "--pattern",
                "*-img-m.fits",
                r"--band-from=-(?P<band>w\d)-img",
                "--survey",
                "unwise",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    index = _read(out)
    assert summary["rows"] == 8 and summary["no_wcs"] == 0
    assert sorted(set(index[schema.TILE_BAND])) == ["w1", "w2", "w3", "w4"]
    row = index[index[schema.TILE_NAME] == "unwise-1866p257-w1-img-m"].iloc[0]
    assert (row[schema.TILE_NAXIS1], row[schema.TILE_NAXIS2]) == (25, 25)
    assert row[schema.TILE_URI] == "1866p257/unwise-1866p257-w1-img-m.fits"


def _nine_tiles(root) -> None:
    for i in range(9):
        header = _tile(f"n{i}", 150.0 + 0.1 * i, n=100).wcs_header.copy()
        header["BAND"] = "ps1_g"
        (root / f"n{i}.ps1_g.fits").write_bytes(_fits_bytes(header, 100))


def _snapshot(root) -> dict:
    """Every file of the index under ``root`` with its bytes."""
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_unreadable_files_fail_and_keep_the_old_index(tmp_path, monkeypatch, capsys):
    """5 of 9 tiles readable: an error naming the unreadable ones, the good index kept
    byte for byte; --allow-partial writes the 5."""
    import raycat.surveys.indexer as indexer
    from raycat.errors import RaycatError

    _nine_tiles(tmp_path)
    build_index(str(tmp_path), use_ray=False, progress=None)
    index_dir = tmp_path / schema.TILE_INDEX_DIR
    good = _snapshot(index_dir)
    for i in range(4):
        (tmp_path / f"n{i}.ps1_g.fits").write_bytes(b"truncated")
    with pytest.raises(RaycatError, match=r"4 of 9 files unreadable \(n0.ps1_g.fits, n1"):
        build_index(str(tmp_path), use_ray=False, progress=None)
    assert _snapshot(index_dir) == good

    def local_rows(uris, store_url, storage_options, band_from, survey, progress):
        yield pd.DataFrame(indexer.header_rows(open_store(store_url), uris, band_from, survey))

    monkeypatch.setattr(indexer, "_rows_on_ray", local_rows)  # the CLI, without a Ray start
    assert main(["index", "--store", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "4 of 9 files unreadable" in err[0] and "--allow-partial" in err[0]
    assert _snapshot(index_dir) == good
    with pytest.warns(UserWarning, match="4 of 9 files not indexed"):
        assert main(["index", "--store", str(tmp_path), "--allow-partial"]) == 0
    assert len(_read(index_dir)) == 5


def test_the_index_is_replaced_atomically(tmp_path, monkeypatch):
    """A write that fails half way leaves the old index whole (its metadata is written last,
    and the new build is removed)."""
    _nine_tiles(tmp_path)
    build_index(str(tmp_path), use_ray=False, progress=None)
    index_dir = tmp_path / schema.TILE_INDEX_DIR
    good = _snapshot(index_dir)
    (tmp_path / "n0.ps1_g.fits").unlink()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(Exception, match="disk full"):
        build_index(str(tmp_path), use_ray=False, progress=None)
    assert _snapshot(index_dir) == good
    assert not [p for p in index_dir.iterdir() if p.name.startswith(".")]
    monkeypatch.undo()
    build_index(str(tmp_path), use_ray=False, progress=None)
    assert len(_read(index_dir)) == 8 and _snapshot(index_dir) != good


@pytest.mark.slow  # the S3 client retries for ~10 s before it gives up
def test_an_unreachable_store_is_one_line(monkeypatch):
    import socket

    from raycat.errors import RaycatError

    for name, value in [("AWS_ACCESS_KEY_ID", "x"), ("AWS_SECRET_ACCESS_KEY", "y")]:
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask a metadata server
    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = {"client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"}}
    with pytest.raises(RaycatError, match="cannot list the tile store s3://b/sky: the store is"):
        build_index("s3://b/sky", storage_options=options, use_ray=False, progress=None)
