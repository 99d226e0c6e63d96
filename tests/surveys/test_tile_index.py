"""The partitioned tile index: layout, atomic replace and append, errors, `raycat tiles`."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from raycat import schema
from raycat.cli import main
from raycat.config import DataConfig
from raycat.errors import RaycatError
from raycat.surveys.tile_build import build_tiles_index, parse_region
from raycat.surveys.tile_index import INDEX_ORDER, open_tile_index, resolve_tile_index
from raycat.surveys.tile_index_write import write_tile_index
from raycat.surveys.tiling import PS1Tiling, UnwiseTiling, index_rows

BOX = (186.0, 188.0, 25.0, 27.0)


def _unwise(bands=("unwise_w1", "unwise_w2"), box=BOX) -> pd.DataFrame:
    return pd.DataFrame(
        list(index_rows(UnwiseTiling(), list(bands), schema.UNWISE_URI_TEMPLATE, box))
    )


def test_rows_are_listed_under_every_pixel_they_reach(tmp_path):
    rows = _unwise()
    meta = write_tile_index(rows, str(tmp_path / "idx"))
    index = open_tile_index(str(tmp_path / "idx"), None, ["unwise_w1"])
    assert (meta.rows, meta.index_order, meta.surveys) == (len(rows), INDEX_ORDER, ["unwise"])
    assert meta.entries > meta.rows  # 1.56 deg tiles straddle 1.8 deg pixels
    assert index.tiles_per_band() == {"unwise_w1": len(rows) // 2}
    every = index.rows_for(index.pixels())
    assert sorted(every[schema.TILE_URI]) == sorted(rows[rows.band == "unwise_w1"].uri)
    assert set(every[schema.TILE_BAND]) == {"unwise_w1"}
    assert index.identity_url.endswith(schema.TILE_INDEX_META_FILE)
    assert len(index.rows_for([0])) == 0  # a pixel no tile reaches


def test_replace_is_atomic_and_append_adds_surveys(tmp_path):
    out = str(tmp_path / "idx")
    write_tile_index(_unwise(["unwise_w1"]), out)
    (tmp_path / "idx" / "notes.txt").write_text("the user's")
    first = {p.name for p in (tmp_path / "idx").iterdir() if p.name.startswith("build-")}
    write_tile_index(_unwise(["unwise_w2"]), out)  # replaces: the old build goes
    builds = {p.name for p in (tmp_path / "idx").iterdir() if p.name.startswith("build-")}
    assert len(builds) == 1 and not builds & first
    assert (tmp_path / "idx" / "notes.txt").exists()
    ps1 = pd.DataFrame(list(index_rows(PS1Tiling(), ["ps1_g"], schema.PS1_URI_TEMPLATE, BOX)))
    meta = write_tile_index(ps1, out, append=True)
    assert meta.surveys == ["ps1", "unwise"] and len(meta.builds) == 2
    index = open_tile_index(out, None, ["ps1_g", "unwise_w2", "unwise_w1"])
    counts = index.tiles_per_band()
    assert counts["ps1_g"] == len(ps1) and counts["unwise_w1"] == 0 and counts["unwise_w2"] > 0
    with pytest.raises(RaycatError, match="already has band"):
        write_tile_index(ps1, out, append=True)
    broken = ps1.assign(**{schema.TILE_URI: "../escape.fits"})
    with pytest.raises(Exception, match="escapes"):
        write_tile_index(broken, out)
    assert open_tile_index(out, None, ["ps1_g"]).tiles_per_band() == counts_only(counts, "ps1_g")
    assert len([p for p in (tmp_path / "idx").iterdir() if p.name.startswith("build-")]) == 2


def counts_only(counts: dict, band: str) -> dict:
    return {band: counts[band]}


def test_one_line_errors(tmp_path):
    with pytest.raises(RaycatError, match="tile index not found"):
        open_tile_index(str(tmp_path / "missing"), None, ["b"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(RaycatError, match=r"tile index not found.*raycat index"):
        open_tile_index(str(tmp_path / "empty"), None, ["b"])
    pd.DataFrame({"band": ["b"], "uri": ["t.fits"]}).to_parquet(tmp_path / "nowcs.parquet")
    with pytest.raises(RaycatError, match="lacks columns: wcs"):
        open_tile_index(str(tmp_path / "nowcs.parquet"), None, ["b"])
    pd.DataFrame({"band": ["b"], "uri": ["t.fits"], "wcs": ["garbage"]}).to_parquet(
        tmp_path / "bad.parquet"
    )
    with pytest.raises(RaycatError, match=r"1 row\(s\) hold no usable WCS \(e.g. t.fits\)"):
        open_tile_index(str(tmp_path / "bad.parquet"), None, ["b"])
    for text in ("1,2", "a:b,c:d", "0:10,20:10"):
        with pytest.raises(RaycatError, match="--region"):
            parse_region(text)
    assert parse_region("350:10,-5:5") == (350.0, 10.0, -5.0, 5.0)


def test_resolve_prefers_the_partitioned_index(tmp_path):
    data = DataConfig(store=str(tmp_path))
    assert resolve_tile_index(data) == str(tmp_path / schema.TILE_INDEX_FILE)
    write_tile_index(_unwise(["unwise_w1"]), str(tmp_path / schema.TILE_INDEX_DIR))
    assert resolve_tile_index(data) == str(tmp_path / schema.TILE_INDEX_DIR)
    assert resolve_tile_index(DataConfig(store=str(tmp_path), tile_index="x.parquet")) == str(
        tmp_path / "x.parquet"
    )
    assert resolve_tile_index(DataConfig(store="s3://b/s", tile_index="/abs/i")) == "/abs/i"


def test_build_a_computed_tiling_without_ray(tmp_path):
    out = str(tmp_path / "idx")
    summary = build_tiles_index(
        "ps1",
        ["ps1_g", "ps1_r"],
        schema.PS1_URI_TEMPLATE,
        out,
        box=BOX,
        use_ray=False,
        progress=None,
    )
    expected = list(PS1Tiling().tiles(*BOX))
    assert summary.tiles == len(expected) and summary.rows == 2 * len(expected)
    index = open_tile_index(out, None, ["ps1_r"])
    uris = set(index.rows_for(index.pixels())[schema.TILE_URI])
    assert len(uris) == len(expected)
    with pytest.raises(RaycatError, match="bad uri template"):
        build_tiles_index("ps1", ["ps1_g"], "{nope}.fits", out, box=BOX, use_ray=False)
    with pytest.raises(RaycatError, match="no computed tiling"):
        build_tiles_index("hsc", ["hsc_g"], "{tile}", out, box=BOX, use_ray=False)


def test_tiles_cli_errors_are_one_line(tmp_path, capsys):
    out = str(tmp_path / "idx")
    assert (
        main(["tiles", "--survey", "ps1", "--bands", "ps1_g", "--out", out, "--region", "bad"]) == 2
    )
    assert "--region" in capsys.readouterr().err
    assert main(["tiles", "--survey", "ps1", "--bands", "ps1_g,ps1_g", "--out", out]) == 2
    assert "repeats" in capsys.readouterr().err


def _tiles(survey: str, bands: str, out: str, *extra: str) -> int:
    return main(["tiles", f"--survey={survey}", f"--bands={bands}", f"--out={out}", *extra])


@pytest.mark.slow
def test_tiles_cli_on_ray_two_surveys(tmp_path, ray_local, capsys):
    out = str(tmp_path / "idx")
    region = "--region=186:188,25:27"
    assert _tiles("ps1", "ps1_g,ps1_r", out, region) == 0
    first = json.loads(capsys.readouterr().out)
    assert _tiles("unwise", "unwise_w1", out, region, "--append") == 0
    second = json.loads(capsys.readouterr().out)
    assert second["index_rows"] == first["rows"] + second["rows"]
    index = open_tile_index(out, None, ["ps1_g", "unwise_w1"])
    assert index.tiles_per_band() == {"ps1_g": first["tiles"], "unwise_w1": second["tiles"]}
