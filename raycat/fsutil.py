"""Paths and URLs: one way to turn a path or URL into a filesystem, for fsspec and for Arrow.

Ray Data reads and writes are always given an explicit ``filesystem=`` so that storage options
(endpoints, anonymous access) reach them; credentials come from the standard AWS/GCS chains.
"""

from __future__ import annotations

import posixpath

import fsspec


def has_scheme(path: str) -> bool:
    """True for URLs such as s3://b/k or https://h/p (a Windows drive letter is not one)."""
    head, sep, _ = path.partition("://")
    return bool(sep) and len(head) > 1


def join(root: str, relative: str) -> str:
    """Join a relative path onto a root path or URL; absolute ``relative`` is returned as is."""
    if has_scheme(relative) or relative.startswith("/"):
        return relative
    return posixpath.join(root.rstrip("/"), relative)


def filesystem(
    url: str, storage_options: dict | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for ``url`` and the path inside it."""
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs, path


def arrow_filesystem(url: str, storage_options: dict | None = None):
    """A pyarrow filesystem (wrapping fsspec) and the path inside it, for Ray Data I/O."""
    import pyarrow.fs

    fs, path = filesystem(url, storage_options)
    return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs)), path


def exists(url: str, storage_options: dict | None = None) -> bool:
    fs, path = filesystem(url, storage_options)
    return fs.exists(path)
