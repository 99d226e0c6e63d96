"""`raycat tiles`: the partitioned index of a computed tiling, built in parallel on Ray.

The tiling is split into chunks of about ``CHUNK_TILES`` tiles (whole projection cells or
tile rows, a ring at a time); each Ray task computes its chunk's rows in NumPy
(``tile_rows``) and writes them as parts of the new build (``tile_index_write``): the
driver holds only the chunk list and each chunk's counts, never the rows. The metadata is
written last, so an interrupted build leaves the index as it was.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

from raycat.errors import RaycatError
from raycat.surveys.tile_index_write import PartStats, abort, commit, new_build, write_parts
from raycat.surveys.tiling import get_tiling

CHUNK_TILES = 2000  # tiles per task: ~1-2 s of work, a few hundred tasks for the full sky
STRIPE_DEG = 8.0  # rings per chunk: compact chunks reach few index pixels each
FULL_SKY = (0.0, 360.0, -90.0, 90.0)

Box = tuple[float, float, float, float]
Chunk = list[tuple[int, list[int]]]  # (ring, cell numbers in it), one or more rings


@dataclass
class TilesSummary:
    """What `raycat tiles` wrote."""

    out: str
    survey: str
    bands: list[str]
    tiles: int
    rows: int
    entries: int
    files: int
    bytes: int
    index_rows: int  # rows of the whole index (with --append, the earlier surveys too)
    seconds: float


def parse_region(text: str | None) -> Box:
    """``RA_MIN:RA_MAX,DEC_MIN:DEC_MAX`` (degrees; RA_MIN > RA_MAX wraps through 0)."""
    if not text:
        return FULL_SKY
    try:
        ra, dec = text.split(",")
        box = tuple(float(v) for part in (ra, dec) for v in part.split(":"))
    except ValueError:
        raise RaycatError(
            f"--region {text!r}: expected RA_MIN:RA_MAX,DEC_MIN:DEC_MAX in degrees"
        ) from None
    if len(box) != 4 or not (-90 <= box[2] < box[3] <= 90):
        raise RaycatError(f"--region {text!r}: need 4 numbers and -90 <= DEC_MIN < DEC_MAX <= 90")
    return box


def chunks(tiling, box: Box, size: int = CHUNK_TILES) -> Iterator[Chunk]:
    """The tiling's cells that may touch ``box``, in compact chunks of about ``size`` tiles:
    stripes of rings about ``STRIPE_DEG`` tall, cut in RA. A chunk writes one part per
    index pixel it reaches, so compact chunks keep the parts per pixel (and files) few."""
    per_cell = 100 if tiling.survey == "ps1" else 1  # PS1 cells hold 10 x 10 skycells
    stripe: list[tuple[float, int, int]] = []  # (ra, ring, cell)
    first_dec = None
    for ring, cells in tiling.cells(box):
        ras, dec = tiling.cell_centres(ring, cells)
        if first_dec is not None and abs(dec - first_dec) >= STRIPE_DEG:
            yield from _cut(stripe, size // per_cell)
            stripe, first_dec = [], None
        first_dec = dec if first_dec is None else first_dec
        stripe.extend(zip(ras.tolist(), [ring] * len(cells), cells))
    yield from _cut(stripe, size // per_cell)


def _cut(stripe: list[tuple[float, int, int]], cells_per_chunk: int) -> Iterator[Chunk]:
    """A stripe's cells sorted by RA, in chunks of ``cells_per_chunk`` (grouped by ring)."""
    stripe.sort()
    step = max(1, cells_per_chunk)
    for start in range(0, len(stripe), step):
        by_ring: dict[int, list[int]] = {}
        for _, ring, cell in stripe[start : start + step]:
            by_ring.setdefault(int(ring), []).append(int(cell))
        yield sorted(by_ring.items())


def build_chunk(args: dict) -> tuple[PartStats, int]:
    """One task: the rows of a chunk, written as parts; (stats, tiles)."""
    from raycat.surveys.tile_rows import tile_frame

    tiling = get_tiling(args["survey"])
    tiles = [
        t for ring, cells in args["chunk"] for t in tiling.cell_tiles(ring, cells, args["box"])
    ]
    frame = tile_frame(tiling.survey, tiles, args["bands"], args["uri_template"])
    stats = write_parts(args["out"], args["options"], args["build"], args["number"], frame)
    return stats, len(tiles)


def build_tiles_index(
    survey: str,
    bands: list[str],
    uri_template: str,
    out: str,
    storage_options: dict | None = None,
    box: Box = FULL_SKY,
    append: bool = False,
    use_ray: bool = True,
    progress=sys.stderr,
) -> TilesSummary:
    """Write the partitioned index of ``survey``'s computed tiling in ``box`` to ``out``."""
    started = time.perf_counter()
    tiling = get_tiling(survey)
    _check_bands(survey, bands, uri_template, tiling)
    build = new_build()
    base: dict = {"survey": survey, "bands": bands, "uri_template": uri_template, "out": out}
    base |= {"options": storage_options or {}, "build": build, "box": box}
    work = [base | {"chunk": c, "number": i} for i, c in enumerate(chunks(tiling, box))]
    try:
        results = _run(work, use_ray, progress, started)
        meta = commit(out, storage_options, build, [s for s, _ in results], append)
    except BaseException:
        abort(out, storage_options, build)
        raise
    parts = [s for s, _ in results]
    return TilesSummary(
        out,
        survey,
        bands,
        sum(n for _, n in results),
        sum(p.rows for p in parts),
        sum(p.entries for p in parts),
        sum(p.files for p in parts),
        sum(p.bytes for p in parts),
        meta.rows,
        round(time.perf_counter() - started, 1),
    )


def _check_bands(survey: str, bands: list[str], uri_template: str, tiling) -> None:
    """One-line errors before any work: no bands, repeated bands, a bad URI template."""
    from raycat.surveys.tile_rows import tile_uri

    if not bands or any(not b for b in bands):
        raise RaycatError("--bands: give at least one band name, e.g. ps1_g,ps1_r")
    if len(set(bands)) != len(bands):
        raise RaycatError(f"--bands repeats a band: {','.join(bands)}")
    ring, cells = next(iter(tiling.cells(FULL_SKY)))
    sample = next(iter(tiling.cell_tiles(ring, cells[:1], FULL_SKY)))
    for band in bands:
        tile_uri(uri_template, survey, sample, band)


def _run(work: list[dict], use_ray: bool, progress, started: float) -> list:
    """Each chunk's (stats, tiles), on Ray tasks (one CPU each) or here, with progress."""
    report = _Progress(len(work), progress, started)
    if not use_ray:
        return [report(build_chunk(w)) for w in work]
    import ray

    from raycat.runtime import ray_session

    with ray_session():
        task = ray.remote(num_cpus=1)(build_chunk)
        pending = [task.remote(w) for w in work]
        results = []
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            results.append(report(ray.get(ready[0])))
        return results


@dataclass
class _Progress:
    """A progress line (chunks done/total, tiles, rate) about every 5% of the chunks."""

    total: int
    stream: object
    started: float
    done: int = 0
    tiles: int = 0

    def __call__(self, result: tuple[PartStats, int]) -> tuple[PartStats, int]:
        self.done += 1
        self.tiles += result[1]
        if self.stream is not None and (
            self.done % max(1, self.total // 20) == 0 or self.done == self.total
        ):
            rate = self.tiles / max(time.perf_counter() - self.started, 1e-9)
            line = f"  chunks {self.done}/{self.total}, {self.tiles} tiles, {rate:.0f} tiles/s"
            print(line, file=self.stream, flush=True)  # type: ignore[call-overload]
        return result
