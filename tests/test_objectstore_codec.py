"""The codec: zstd and AES-256-GCM in frames, round trips by table, and every way an object can be
wrong named: the wrong key, no key, a truncated (half-written) object, a tampered frame."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest

from opsctl.objectstore.codec import (
    FRAME_BYTES,
    HEADER,
    Codec,
    CorruptObject,
    Key,
    KeyProblem,
    Stats,
    WrongKey,
    decode,
    load_key,
)

KEY = Key(bytes(range(32)))
OTHER = Key(bytes(range(1, 33)))


def payload(n: int) -> bytes:
    half = n // 2
    return os.urandom(half) + (b"compressible " * ((n - half) // 13 + 1))[: n - half]


def blocks(data: bytes, size: int = 300_000) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("compression", ["none", "zstd"])
@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "aes"])
@pytest.mark.parametrize("size", [0, 1, FRAME_BYTES - 1, FRAME_BYTES, FRAME_BYTES + 1, 3 * FRAME_BYTES + 12345])
def test_round_trip(compression: str, key: Key | None, size: int) -> None:
    data = payload(size)
    enc_stats, dec_stats = Stats(), Stats()
    encoded = list(Codec(compression, 3, key).encode(blocks(data), enc_stats))  # type: ignore[arg-type]
    assert enc_stats.plain_bytes == size and enc_stats.sha256 == hashlib.sha256(data).hexdigest()
    assert enc_stats.stored_bytes == sum(map(len, encoded))
    if key is not None and size > 64:
        assert data[:64] not in b"".join(encoded)
    out = list(decode(blocks(b"".join(encoded), 77_777), key, "obj", dec_stats))
    assert b"".join(out) == data
    assert dec_stats.sha256 == enc_stats.sha256 and dec_stats.stored_bytes == enc_stats.stored_bytes


def test_zstd_compresses_and_decoding_stays_bounded() -> None:
    data = b"\0" * (64 << 20)
    encoded = b"".join(Codec("zstd", 3).encode(blocks(data, 1 << 20)))
    assert len(encoded) < len(data) // 1000
    sizes = [len(b) for b in decode([encoded], None, "zeros")]
    assert sum(sizes) == len(data) and max(sizes) <= FRAME_BYTES  # never the whole 64 MiB at once


def test_the_header_records_the_key_id() -> None:
    encoded = b"".join(Codec("zstd", 3, KEY).encode([b"x"]))
    assert encoded[:4] == b"OPSC" and encoded[7:15].hex() == KEY.id == hashlib.sha256(KEY.material).hexdigest()[:16]
    assert KEY.id not in repr(KEY.material) and repr(KEY) == f"Key(id={KEY.id})"


def test_the_wrong_key_names_both_ids() -> None:
    encoded = b"".join(Codec("zstd", 3, KEY).encode([b"secret"]))
    with pytest.raises(WrongKey, match=f"encrypted with key {KEY.id}, the configured key is {OTHER.id}"):
        list(decode([encoded], OTHER, "obj"))


def test_no_key_for_an_encrypted_object() -> None:
    encoded = b"".join(Codec("none", 0, KEY).encode([b"secret"]))
    with pytest.raises(KeyProblem, match=f"encrypted with key {KEY.id}, and no key is configured"):
        list(decode([encoded], None, "obj"))


def _frames(key: Key | None) -> bytes:
    return b"".join(Codec("zstd", 3, key).encode(blocks(os.urandom(3 * FRAME_BYTES))))


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "aes"])
@pytest.mark.parametrize(("cut", "message"), [
    (lambda b: b[: HEADER.size], "without the last one"),
    (lambda b: b[: len(b) // 2], "truncated"),
    (lambda b: b[:-1], "truncated inside frame"),
    (lambda b: b + b"extra", "data after the last frame"),
    (lambda b: b"PK\x03\x04" + b[4:], "not an opsctl-encoded object"),
])
def test_a_half_written_or_foreign_object_is_named(key: Key | None, cut, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CorruptObject, match=message):
        list(decode([cut(_frames(key))], key, "obj"))


def test_a_tampered_frame_fails_authentication() -> None:
    encoded = bytearray(_frames(KEY))
    encoded[HEADER.size + 5 + 1000] ^= 1
    with pytest.raises(CorruptObject, match="frame 0 fails authentication"):
        list(decode([bytes(encoded)], KEY, "obj"))


def test_a_dropped_frame_fails_authentication() -> None:
    encoded = _frames(KEY)
    first = HEADER.size + 5 + int.from_bytes(encoded[HEADER.size:HEADER.size + 4], "big")
    second = first + 5 + int.from_bytes(encoded[first:first + 4], "big")
    with pytest.raises(CorruptObject, match="frame 1 fails authentication"):
        list(decode([encoded[:first] + encoded[second:]], KEY, "obj"))


@pytest.mark.parametrize("form", ["raw", "hex", "base64"])
def test_keys_load_from_a_file(tmp_path: Path, form: str) -> None:
    path = tmp_path / "backup.key"
    path.write_bytes({"raw": KEY.material, "hex": KEY.material.hex().encode() + b"\n",
                      "base64": base64.b64encode(KEY.material)}[form])
    assert load_key(key_file=str(path)) == KEY


def test_keys_load_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSCTL_TEST_KEY", KEY.material.hex())
    assert load_key(key_env="OPSCTL_TEST_KEY").id == KEY.id


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"key_env": "OPSCTL_TEST_NO_SUCH_KEY"}, "OPSCTL_TEST_NO_SUCH_KEY .* is not set"),
    ({"key_file": "/nonexistent/backup.key"}, "No such file"),
    ({}, "key_file or key_env"),
])
def test_key_problems_are_config_errors(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(KeyProblem, match=message):
        load_key(**kwargs)


def test_a_short_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "short.key"
    path.write_text("abcd" * 8)
    with pytest.raises(KeyProblem, match="32 bytes") as info:
        load_key(key_file=str(path))
    assert "abcd" not in str(info.value)  # the key is never in a message
