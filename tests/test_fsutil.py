"""Atomic writes, stored-file identities and one-line storage errors."""

from __future__ import annotations

import os

import pytest

from raycat.errors import RaycatError
from raycat.fsutil import filesystem, identity, put_atomic, storage_errors


def test_put_atomic_replaces_whole_or_not_at_all(tmp_path, monkeypatch):
    fs, path = filesystem(str(tmp_path / "index.parquet"))
    put_atomic(fs, path, b"old")
    put_atomic(fs, path, b"new")
    assert (tmp_path / "index.parquet").read_bytes() == b"new"

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        put_atomic(fs, path, b"partial")
    assert (tmp_path / "index.parquet").read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["index.parquet"]  # no temp file left behind


def test_put_atomic_on_s3_is_one_put(s3_bucket):
    url, options = s3_bucket
    fs, path = filesystem(f"{url}/a/index.parquet", options)
    put_atomic(fs, path, b"first")
    put_atomic(fs, path, b"second")
    assert fs.cat_file(path) == b"second" and fs.ls(f"{url}/a") == [path]


def test_identity_changes_with_any_rewrite_and_says_absent(tmp_path):
    target = tmp_path / "objects.parquet"
    assert identity(str(target)) == "absent"
    target.write_bytes(b"one")
    first = identity(str(target))
    assert identity(str(target)) == first
    os.utime(target, ns=(1, 1))  # same bytes, rewritten: another version
    assert identity(str(target)) != first
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "a.parquet").write_bytes(b"a")
    before = identity(str(tmp_path / "dir"))
    (tmp_path / "dir" / "b.parquet").write_bytes(b"b")
    assert identity(str(tmp_path / "dir")) != before


def test_storage_errors_are_one_line_naming_the_kind():
    class NoCredentialsError(Exception):  # botocore's, by name
        pass

    with (
        pytest.raises(RaycatError, match=r"^read x: no credentials found"),
        storage_errors("read x"),
    ):
        raise NoCredentialsError("Unable to locate credentials")
    with pytest.raises(RaycatError, match=r"^read x: ValueError: first$"), storage_errors("read x"):
        raise ValueError("first\nsecond\nthird")


def test_a_scheme_without_its_package_is_one_line(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gcsfs", None)  # as if gcsfs were not installed
    with pytest.raises(RaycatError, match=r"gs://bucket/x.*gcsfs"):
        filesystem("gs://bucket/x")
    with pytest.raises(RaycatError, match="Protocol not known"):
        filesystem("nosuchscheme://bucket/x")
