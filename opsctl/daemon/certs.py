"""When the certificates opsctl connects with expire, exported by the daemon (alert
``CertificateExpiringSoon``).

    opsctl_certificate_expiry_timestamp_seconds{source, path}   notAfter (Unix time) of the
        certificate in ``path`` that expires first (a CA bundle holds several)

What the system holds that expires: only the TLS certificates of its connections, when it uses
TLS. The database URL's ``sslcert`` (a client certificate: when it expires, the server refuses
every connection) and ``sslrootcert`` (the CA the server's certificate is verified against),
given in the URL, in ``PGSSLCERT`` / ``PGSSLROOTCERT``, or libpq's defaults
``~/.postgresql/postgresql.crt`` and ``root.crt`` when those exist; and a ``rediss://`` Redis URL's
``ssl_certfile`` and ``ssl_ca_certs``. API keys, webhook secrets and the admin token have no
expiry (they are revoked or rotated by hand), and the API serves plain HTTP behind the cluster's
ingress, whose certificate is the ingress's (cert-manager's alerts watch it).

``source`` says which setting named the file: ``database sslcert``, ``database sslrootcert``,
``redis ssl_certfile``, ``redis ssl_ca_certs``. Which file is which source is pure
(:func:`certificate_files`); reading a file's notAfter is the adapter (:func:`not_after`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core.throttle import EveryInterval

log = logging.getLogger(__name__)

NAME = "opsctl_certificate_expiry_timestamp_seconds"
MAX_CERT_BYTES = 1 << 20


@dataclass(frozen=True)
class CertFile:
    source: str
    path: Path
    explicit: bool  # named by a setting (False: libpq's default file, used only when it exists)


def certificate_files(database: Mapping[str, Any] | None, redis: Mapping[str, Any] | None,
                      env: Mapping[str, str], home: Path) -> list[CertFile]:
    """The certificate files the connections use (pure): ``database`` is the database URL's libpq
    parameters, ``redis`` the Redis URL's (None: not configured), ``env`` the environment."""
    found: list[CertFile] = []
    if database is not None and (database.get("sslmode") or env.get("PGSSLMODE")) != "disable":
        for param, variable, default in (("sslcert", "PGSSLCERT", "postgresql.crt"),
                                         ("sslrootcert", "PGSSLROOTCERT", "root.crt")):
            named = database.get(param) or env.get(variable)
            if named == "system":  # sslrootcert=system: the operating system's store, not a file we hold
                continue
            if named:
                found.append(CertFile(f"database {param}", Path(str(named)).expanduser(), True))
            else:
                found.append(CertFile(f"database {param}", home / ".postgresql" / default, False))
    if redis is not None:
        for param in ("ssl_certfile", "ssl_ca_certs"):
            if redis.get(param):
                found.append(CertFile(f"redis {param}", Path(str(redis[param])).expanduser(), True))
    return found


def not_after(path: Path) -> float | None:
    """The earliest notAfter (Unix time) of the PEM certificates in ``path``; None when unreadable."""
    from cryptography import x509

    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_CERT_BYTES + 1)
        if len(data) > MAX_CERT_BYTES:
            raise ValueError(f"larger than {MAX_CERT_BYTES} bytes")
        certs = x509.load_pem_x509_certificates(data)
    except (OSError, ValueError) as exc:
        log.warning("certificate expiry: cannot read %s: %s", path, exc)
        return None
    return min(cert.not_valid_after_utc.timestamp() for cert in certs)


def families(expiries: Mapping[CertFile, float | None]) -> GaugeMetricFamily:
    """The gauge from each file's notAfter (pure); an unread file is left out."""
    family = GaugeMetricFamily(NAME, "notAfter (Unix time) of the first certificate to expire in each file the "
                               "database and Redis connections use", labels=["source", "path"])
    for cert, expiry in sorted(expiries.items(), key=lambda item: item[0].source):
        if expiry is not None:
            family.add_metric([cert.source, str(cert.path)], expiry)
    return family


def connection_files(settings: Any, env: Mapping[str, str], home: Path) -> list[CertFile]:
    """The files of ``settings``' database and Redis URLs, the defaults only when they exist."""
    from psycopg.conninfo import conninfo_to_dict
    from redis.connection import parse_url

    database = conninfo_to_dict(settings.database_url) if settings.database_url else None
    redis = parse_url(settings.redis_url) if settings.redis_url else None
    return [f for f in certificate_files(database, redis, env, home) if f.explicit or f.path.is_file()]


class CertificateCollector(Collector):
    """Reads the files when scraped, at most every ``min_interval`` seconds (they change on a rotation)."""

    def __init__(self, files: Callable[[], list[CertFile]], min_interval: float = 60.0,
                 read: Callable[[Path], float | None] = not_after) -> None:
        self.files = files
        self.read = read
        self._family = EveryInterval(self._read, min_interval)

    def _read(self) -> GaugeMetricFamily:
        try:
            files = self.files()
        except Exception as exc:  # a scrape must never fail (an unparsable URL fails the daemon elsewhere)
            log.warning("certificate expiry: cannot tell the files: %s", exc)
            files = []
        return families({f: self.read(f.path) for f in files})

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(NAME, NAME)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield self._family.get()
