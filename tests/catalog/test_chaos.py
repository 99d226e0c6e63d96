"""Chaos: inference killed at five seeded points, resumed each time.

The kills are exceptions injected where a crash would stop the job: in the sink actor while a
partition file is half-written, in the sink between a partition's file and its done marker,
in the driver while a second job is being refused, during finalize, and halfway through a
metadata file. After every run: each id of the done partitions once, one model id, and the
partitions done before a kill byte-identical after it. At the end: every id exactly once.
"""

from __future__ import annotations

import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from tinysky import catalog_ids

from raycat import schema
from raycat.catalog.lease import LeaseHeld
from raycat.catalog.sink import PartitionSink

pytestmark = pytest.mark.slow
SEED = 14


class Killed(RuntimeError):
    """Stands for a crash: nothing after the raise runs (finally blocks excepted)."""


class ChaosSink(PartitionSink):
    """The sink, killed on its ``at``-th partition: ``kill`` = "mid-file" (half the file in
    its temp file) or "before-marker" (file in place, marker not written)."""

    kill = ""
    at = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        import raycat.catalog.write as W

        calls = {"put": 0, "marker": 0}
        put, marker = W.put_atomic, W.write_marker

        def chaotic_put(fs, path, blob):
            calls["put"] += 1
            if self.kill == "mid-file" and calls["put"] == self.at:
                directory, name = path.rsplit("/", 1)
                fs.pipe_file(
                    f"{directory}/.{name}.chaos{schema.TEMP_SUFFIX}", blob[: len(blob) // 2]
                )
                raise Killed(f"chaos: killed writing {name}")
            put(fs, path, blob)

        def chaotic_marker(fs, root, done):
            calls["marker"] += 1
            if self.kill == "before-marker" and calls["marker"] == self.at:
                raise Killed(f"chaos: killed before the marker of {done.pixel}")
            marker(fs, root, done)

        W.put_atomic, W.write_marker = chaotic_put, chaotic_marker


class Catalog:
    """What the test knows of the catalog between runs."""

    def __init__(self, root, model_id: str):
        self.root, self.model_id = root, model_id
        self.done_bytes: dict[str, bytes] = {}  # partition -> bytes when first seen done

    def check(self) -> tuple[int, int, int]:
        """The invariants after any run; returns (partitions done, partition files, files
        a crash left behind: temp files and metadata being prepared)."""
        import json

        markers = sorted((self.root / schema.DONE_DIR).glob("*.done"))
        ids: list[int] = []
        for marker in markers:
            done = json.loads(marker.read_text())
            assert done["model_id"] == self.model_id
            order, pixel = schema.done_marker_of(marker.name)
            path = self.root / schema.partition_relpath(order, pixel)
            blob = path.read_bytes()
            assert self.done_bytes.setdefault(path.name, blob) == blob  # never rewritten
            ids += pq.read_table(path, columns=[schema.ID])[schema.ID].to_pylist()
        assert len(ids) == len(set(ids))
        files = len(list(self.root.glob(schema.PARTITION_GLOB)))
        debris = [p for p in self.root.rglob("*") if schema.is_private_entry(p.name)]
        return len(markers), files, len(debris)


def _killed(run, cfg, match: str) -> None:
    with pytest.raises(Exception, match=match):
        run(cfg)


def test_inference_killed_at_five_points_resumes_to_every_id_once(
    tiny_sky, tmp_path, ray_module, monkeypatch
):
    import ray.cloudpickle

    import raycat.catalog.metadata as M
    import raycat.catalog.sink
    from raycat.catalog.job import CatalogJob
    from raycat.photoz.model import read_artifact_meta
    from raycat.pipeline import run_infer

    rng = np.random.default_rng(SEED)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actor gets ChaosSink
    cfg = tiny_sky.config(tmp_path / "cat", tiny_sky.objects(tiny_sky.truth, "all60"))
    catalog = Catalog(tmp_path / "cat", read_artifact_meta(tiny_sky.model).model_id)
    monkeypatch.setattr(raycat.catalog.sink, "PartitionSink", ChaosSink)
    seen = []

    # 1. mid-partition, 2. between data and marker: in the sink actor
    for kill in ("mid-file", "before-marker"):
        ChaosSink.kill, ChaosSink.at = kill, int(rng.integers(2, 4))
        _killed(run_infer, cfg, "chaos: killed")
        seen.append((kill, ChaosSink.at, catalog.check()))
    monkeypatch.setattr(raycat.catalog.sink, "PartitionSink", PartitionSink)

    # 3. while a second job is refused: the first job killed with its partitions written
    def refuse_then_die(job, *args, **kwargs):
        with pytest.raises(LeaseHeld, match=f"job {job.job_id} on "):
            run_infer(cfg)
        raise Killed("chaos: killed while a second job was refused")

    with monkeypatch.context() as patch:
        patch.setattr(CatalogJob, "finish", refuse_then_die)
        _killed(run_infer, cfg, "second job was refused")
    seen.append(("second job refused", 0, catalog.check()))

    # 4. during finalize (metadata prepared, none in place), 5. halfway through a metadata file
    prepare, put = M._prepare, M.put_atomic

    def prepared_then_die(*args, **kwargs):
        prepare(*args, **kwargs)
        raise Killed("chaos: killed during finalize")

    puts = int(rng.integers(1, len(M.METADATA_FILES)))

    def half_then_die(fs, path, blob, calls=[0]):  # noqa: B006 - a counter across calls
        calls[0] += 1
        if calls[0] > puts:
            directory, name = path.rsplit("/", 1)
            fs.pipe_file(f"{directory}/.{name}.chaos{schema.TEMP_SUFFIX}", blob[: len(blob) // 2])
            raise Killed(f"chaos: killed writing {name}")
        put(fs, path, blob)

    for name, target, patched in (
        ("_prepare", "finalize", prepared_then_die),
        ("put_atomic", "writing", half_then_die),
    ):
        with monkeypatch.context() as patch:
            patch.setattr(M, name, patched)
            _killed(run_infer, cfg, f"chaos: killed (during )?{target}")
        seen.append((target, puts, catalog.check()))

    result = run_infer(cfg)
    assert catalog.check() == (11, 11, 0) and result["passes"] == 0
    ids = catalog_ids(tmp_path / "cat")
    assert sorted(ids) == sorted(tiny_sky.truth[schema.ID]) and len(ids) == 60
    common = pq.read_schema(tmp_path / "cat" / schema.COMMON_METADATA_RELPATH)
    assert common.metadata[schema.META_MODEL_ID].decode() == catalog.model_id
    print("chaos kills (point, seeded n, (partitions done, files, debris) after):", seen)
    (_, first, after1), (*_, after2), *_, (*_, after5) = seen
    assert after1 == (first - 1, first - 1, 1)  # the half-written file left as a temp file
    assert after2[1] == after2[0] + 1 and after2[2] == 0  # one file without its marker
    assert seen[2][2] == (11, 11, 0) and seen[3][2] == (11, 11, 1)  # metadata being prepared
    assert after5 == (11, 11, 2)  # metadata being prepared, one file half-written beside
