"""Files that appear whole or not at all, and removal of what raycat wrote (only that).

Every file of a catalog (partitions, done markers, HATS metadata, the lease) goes through
``put_atomic`` (``raycat.fsutil``): on a local disk a temporary file beside the target,
flushed and renamed over it; on an object store one PUT, which readers see only once
complete. A crash at any point leaves the old file or the new one, never a truncated one; temp
files it leaves are named ``.<name>.<random>.tmp`` and removed by the next job that holds the
lease.
"""

from __future__ import annotations

from collections.abc import Iterable

from raycat import schema as S


def remove_temp_files(fs, root: str) -> int:
    """Remove the temp files a crashed writer left under ``root``; returns how many.

    Only for the lease holder: another job's temp files are its writes in flight.
    """
    fs.invalidate_cache()
    found = [path for pattern in S.TEMP_GLOBS for path in fs.glob(f"{root}/{pattern}")]
    remove_files(fs, found)
    return len(found)


def remove_files(fs, paths: Iterable[str]) -> None:
    """Remove files (missing ones are fine: a removal is redone after a crash)."""
    paths = list(paths)
    if paths:
        try:
            fs.rm(paths)
        except FileNotFoundError:
            for path in paths:
                if fs.exists(path):
                    fs.rm(path)
    fs.invalidate_cache()
