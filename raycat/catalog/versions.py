"""Whose files a catalog root holds, and an overwrite that switches whole versions.

raycat writes into a root only when it is empty or holds a raycat catalog (its done markers
or raycat metadata prove it); anything else there (a user's directory, a HATS catalog another
tool wrote) is refused before a byte is written.

An overwrite writes the new version beside the old one, in ``<root>/.raycat-new/``, and
switches only once that version is complete: a journal names the entries to move, the old
entries move to ``<root>/.raycat-old-<job>/``, the new ones into the root, and the old
version's files are deleted (only files a raycat catalog consists of: anything else is kept).
Each step is redone safely after a crash (the next job that holds the lease finishes the
switch), so a failed overwrite leaves the old catalog whole, and a finished one the new.
"""

from __future__ import annotations

import json
import os
from typing import Literal

from raycat import schema as S
from raycat.catalog.atomic import remove_files
from raycat.catalog.read import existing_schema
from raycat.errors import RaycatError
from raycat.fsutil import is_local, put_atomic

Ownership = Literal["empty", "raycat", "foreign"]


def ownership(fs, root: str) -> tuple[Ownership, list[str]]:
    """Whose the root is, and the names of its entries (raycat's private ones left out).

    ``empty``: absent, or only raycat's private entries (lease, staged version, temp files);
    ``raycat``: done markers, or a schema with raycat metadata; ``foreign``: anything else.
    """
    fs.invalidate_cache()
    if not fs.exists(root):
        return "empty", []
    if not fs.isdir(root):
        return "foreign", [root.rsplit("/", 1)[-1]]
    names = sorted(_name(p) for p in fs.ls(root, detail=False))
    public = [n for n in names if n and not S.is_private_entry(n)]
    if not public:
        return "empty", []
    if S.DONE_DIR in public:
        return "raycat", public
    try:
        schema = existing_schema(fs, root)
    except RaycatError:
        schema = None
    if schema is not None and S.META_MODEL_ID in (schema.metadata or {}):
        return "raycat", public
    return "foreign", public


def foreign_error(url: str, names: list[str]) -> RaycatError:
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return RaycatError(
        f"{url} holds files raycat did not write ({shown}): refusing to write or delete "
        "anything there; set infer.catalog to an empty or new path"
    )


def _name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


# --- switching versions -------------------------------------------------------------------


def switch_versions(fs, root: str, job_id: str) -> list[str]:
    """Make the staged version the catalog (see the module docstring); returns the paths of
    files under the old version that raycat did not write and so kept."""
    journal = f"{root}/{S.SWAP_JOURNAL}"
    staging = f"{root}/{S.STAGING_DIR}"
    entries = [e for e in S.CATALOG_ENTRIES if fs.exists(f"{staging}/{e}")]
    plan = {"entries": entries, "retired": f"{S.RETIRED_PREFIX}{job_id}"}
    put_atomic(fs, journal, json.dumps(plan).encode())
    return _finish_switch(fs, root, plan)


def recover_switch(fs, root: str) -> list[str] | None:
    """Finish a switch a crash interrupted (None when there was none); returns the kept
    files, as :func:`switch_versions`."""
    journal = f"{root}/{S.SWAP_JOURNAL}"
    if not fs.exists(journal):
        return None
    return _finish_switch(fs, root, json.loads(fs.cat_file(journal)))


def _finish_switch(fs, root: str, plan: dict) -> list[str]:
    staging, retired = f"{root}/{S.STAGING_DIR}", f"{root}/{plan['retired']}"
    for entry in S.CATALOG_ENTRIES:
        current = f"{root}/{entry}"
        if entry in plan["entries"]:
            if fs.exists(f"{staging}/{entry}"):  # not yet moved in
                if fs.exists(current):
                    _move(fs, current, f"{retired}/{entry}")
                _move(fs, f"{staging}/{entry}", current)
        elif fs.exists(current):  # the old version's only
            _move(fs, current, f"{retired}/{entry}")
    kept = remove_version(fs, retired)
    remove_version(fs, staging)
    remove_files(fs, [f"{root}/{S.SWAP_JOURNAL}"])
    return kept


def _move(fs, source: str, target: str) -> None:
    """Move a file or directory: one rename locally; file by file on object stores (each
    move a copy then a delete, so a repeat after a crash picks up where it stopped)."""
    fs.invalidate_cache()
    if is_local(fs):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(source, target)
        return
    files = fs.find(source) if fs.isdir(source) else [source]
    for path in files:
        fs.mv(path, target + path[len(source) :])
    fs.invalidate_cache()


def remove_version(fs, directory: str) -> list[str]:
    """Delete the catalog files under ``directory`` (a retired or abandoned version) and the
    directory once nothing else is left; returns the files kept (not raycat's)."""
    fs.invalidate_cache()
    if not fs.exists(directory):
        return []
    files = fs.find(directory)
    ours = [p for p in files if S.is_catalog_file(p[len(directory) + 1 :])]
    remove_files(fs, ours)
    kept = sorted(set(files) - set(ours))
    if not kept and fs.exists(directory):
        fs.rm(directory, recursive=True)  # only empty directories are left
    fs.invalidate_cache()
    return kept


def remove_leftovers(fs, root: str) -> None:
    """Remove what crashed jobs left in the root: HATS metadata being prepared, and retired
    versions whose switch finished (files raycat did not write stay)."""
    fs.invalidate_cache()
    for pattern in (f"{S.METADATA_TEMP_PREFIX}*", f"{S.RETIRED_PREFIX}*"):
        for directory in fs.glob(f"{root}/{pattern}"):
            remove_version(fs, directory)
