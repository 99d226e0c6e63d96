"""Paths and URLs: one way to turn a path or URL into a filesystem, for fsspec and for Arrow.

Ray Data reads and writes are always given an explicit ``filesystem=`` so that storage options
(endpoints, anonymous access) reach them; credentials come from the standard AWS/GCS chains.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import uuid
from collections.abc import Iterator

import fsspec

from raycat import schema
from raycat.errors import RaycatError

# Exceptions of the storage clients, by class name so that none of them must be installed
# (botocore, aiohttp, google-auth): what a one-line message says about each kind.
NO_CREDENTIALS = frozenset(
    {"NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError", "RefreshError"}
)
UNREACHABLE = frozenset(
    {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ClientConnectorError",
        "ServerTimeoutError",
        "ConnectionError",
        "TimeoutError",
    }
)
CREDENTIALS_HELP = (
    "give credentials by the standard chains (AWS_* environment variables, ~/.aws/credentials, "
    "an instance role; GOOGLE_APPLICATION_CREDENTIALS), or storage_options anon: true for a "
    "public bucket"
)
# What identifies a stored file's version, by listing key, best first: a changed file changes
# its ETag (S3), generation (GCS) or modification time (local).
VERSION_KEYS = ("ETag", "etag", "generation", "mtime", "LastModified", "last_modified", "updated")


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
    """The fsspec filesystem for ``url`` and the path inside it.

    A scheme whose package is not installed (gs:// without gcsfs) or that fsspec does not
    know is a one-line RaycatError, not an ImportError traceback.
    """
    try:
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError as err:
        extra = " (pip install 'raycat[gcs]')" if url.startswith(("gs://", "gcs://")) else ""
        raise RaycatError(f"cannot open {url}: {first_line(err)}{extra}") from None
    except ValueError as err:
        if not str(err).startswith("Protocol not known"):
            raise
        raise RaycatError(f"cannot open {url}: {first_line(err)}") from None
    return fs, path


def arrow_filesystem(url: str, storage_options: dict | None = None):
    """A pyarrow filesystem (wrapping fsspec) and the path inside it, for Ray Data I/O."""
    import pyarrow.fs

    fs, path = filesystem(url, storage_options)
    return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs)), path


def exists(url: str, storage_options: dict | None = None) -> bool:
    fs, path = filesystem(url, storage_options)
    return fs.exists(path)


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """True for the local filesystem (where a rename is atomic and a temp file is visible)."""
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def put_atomic(fs: fsspec.AbstractFileSystem, path: str, blob: bytes) -> None:
    """Write ``blob`` to ``path`` so that readers see the old file or the new one, never part.

    Locally: a hidden temp file beside it, then a rename (atomic on POSIX). On an object
    store: one PUT (an object appears only once its upload completes).
    """
    directory, _, name = path.rpartition("/")
    if not is_local(fs):
        fs.pipe_file(path, blob)
        return
    os.makedirs(directory or ".", exist_ok=True)
    temp = f"{directory}/.{name}.{uuid.uuid4().hex}{schema.TEMP_SUFFIX}"  # readers skip it
    try:
        with open(temp, "wb") as out:
            out.write(blob)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temp)


def identity(url: str, storage_options: dict | None = None) -> str:
    """A short hash of what is stored at ``url``: each file's name, size and version stamp.

    Cheap at any size (one listing, no content read) and changed by any rewrite of a file,
    so a result derived from ``url`` can be checked against it later. "absent" when nothing
    is there.
    """
    fs, path = filesystem(url, storage_options)
    with contextlib.suppress(AttributeError, NotImplementedError):
        fs.invalidate_cache(path)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return "absent"
    files = fs.find(path, detail=True).values() if info["type"] == "directory" else [info]
    digest = hashlib.sha256()
    for item in sorted(files, key=lambda f: f["name"]):
        stamp = next((item[k] for k in VERSION_KEYS if item.get(k) is not None), "")
        relative = item["name"][len(path) :]
        digest.update(f"{relative}\0{item.get('size')}\0{stamp}\n".encode())
    return digest.hexdigest()[:16]


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message (messages can run to pages)."""
    return next((line.strip() for line in str(err).splitlines() if line.strip()), "")


def describe_storage_error(err: BaseException) -> str:
    """One line saying why a store could not be read: no credentials, unreachable, denied,
    missing, or the error's own first line."""
    names = {cls.__name__ for cls in type(err).__mro__}
    detail = first_line(err)
    if names & NO_CREDENTIALS:
        return f"no credentials found ({detail}): {CREDENTIALS_HELP}"
    if names & UNREACHABLE:
        return f"the store is unreachable ({detail})"
    if isinstance(err, PermissionError):
        return f"access denied ({detail})"
    if isinstance(err, FileNotFoundError):
        return "not found"
    return f"{type(err).__name__}: {detail}" if detail else type(err).__name__


@contextlib.contextmanager
def storage_errors(action: str) -> Iterator[None]:
    """Turn any failure inside the block into a one-line RaycatError "``action``: why".

    For reads of user inputs (config, object list, tile index, a store listing), where every
    failure is the input's or the store's: a missing package, no credentials, an unreachable
    endpoint, a file that is not what it claims to be.
    """
    try:
        yield
    except RaycatError:
        raise
    except Exception as err:
        raise RaycatError(f"{action}: {describe_storage_error(err)}") from None
