"""The ``Store`` protocol and its implementations: a local directory and obstore's object stores.

Keys are ``/``-separated paths relative to the store's root (a directory, or a bucket and prefix).
``put`` is atomic in both: a reader sees the whole object or none (a temporary file renamed into
place; S3's PUT and completed multipart uploads). ``get`` streams in chunks, so a restore never
holds a whole backup file in memory.
"""

from __future__ import annotations

import builtins
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, Any, Literal, Protocol, runtime_checkable

from core.errors import ConfigError, OperationFailed

StoreType = Literal["local", "s3", "gcs", "azure"]
CHUNK = 4 << 20  # what get() yields at least (but the last chunk) and what a local put copies at a time
Payload = bytes | Path | IO[bytes] | Iterable[bytes]


class StoreError(OperationFailed):
    """The object store failed."""


class StoreUnreachable(StoreError):
    """The object store cannot be reached."""


class StoreRefused(StoreError):
    """The object store refused the request."""


class ObjectMissing(StoreError):
    """No such object in the store."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str | None = None


@runtime_checkable
class Store(Protocol):
    """Where backups go. ``url`` names the store in messages (``s3://bucket/prefix``, a directory)."""

    url: str

    def put(self, key: str, data: Payload) -> None:
        """Store ``data`` (bytes, a file path, a binary file or an iterable of chunks) under ``key``."""

    def get(self, key: str) -> Iterator[bytes]:
        """The object's bytes in chunks; ObjectMissing when there is none (raised by the call)."""

    def head(self, key: str) -> ObjectInfo | None:
        """The object's size and etag, None when it does not exist."""

    def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        """Every object whose key starts with ``prefix``, sorted by key."""

    def delete(self, key: str) -> None:
        """Remove the object (no error when it does not exist)."""


@dataclass(frozen=True)
class StoreSpec:
    """Where a store is; credentials are never part of it (obstore reads them from the environment)."""

    type: StoreType
    path: str | None = None  # local
    bucket: str | None = None  # s3/gcs bucket, azure container
    prefix: str | None = None
    endpoint: str | None = None  # MinIO, R2, moto …; default: the provider's (or AWS_ENDPOINT_URL)
    region: str | None = None
    timeout_seconds: float = 60.0  # one request, connect included
    retries: int = 3  # obstore retries 5xx, connection errors and timeouts with backoff

    @property
    def url(self) -> str:
        if self.type == "local":
            return str(self.path)
        scheme = {"s3": "s3", "gcs": "gs", "azure": "az"}[self.type]
        prefix = (self.prefix or "").strip("/")
        return f"{scheme}://{self.bucket}" + (f"/{prefix}" if prefix else "")


def open_store(spec: StoreSpec) -> Store:
    """The store ``spec`` describes (nothing is contacted until the first request)."""
    if spec.type == "local":
        if not spec.path:
            raise ConfigError("a local store needs a path")
        return LocalStore(Path(spec.path).expanduser())
    if not spec.bucket:
        raise ConfigError(f"a {spec.type} store needs a bucket")
    return ObjectStore(_obstore(spec), spec.url)


def _obstore(spec: StoreSpec) -> Any:
    from obstore.store import AzureStore, GCSStore, S3Store

    timeout = timedelta(seconds=spec.timeout_seconds)
    client: dict[str, Any] = {"timeout": timeout, "connect_timeout": timeout}
    if spec.endpoint and spec.endpoint.startswith("http://"):
        client["allow_http"] = True
    retry: Any = {"max_retries": spec.retries, "retry_timeout": timeout * (spec.retries + 1),
                  "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=5),
                              "base": 2}}
    prefix = (spec.prefix or "").strip("/") or None
    try:
        if spec.type == "s3":
            config: dict[str, Any] = {}
            if spec.endpoint:
                config["endpoint"] = spec.endpoint
            if spec.region:
                config["region"] = spec.region
            return S3Store(spec.bucket, prefix=prefix, config=config, client_options=client,  # type: ignore[arg-type]
                           retry_config=retry)
        if spec.type == "gcs":
            return GCSStore(spec.bucket, prefix=prefix, client_options=client,  # type: ignore[arg-type]
                            retry_config=retry)
        return AzureStore(spec.bucket, prefix=prefix, client_options=client,  # type: ignore[arg-type]
                          retry_config=retry)
    except Exception as exc:  # obstore checks its configuration (and the environment's) here
        raise ConfigError(f"{spec.url}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def _chunks(data: Payload) -> Iterator[bytes]:
    if isinstance(data, bytes | bytearray | memoryview):
        yield bytes(data)
    elif isinstance(data, Path):
        with data.open("rb") as fh:
            while block := fh.read(CHUNK):
                yield block
    elif hasattr(data, "read"):
        while block := data.read(CHUNK):  # type: ignore[union-attr]
            yield block
    else:
        yield from data  # type: ignore[misc]


class LocalStore:
    """A directory as a store: keys are relative paths; a put is a temporary file renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not key or not path.is_relative_to(self.root) or path == self.root:
            raise StoreError(f"{self.url}: key {key!r} is outside the store")
        return path

    def put(self, key: str, data: Payload) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with tmp.open("wb") as out:
                for block in _chunks(data):
                    out.write(block)
            os.replace(tmp, path)
        except OSError as exc:
            raise StoreError(f"{self.url}: cannot write {key}: {exc.strerror or exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def get(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        try:
            fh = path.open("rb")
        except FileNotFoundError as exc:
            raise ObjectMissing(f"{self.url}: no object {key}") from exc
        return self._read(fh)

    @staticmethod
    def _read(fh: IO[bytes]) -> Iterator[bytes]:
        with fh:
            while block := fh.read(CHUNK):
                yield block

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return ObjectInfo(key, st.st_size, f"{st.st_mtime_ns:x}-{st.st_size:x}")

    def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        out = []
        if self.root.is_dir():
            for dirpath, _, names in os.walk(self.root):
                for name in names:
                    if name.endswith(".tmp") and name.startswith("."):
                        continue  # a put in progress
                    key = os.path.relpath(os.path.join(dirpath, name), self.root).replace(os.sep, "/")
                    if key.startswith(prefix):
                        info = self.head(key)
                        if info is not None:
                            out.append(info)
        return sorted(out, key=lambda i: i.key)

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        parent = path.parent
        while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent


class ObjectStore:
    """One of obstore's stores (S3 and S3-compatible, GCS, Azure) behind the ``Store`` protocol."""

    def __init__(self, inner: Any, url: str) -> None:
        self.inner = inner
        self.url = url

    def _error(self, action: str, key: str, exc: Exception) -> StoreError:
        return store_error(self.url, action, key, exc)

    def put(self, key: str, data: Payload) -> None:
        import obstore

        source: Any = data if isinstance(data, bytes | Path) else _chunks(data)
        try:
            obstore.put(self.inner, key, source, max_concurrency=4)
        except Exception as exc:
            raise self._error("put", key, exc) from exc

    def get(self, key: str) -> Iterator[bytes]:
        import obstore

        try:
            result = obstore.get(self.inner, key)
        except Exception as exc:
            raise self._error("get", key, exc) from exc
        return self._stream(key, result.stream(min_chunk_size=CHUNK))

    def _stream(self, key: str, stream: Any) -> Iterator[bytes]:
        try:
            for block in stream:
                yield bytes(block)
        except Exception as exc:
            raise self._error("get", key, exc) from exc

    def head(self, key: str) -> ObjectInfo | None:
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            meta = obstore.head(self.inner, key)
        except (NotFoundError, FileNotFoundError):
            return None
        except Exception as exc:
            raise self._error("head", key, exc) from exc
        return ObjectInfo(key, int(meta["size"]), meta.get("e_tag"))

    def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        import obstore

        out = []
        try:
            for batch in obstore.list(self.inner, prefix or None):
                out += [ObjectInfo(m["path"], int(m["size"]), m.get("e_tag")) for m in batch]
        except Exception as exc:
            raise self._error("list", prefix, exc) from exc
        return sorted(out, key=lambda i: i.key)

    def delete(self, key: str) -> None:
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            obstore.delete(self.inner, key)
        except (NotFoundError, FileNotFoundError):
            return
        except Exception as exc:
            raise self._error("delete", key, exc) from exc


_UNREACHABLE = ("error sending request", "kind: connect", "kind: timeout", "timedout", "connectionrefused",
                "connection reset", "dns error", "operation timed out")


def store_error(url: str, action: str, key: str, exc: Exception) -> StoreError:
    """obstore's exception as one of ours, with the cause the store gave (its S3 error code) in the message."""
    from obstore.exceptions import NotFoundError, PermissionDeniedError, UnauthenticatedError

    text = str(exc)
    where = f"{url}: {action} {key}"
    code = _tag(text, "Code")
    if code == "NoSuchKey" or (code is None and isinstance(exc, NotFoundError | FileNotFoundError)):
        return ObjectMissing(f"{where}: no such object")
    if code:
        message = _tag(text, "Message")
        return StoreRefused(f"{where}: the store answered {code}" + (f": {message}" if message else ""))
    if isinstance(exc, PermissionDeniedError | UnauthenticatedError):
        return StoreRefused(f"{where}: access denied ({_first_line(exc)})")
    if any(marker in text.lower() for marker in _UNREACHABLE):
        return StoreUnreachable(f"{where}: store unreachable ({_cause(text)})")
    return StoreError(f"{where}: {_first_line(exc)}")


def _tag(text: str, tag: str) -> str | None:
    start = text.find(f"<{tag}>")
    end = text.find(f"</{tag}>", start)
    return text[start + len(tag) + 2:end].strip() if start >= 0 and end > start else None


def _cause(text: str) -> str:
    """The innermost reason of an obstore (reqwest) error chain: ``Connection refused``, a timeout …"""
    messages = re.findall(r'message: "([^"]+)"', text)
    if messages:
        return messages[-1]
    headline = text.split("Debug source:")[0].strip()
    return headline.rsplit(" - ", 1)[-1].strip() or _first_line(Exception(text))
