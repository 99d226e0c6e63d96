import fsspec


def test_s3_round_trip_through_fsspec(s3_bucket):
    url, opts = s3_bucket
    with fsspec.open(f"{url}/a/b.txt", "wb", **opts) as f:
        f.write(b"hello")
    with fsspec.open(f"{url}/a/b.txt", "rb", **opts) as f:
        assert f.read() == b"hello"
