"""The Store contract, run against every implementation: a local directory and S3 (a real moto
server process); the S3 failures a backup must name: unreachable, no bucket, a missing object."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from opsctl.objectstore.store import (
    LocalStore,
    ObjectMissing,
    Store,
    StoreRefused,
    StoreSpec,
    StoreUnreachable,
    open_store,
)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return open_store(StoreSpec("local", path=str(tmp_path / "store")))
    server: Any = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    return open_store(StoreSpec("s3", bucket=bucket, prefix="prod/", endpoint=server.endpoint, retries=0,
                                timeout_seconds=30))


def test_put_head_get_list_delete(store: Store, tmp_path: Path) -> None:
    big = bytes(range(256)) * (40 * 1024)  # 10 MiB: S3 takes it as a multipart upload from an iterable
    src = tmp_path / "file.bin"
    src.write_bytes(b"from a path" * 1000)
    store.put("b/1/small", b"hello")
    store.put("b/1/path", src)
    store.put("b/1/fileobj", io.BytesIO(b"from a file object"))
    store.put("b/2/chunks", (big[i:i + 3_000_000] for i in range(0, len(big), 3_000_000)))
    info = store.head("b/1/small")
    assert info is not None and info.size == 5
    assert store.head("b/2/chunks").size == len(big)  # type: ignore[union-attr]
    assert store.head("b/none") is None
    assert b"".join(store.get("b/1/path")) == src.read_bytes()
    assert b"".join(store.get("b/1/fileobj")) == b"from a file object"
    assert b"".join(store.get("b/2/chunks")) == big
    assert [i.key for i in store.list("b/1/")] == ["b/1/fileobj", "b/1/path", "b/1/small"]
    assert [(i.key, i.size) for i in store.list("b/2")] == [("b/2/chunks", len(big))]
    store.delete("b/1/small")
    store.delete("b/1/small")  # deleting what is gone is no error
    assert store.head("b/1/small") is None
    assert [i.key for i in store.list()] == ["b/1/fileobj", "b/1/path", "b/2/chunks"]


def test_get_streams_in_chunks(store: Store) -> None:
    store.put("stream", b"x" * (9 << 20))
    blocks = list(store.get("stream"))
    assert sum(map(len, blocks)) == 9 << 20 and len(blocks) > 1


def test_a_missing_object_is_named(store: Store) -> None:
    with pytest.raises(ObjectMissing, match="nope"):
        store.get("nope")


def test_put_overwrites_atomically(store: Store) -> None:
    store.put("k", b"one")
    store.put("k", b"two!")
    assert b"".join(store.get("k")) == b"two!"
    assert [i.key for i in store.list()] == ["k"]  # no temporary left behind


def test_a_local_key_cannot_leave_the_store(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    with pytest.raises(Exception, match="outside the store"):
        store.put("../escape", b"x")


def test_the_prefix_keeps_repositories_apart(s3_server: Any, s3_bucket: str) -> None:
    a = open_store(StoreSpec("s3", bucket=s3_bucket, prefix="a", endpoint=s3_server.endpoint))
    b = open_store(StoreSpec("s3", bucket=s3_bucket, prefix="b/", endpoint=s3_server.endpoint))
    a.put("x", b"1")
    assert b.head("x") is None and [i.key for i in a.list()] == ["x"]
    assert a.url == f"s3://{s3_bucket}/a"


def test_an_unreachable_store_says_so(s3_server: Any, s3_bucket: str) -> None:
    from tests.conftest import free_port

    dead = open_store(StoreSpec("s3", bucket=s3_bucket, endpoint=f"http://127.0.0.1:{free_port()}", retries=0,
                                timeout_seconds=5))
    with pytest.raises(StoreUnreachable, match=r"store unreachable \(Connection refused"):
        dead.put("k", b"x")
    with pytest.raises(StoreUnreachable):
        dead.head("k")


def test_a_missing_bucket_is_the_store_s_answer(s3_server: Any) -> None:
    store = open_store(StoreSpec("s3", bucket="no-such-bucket", endpoint=s3_server.endpoint, retries=0))
    with pytest.raises(StoreRefused, match="NoSuchBucket"):
        store.put("k", b"x")


@pytest.mark.parametrize(("spec", "url"), [
    (StoreSpec("s3", bucket="bk", prefix="/prod/"), "s3://bk/prod"),
    (StoreSpec("gcs", bucket="bk"), "gs://bk"),
    (StoreSpec("azure", bucket="ctr", prefix="x"), "az://ctr/x"),
    (StoreSpec("local", path="/srv/b"), "/srv/b"),
])
def test_urls_name_the_store(spec: StoreSpec, url: str) -> None:
    assert spec.url == url


def test_a_store_without_bucket_is_a_config_error() -> None:
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="needs a bucket"):
        open_store(StoreSpec("s3"))
