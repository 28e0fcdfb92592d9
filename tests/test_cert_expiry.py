"""The expiry of the certificates the database and Redis connections use (CertificateExpiringSoon):
which file is which (a table), notAfter read from real PEM files, and the daemon's /metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from opsctl.daemon.certs import CertFile, CertificateCollector, certificate_files, connection_files, not_after
from tests.conftest import make_settings
from tests.test_disk_metrics import daemon_metrics

HOME = Path("/home/op")
PG_CERT = CertFile("database sslcert", HOME / ".postgresql" / "postgresql.crt", False)
PG_ROOT = CertFile("database sslrootcert", HOME / ".postgresql" / "root.crt", False)


@pytest.mark.parametrize(("database", "redis", "env", "expected"), [
    # libpq's default files, used only if they exist (the adapter checks)
    ({"host": "db"}, None, {}, [PG_CERT, PG_ROOT]),
    ({"host": "db", "sslcert": "/etc/tls/client.crt", "sslrootcert": "/etc/tls/ca.pem"}, None, {},
     [CertFile("database sslcert", Path("/etc/tls/client.crt"), True),
      CertFile("database sslrootcert", Path("/etc/tls/ca.pem"), True)]),
    ({"host": "db"}, None, {"PGSSLCERT": "/env/c.crt", "PGSSLROOTCERT": "system"},
     [CertFile("database sslcert", Path("/env/c.crt"), True)]),  # system: the OS store, not our file
    ({"host": "db", "sslmode": "disable", "sslcert": "/x"}, None, {}, []),
    ({"host": "db"}, None, {"PGSSLMODE": "disable"}, []),
    (None, {"host": "r", "ssl_certfile": "/r/c.crt", "ssl_ca_certs": "/r/ca.pem"}, {},
     [CertFile("redis ssl_certfile", Path("/r/c.crt"), True), CertFile("redis ssl_ca_certs", Path("/r/ca.pem"), True)]),
    (None, {"host": "r"}, {}, []),
    (None, None, {}, []),
])
def test_certificate_files(database: dict[str, str] | None, redis: dict[str, str] | None, env: dict[str, str],
                           expected: list[CertFile]) -> None:
    assert certificate_files(database, redis, env, HOME) == expected


def pem(not_after: datetime, name: str = "opsctl-test") -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(not_after - timedelta(days=365))
            .not_valid_after(not_after).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


EXPIRES = datetime(2027, 1, 15, 12, 0, tzinfo=UTC)


def test_not_after_is_the_first_expiry_in_the_file(tmp_path: Path) -> None:
    single = tmp_path / "client.crt"
    single.write_bytes(pem(EXPIRES))
    assert not_after(single) == EXPIRES.timestamp()
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(pem(EXPIRES + timedelta(days=400), "root") + pem(EXPIRES, "intermediate"))
    assert not_after(bundle) == EXPIRES.timestamp()
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    assert not_after(garbage) is None
    assert not_after(tmp_path / "missing.crt") is None


def test_collector_leaves_out_what_it_cannot_read(tmp_path: Path) -> None:
    good = tmp_path / "c.crt"
    good.write_bytes(pem(EXPIRES))
    files = [CertFile("database sslcert", good, True), CertFile("redis ssl_ca_certs", tmp_path / "gone.pem", True)]
    (family,) = CertificateCollector(lambda: files, min_interval=0).collect()
    assert [(s.labels, s.value) for s in family.samples] == [
        ({"source": "database sslcert", "path": str(good)}, EXPIRES.timestamp())]


def test_the_daemon_exports_the_expiry_of_its_connections_certificates(db_url: str, tmp_path: Path) -> None:
    client, ca = tmp_path / "client.crt", tmp_path / "redis-ca.pem"
    client.write_bytes(pem(EXPIRES))
    ca.write_bytes(pem(EXPIRES + timedelta(days=30)))
    settings = make_settings(database_url=f"{db_url}&sslcert={client}",
                             redis_url=f"rediss://redis:6380/0?ssl_ca_certs={ca}")
    assert [f.source for f in connection_files(settings, {}, tmp_path)] == ["database sslcert", "redis ssl_ca_certs"]
    samples = daemon_metrics(settings, tmp_path, lambda daemon: None)
    found = {s.labels["source"]: (s.labels["path"], s.value) for s in samples
             if s.name == "opsctl_certificate_expiry_timestamp_seconds"}
    assert found == {"database sslcert": (str(client), EXPIRES.timestamp()),
                     "redis ssl_ca_certs": (str(ca), (EXPIRES + timedelta(days=30)).timestamp())}
