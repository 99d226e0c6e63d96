"""`raycat export --format qp`: the catalog streamed into a qp ensemble that qp.read reads back."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from raycat import schema as S
from raycat.catalog import info as I
from raycat.catalog import write as C
from raycat.catalog.read import iter_partitions, pdf_matrix
from raycat.errors import RaycatError
from raycat.healpix import healpix29, unit_key
from raycat.photoz.pdf import bin_centres, bin_edges, pit

qp = pytest.importorskip("qp")
# qp.read warns of the NaN rows: the objects without a PDF, kept on purpose
pytestmark = pytest.mark.filterwarnings("ignore:There are non-finite values:RuntimeWarning")

EDGES = bin_edges(0.0, 2.0, 40)
ORDER = 3


def write_catalog(root, ids, *, seed=0, id_type=None) -> None:
    """A catalog of Gaussian PDFs over several partitions; every 7th object has no PDF."""
    rng = np.random.default_rng(seed)
    n = len(ids)
    z = rng.uniform(0.2, 1.7, n)
    pdf = np.exp(-0.5 * ((bin_centres(EDGES)[None, :] - z[:, None]) / 0.08) ** 2)
    pdf[::7] = np.nan
    ra, dec = rng.uniform(0, 60, n), rng.uniform(-20, 20, n)
    schema = I.catalog_schema(
        EDGES, ["g"], model_id="m", config_hash="c", has_z_spec=True, id_type=id_type
    )
    writer = C.CatalogWriter(str(root), schema, mode="new")
    pixel = healpix29(ra, dec) >> (2 * (29 - ORDER))
    for p in np.unique(pixel):
        rows = pixel == p
        table = C.partition_table(
            schema,
            ids=np.asarray(ids)[rows],
            ra=ra[rows],
            dec=dec[rows],
            flags=np.zeros(rows.sum()),
            pdf=pdf[rows],
            extra={S.Z_SPEC: z[rows]},
        )
        writer.write_partition(unit_key(ORDER, int(p)), table)
    writer.finalize()


def catalog_columns(root, columns) -> dict[str, np.ndarray]:
    parts = list(iter_partitions(str(root), columns))
    out = {c: np.concatenate([t[c].to_numpy(zero_copy_only=False) for t in parts]) for c in columns}
    if S.PDF in columns:
        out[S.PDF] = np.concatenate([pdf_matrix(t[S.PDF]) for t in parts])
    return out, len(parts)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    root = tmp_path_factory.mktemp("qp") / "cat"
    write_catalog(root, np.arange(300, dtype=np.int64) * 5 + 1)
    return root


def test_qp_file_reads_back_with_the_same_pdfs(catalog, tmp_path, monkeypatch):
    chunks = []
    real = qp.Ensemble.writeHdf5Chunk
    monkeypatch.setattr(
        qp.Ensemble,
        "writeHdf5Chunk",
        lambda self, group, start, end: (
            chunks.append((start, end)) or real(self, group, start, end)
        ),
    )
    from raycat.catalog.export import export_qp

    out = tmp_path / "pz.hdf5"
    summary = export_qp(str(catalog), str(out))
    cat, n_parts = catalog_columns(
        catalog, [S.ID, S.PDF, S.Z_MODE, S.Z_MEAN, S.Z_MEDIAN, S.Z_SPEC, S.FLAGS]
    )
    n = len(cat[S.ID])
    assert n_parts > 3 and len(chunks) == n_parts  # one chunk per partition: streamed
    assert chunks[0][0] == 0 and chunks[-1][1] == n
    assert summary["objects"] == n and summary["no_pdf"] == int(np.isnan(cat[S.PDF][:, 0]).sum())
    assert summary["no_pdf"] > 0

    ens = qp.read(str(out))
    assert ens.npdf == n and ens.metadata["pdf_name"][0] == b"hist"
    np.testing.assert_array_equal(ens.metadata["bins"].ravel(), EDGES)
    probabilities = ens.objdata["pdfs"] * np.diff(EDGES)  # qp stores densities
    np.testing.assert_allclose(probabilities, cat[S.PDF], rtol=2e-6, atol=1e-9)
    assert np.array_equal(np.isnan(probabilities[:, 0]), np.isnan(cat[S.PDF][:, 0]))
    ancil = ens.ancil
    np.testing.assert_array_equal(ancil["id"], cat[S.ID])
    np.testing.assert_array_equal(ancil["flags"], cat[S.FLAGS])
    for rail, column in (("zmode", S.Z_MODE), ("zmean", S.Z_MEAN), ("zmedian", S.Z_MEDIAN)):
        np.testing.assert_array_equal(ancil[rail], cat[column].astype(np.float32), err_msg=rail)
    np.testing.assert_array_equal(ancil["redshift"], cat[S.Z_SPEC].astype(np.float32))
    no_pdf = np.isnan(cat[S.PDF][:, 0])
    assert np.all(ancil["flags"][no_pdf] & S.Flag.NO_PREDICTION)

    # qp's CDF is the catalog's (uniform inside a bin): its PIT is raycat's PIT
    good = ~no_pdf
    z = cat[S.Z_SPEC][good].astype(np.float64)
    qp_pit = ens[np.flatnonzero(good)].cdf(z[:, None]).ravel()  # each PDF at its own z
    np.testing.assert_allclose(qp_pit, pit(cat[S.PDF][good], EDGES, z), atol=1e-6)


def test_text_ids_of_any_length_survive(tmp_path):
    """HDF5 holds fixed-width text: the width is the longest id's, not the first chunk's."""
    from raycat.catalog.export import export_qp

    ids = [f"obj {i}" + "x" * (i % 37) + ("é" if i % 5 == 0 else "") for i in range(200)]
    write_catalog(tmp_path / "cat", ids, id_type=pa.string(), seed=1)
    export_qp(str(tmp_path / "cat"), str(tmp_path / "pz.hdf5"))
    cat, _ = catalog_columns(tmp_path / "cat", [S.ID])
    stored = qp.read(str(tmp_path / "pz.hdf5")).ancil["id"]
    back = [v.decode() if isinstance(v, bytes) else str(v) for v in stored]
    assert back == list(cat[S.ID])


def test_cli_export_prints_the_summary(catalog, tmp_path, capsys):
    from raycat.cli import main

    out = tmp_path / "sub" / "pz.hdf5"
    assert main(["export", "--catalog", str(catalog), "--format", "qp", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["out"] == str(out) and qp.read(str(out)).npdf == summary["objects"]
    assert [p.name for p in out.parent.iterdir()] == ["pz.hdf5"]  # no temp file left


def test_missing_catalog_is_one_line(tmp_path):
    from raycat.catalog.export import export_qp

    with pytest.raises(RaycatError, match="not found"):
        export_qp(str(tmp_path / "nope"), str(tmp_path / "pz.hdf5"))
    assert not (tmp_path / "pz.hdf5").exists()


def test_a_catalog_that_changes_under_the_export_leaves_no_file(catalog, tmp_path, monkeypatch):
    """Rows beyond the count the file was allocated for: one line, and no half file."""
    import raycat.catalog.export as E

    real = E.pq.read_metadata

    class Fewer:
        def __init__(self, path, **kw):
            self.num_rows = real(path, **kw).num_rows - 1

    monkeypatch.setattr(E.pq, "read_metadata", Fewer)
    with pytest.raises(RaycatError, match="changed while it was exported"):
        E.export_qp(str(catalog), str(tmp_path / "pz.hdf5"))
    assert list(tmp_path.iterdir()) == []


def test_an_existing_out_file_is_refused_and_left_as_it_was(catalog, tmp_path):
    from raycat.catalog.export import export_qp

    out = tmp_path / "mine.hdf5"
    out.write_bytes(b"not raycat's")
    with pytest.raises(RaycatError, match="already exists") as err:
        export_qp(str(catalog), str(out))
    assert "\n" not in str(err.value) and out.read_bytes() == b"not raycat's"
