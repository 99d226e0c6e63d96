"""`raycat index`: build the tile index of an existing store from the FITS headers alone.

A store of real survey products has no tile index. Listing it (one fsspec glob) and
reading only each file's header (``TileStore.read_header``: one ranged read of a few KiB,
even for multi-GB images) gives every column the planner needs: band, footprint and WCS.
The header reads are I/O bound, so they run as Ray Data tasks of a quarter CPU each
(a 2-core machine keeps CPU for the listing and the driver). Files whose header has no
celestial WCS are counted and reported, never dropped silently. Files that cannot be read at
all fail the run and the old index stays (``--allow-partial`` indexes the rest). The rows
stream into the partitioned index (``tile_index_write``), whose metadata is written last:
a reader sees the old index or the new one, never a torn one.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
import sys
import warnings
from dataclasses import dataclass, field

import pandas as pd

from raycat import schema
from raycat.errors import RaycatError

BATCH_FILES = 32  # header reads per Ray task: amortises task start-up against stragglers
REPORT_LIMIT = 10  # file names listed in warnings and in the summary
_KEYWORD = re.compile(r"^[A-Z0-9_-]{1,8}$")
_BYTES = "_bytes_read"  # per-row bytes read, summed into the summary (not written)
_PROBLEM = "_problem"  # "" for a good row, else why the file has no row
_UNREADABLE = ": unreadable: "  # in a problem: "<uri>: unreadable: <why>"


@dataclass
class IndexSummary:
    """What `raycat index` did: counts, the files it could not index, bytes read."""

    out: str
    files: int
    rows: int
    bytes_read: int
    no_wcs: int = 0
    unreadable: int = 0
    problems: list[str] = field(default_factory=list)  # first few "uri: reason"


def band_rule(band_from: str | None):
    """A function (relative uri, header) -> band for ``--band-from``.

    A FITS keyword (``FILTER``, ``BAND``) reads the header; anything else is a regex over the
    relative path whose group ``band`` (or first group, or whole match) is the band. Without
    a rule, the BAND keyword, then FILTER, then "".
    """
    if not band_from:
        return lambda uri, header: str(header.get("BAND", header.get("FILTER", ""))).strip()
    if _KEYWORD.match(band_from):
        return lambda uri, header: str(header.get(band_from, "")).strip()
    try:
        pattern = re.compile(band_from)
    except re.error as err:
        raise RaycatError(
            f"--band-from {band_from!r} is neither a FITS keyword nor a regex: {err}"
        ) from None

    def from_path(uri: str, header) -> str:
        match = pattern.search(uri)
        if match is None:
            return ""
        if "band" in pattern.groupindex:
            return match.group("band")
        return match.group(1) if pattern.groups else match.group(0)

    return from_path


def tile_name(uri: str) -> str:
    """Tile name from a file name: the base name without its FITS/compression suffixes."""
    name = posixpath.basename(uri)
    while name.lower().endswith(schema.FITS_SUFFIXES):
        name = name[: name.rfind(".")]
    return name


def list_files(store, pattern: str = schema.INDEX_FILE_PATTERN) -> list[str]:
    """Relative URIs of the store's files matching ``pattern`` (base name, or path if it
    holds a '/'), sorted; the tile index itself and hidden files are skipped."""
    root = store.root.rstrip("/")
    uris = []
    for path in store.fs.find(root):
        uri = path[len(root) :].lstrip("/") if path.startswith(root) else path
        target = uri if "/" in pattern else posixpath.basename(uri)
        if fnmatch.fnmatch(target, pattern) and not posixpath.basename(uri).startswith("."):
            uris.append(uri)
    return sorted(uris)


def header_rows(
    store, uris: list[str], band_from: str | None = None, survey: str | None = None
) -> list[dict]:
    """One row per file: index columns, or ``_problem`` saying why it has none (pure, no Ray).

    Each row carries the bytes its header read took (``_bytes_read``), so the caller can
    show that only headers were fetched.
    """
    from raycat.surveys.footprint import index_row
    from raycat.surveys.store import TileReadError

    band_of = band_rule(band_from)
    rows = []
    for uri in uris:
        before = store.bytes_read
        try:
            header = store.read_header(uri)
            band = band_of(uri, header)
            row = index_row(survey or _survey_of(band), band, tile_name(uri), uri, header)
            row[_PROBLEM] = ""
        except TileReadError as err:
            row = {_PROBLEM: f"{uri}{_UNREADABLE}{err}"}
        except ValueError as err:  # no celestial WCS
            row = {_PROBLEM: f"{uri}: {err}"}
        row[_BYTES] = store.bytes_read - before
        rows.append(row)
    return rows


def _survey_of(band: str) -> str:
    """The survey prefix of a raycat band name ("ps1_g" -> "ps1"), else ""."""
    return band.split("_", 1)[0] if "_" in band else ""


def _read_batch(batch: dict, store_url: str, storage_options: dict, band_from, survey):
    """Ray Data task: the header rows of one batch of URIs (opens its own store)."""
    from raycat.surveys.store import open_store

    store = open_store(store_url, storage_options)
    rows = header_rows(store, list(batch["uri"]), band_from, survey)
    return pd.DataFrame(rows)


def build_index(
    store_url: str,
    out: str | None = None,
    pattern: str = schema.INDEX_FILE_PATTERN,
    band_from: str | None = None,
    survey: str | None = None,
    storage_options: dict | None = None,
    use_ray: bool = True,
    progress=sys.stderr,
    allow_partial: bool = False,
) -> IndexSummary:
    """List the store, read every matching file's header, write the partitioned tile index
    to ``out`` (default: ``tile_index`` at the store root) and say what was done.

    Header rows stream into a new build of the index batch by batch (no process holds them
    all); the metadata that makes it the index is written only at the end. Files that cannot
    be read at all fail the run and leave an existing index as it was (a flaky store must
    not replace a good index with a partial one) unless ``allow_partial``; files without a
    celestial WCS are reported and left out.
    """
    from raycat.fsutil import join, storage_errors
    from raycat.surveys.store import open_store

    with storage_errors(f"cannot list the tile store {store_url}"):
        store = open_store(store_url, storage_options)
        listed = list_files(store, pattern)
    out = out or join(store_url, schema.TILE_INDEX_DIR)
    uris = [u for u in listed if not _is_index_file(u)]
    if not uris:
        raise RaycatError(f"no files matching {pattern!r} under {store_url}")
    _say(progress, f"indexing {len(uris)} files under {store_url}")
    if use_ray:
        batches = _rows_on_ray(uris, store_url, storage_options or {}, band_from, survey, progress)
    else:
        batches = (
            pd.DataFrame(header_rows(store, uris[i : i + BATCH_FILES], band_from, survey))
            for i in range(0, len(uris), BATCH_FILES)
        )
    return _write(batches, out, storage_options, len(uris), allow_partial)


def _is_index_file(uri: str) -> bool:
    """A file of a tile index (the single file, or a part of the partitioned one)."""
    return uri == schema.TILE_INDEX_FILE or uri.startswith(f"{schema.TILE_INDEX_DIR}/")


def _rows_on_ray(uris, store_url, storage_options, band_from, survey, progress):
    """The header rows, batch by batch, read on Ray tasks of a quarter CPU each."""
    import ray.data

    from raycat.runtime import READ_ARGS, ray_session

    kwargs = {
        "store_url": store_url,
        "storage_options": storage_options,
        "band_from": band_from,
        "survey": survey,
    }
    with ray_session():  # joins a running Ray (or the cluster) as it is
        ds = ray.data.from_items([{"uri": u} for u in uris]).map_batches(
            _read_batch, batch_size=BATCH_FILES, batch_format="numpy", fn_kwargs=kwargs, **READ_ARGS
        )
        yield from _with_progress(ds, len(uris), progress)


def _with_progress(ds, n_files: int, progress):
    """The batches of the header dataset, with a progress line (rate, ETA) every few seconds."""
    from raycat.progress import Progress

    counter = Progress(n_files, "files", "  headers read", write=lambda line: _say(progress, line))
    for batch in ds.iter_batches(batch_format="pandas", batch_size=None):
        counter.update(len(batch))
        yield pd.DataFrame(batch.to_dict("records"))  # Ray's pickled list columns as lists


def _write(batches, out: str, storage_options, n_files: int, allow_partial: bool) -> IndexSummary:
    """Stream the good rows into a new build, then commit it (metadata last); unreadable
    files are an error that keeps the old index unless ``allow_partial``."""
    from raycat.surveys.tile_index_write import abort, commit, new_build, write_parts

    build = new_build()
    problems: list[str] = []
    bytes_read = 0
    parts = []
    try:
        for number, frame in enumerate(batches):
            bytes_read += int(frame[_BYTES].sum())
            problems.extend(frame.loc[frame[_PROBLEM] != "", _PROBLEM])
            good = frame[frame[_PROBLEM] == ""].drop(columns=[_PROBLEM, _BYTES])
            parts.append(write_parts(out, storage_options, build, number, good))
        unreadable = _check_problems(sorted(problems), out, n_files, allow_partial)
        if not sum(p.rows for p in parts):
            raise RaycatError(f"none of the {n_files} files has a usable celestial WCS")
        meta = commit(out, storage_options, build, parts)
    except BaseException:
        abort(out, storage_options, build)
        raise
    return IndexSummary(
        out,
        n_files,
        meta.rows,
        bytes_read,
        len(problems) - len(unreadable),
        len(unreadable),
        sorted(problems)[:REPORT_LIMIT],
    )


def _check_problems(problems: list[str], out: str, n_files: int, allow_partial: bool) -> list:
    """Fail on unreadable files (unless ``allow_partial``), warn about the rest; returns the
    unreadable ones."""
    unreadable = [p.split(_UNREADABLE)[0] for p in problems if _UNREADABLE in p]
    if unreadable and not allow_partial:
        raise RaycatError(
            f"{len(unreadable)} of {n_files} files unreadable ({', '.join(unreadable[:3])}"
            f"{', ...' if len(unreadable) > 3 else ''}): the index {out} is left as it was; "
            "rerun when they read, or pass --allow-partial to index the readable ones"
        )
    if problems:
        warnings.warn(
            f"{len(problems)} of {n_files} files not indexed ({len(unreadable)} "
            f"unreadable, {len(problems) - len(unreadable)} without a celestial WCS): "
            + "; ".join(problems[:REPORT_LIMIT]),
            stacklevel=3,
        )
    return unreadable


def _say(stream, line: str) -> None:
    if stream is not None:
        print(line, file=stream, flush=True)
