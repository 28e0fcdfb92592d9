"""Typed settings for the core and the CLI.

Layers, highest first: explicit values (CLI flags) → environment (``OPSCTL_*``) → a config
file (``--config``, ``OPSCTL_CONFIG`` or ``./opsctl.yaml``) → the state that ``opsctl up``
writes into its data dir (``<data dir>/state.json``) → the documented defaults below.

The state file is how a second terminal finds the running system: ``opsctl up`` writes the
database socket, the Redis socket, the API URL and the admin token there, so ``opsctl tenant
create`` just works.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from core.errors import ConfigError

STATE_FILE = "state.json"
DEFAULT_DATA_DIR = ".opsctl"
DEFAULT_CONFIG_FILE = "opsctl.yaml"
MAX_CONFIG_BYTES = 1 << 20  # a settings file is a few lines; a megabyte is not one
Coding = Literal["zstd", "gzip"]


def offered_codings() -> list[Coding]:
    return ["zstd", "gzip"]


class Settings(BaseSettings):
    """Everything the service and the CLI can be configured with (env: ``OPSCTL_<NAME>``)."""

    model_config = SettingsConfigDict(env_prefix="OPSCTL_", extra="ignore", validate_default=True)
    include_state: ClassVar[bool] = True

    # where things are
    data_dir: Path = Field(Path(DEFAULT_DATA_DIR), description="state of `opsctl up`: database, Redis, backups")
    database_url: str | None = Field(None, description="PostgreSQL URL; unset: the embedded server")
    database_replica_urls: list[str] = Field(default_factory=list, description="streaming standbys that searches "
                                             "may read from (docs/replicas.md); env: a JSON list. `opsctl up "
                                             "--replicas N` fills it for its API")
    replica_max_lag_seconds: float = Field(5.0, ge=0, description="a search reads from a replica only while its "
                                           "replay lag is under this bound; 0: never")
    replicas: int = Field(0, ge=0, le=8, description="streaming standbys of the embedded PostgreSQL that `opsctl "
                          "up` starts (`--replicas N`)")
    replica_check_seconds: float = Field(1.0, gt=0, description="how often the API measures each replica's lag")
    database_pool_mode: Literal["session", "transaction"] = Field(
        "session", description="what `database_url` is: PostgreSQL or a session pooler (session), or a "
        "transaction pooler such as PgBouncer or Supavisor in transaction mode (transaction): no server-side "
        "prepared statements, per-transaction settings only, and what needs a session goes to "
        "`database_direct_url`")
    database_direct_url: str | None = Field(
        None, description="PostgreSQL URL with a session of its own (direct, or a session-mode pooler) for "
        "LISTEN, advisory locks (daemon leader, migrations, partition rotation), DDL and backups; "
        "unset: database_url")
    redis_url: str | None = Field(None, description="Redis URL; unset: the embedded redis-server")
    prometheus_url: str | None = Field(None, description="Prometheus URL; unset: the embedded one")
    api_url: str | None = Field(None, description="the core API, for CLI commands")
    api_key: str | None = Field(None, description="a tenant API key, for `opsctl ingest|search`")
    admin_token: str | None = Field(None, description="guards /admin/*")

    # logs
    log_format: Literal["text", "json"] = Field("text", description="text: lines for people (as always); json: "
                                                "one JSON object per line on stderr for log pipelines (time, "
                                                "level, component, request_id, company_id, route, status, "
                                                "latency_ms, message), the API's access log included")

    # embeddings
    embedder: Literal["hash", "onnx", "minilm", "openai"] = Field(
        "hash", description="hash: no model (the library's default); onnx: all-MiniLM-L6-v2 on ONNX Runtime "
        "(`make up`'s default); minilm: the same model on torch; openai: an OpenAI-compatible API")
    embed_dim: int = Field(384, ge=8, le=16000, description="vector dimension stored in the database")
    embed_batch_size: int = Field(64, ge=1, le=2048)
    embed_precision: Literal["float32", "int8"] = Field(
        "float32", description="onnx: float32 (the torch model's exact vectors) or int8 (dynamic quantization: "
        "~1.7x the chunks per CPU-second, but vector MRR@10 0.015 lower on bench.search_eval)")
    embed_threads: int = Field(1, ge=0, le=256, description="onnx: ONNX Runtime's threads per embedding call, "
                               "minilm: torch's intra-op threads (0: one per core); 1 uses a core's CPU best, and "
                               "the workers share the cores out")
    model_cache_dir: Path | None = Field(None, description="onnx: where the built model file is kept; unset: "
                                         "$XDG_CACHE_HOME/opsctl/models (~/.cache/opsctl/models)")
    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key: str | None = None
    openai_model: str = "text-embedding-3-small"
    openai_timeout_seconds: float = Field(30.0, gt=0)
    openai_max_retries: int = Field(3, ge=0, le=10)

    # chunking
    chunk_size: int = Field(800, ge=50, le=20000, description="max characters per chunk")
    chunk_overlap: int = Field(100, ge=0, description="characters repeated between neighbouring chunks")

    # vector index
    hnsw_m: int = Field(16, ge=2, le=100)
    hnsw_ef_construction: int = Field(64, ge=4, le=1000)
    hnsw_ef_search: int = Field(500, ge=1, le=1000, description="set on every connection (on every search behind a "
                                "transaction pooler) only when configured; "
                                "unset: the database's default (500, tuned by `opsctl index tune --apply`)")

    # ingest queue
    worker_batch_size: int = Field(32, ge=1, le=1000)
    worker_poll_seconds: float = Field(1.0, gt=0)
    max_attempts: int = Field(5, ge=1, le=100)
    retry_base_seconds: float = Field(2.0, ge=0)
    retry_max_seconds: float = Field(300.0, ge=0)
    ingest_claim: Literal["fair", "fifo"] = Field(
        "fair", description="how workers take jobs: fair (across companies by their tier's ingestWeight, "
        "within a company interactive before bulk; docs/ingest-queue.md) or fifo (one queue by age, the baseline)")
    ingest_bulk_delay_seconds: float = Field(30.0, ge=0, le=86400, description="a bulk job (opsctl ingest, a POST of "
                                             "more than ingest_interactive_max_documents, an mbox) is due this long "
                                             "after it is queued: its company's interactive jobs queued meanwhile "
                                             "go first, later ones after it")
    ingest_interactive_max_documents: int = Field(1, ge=1, description="a POST of at most this many documents is "
                                                  "interactive, a larger one bulk (unless its Ingest-Priority header "
                                                  "says which)")
    metrics_queue_top_companies: int = Field(10, ge=0, le=1000, description="the queue gauges per company name "
                                             "these companies with most jobs waiting, the rest as `other`")

    # HTTP API
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    max_documents_per_request: int = Field(1000, ge=1, description="documents per POST /v1/documents, and "
                                           "messages per mbox (application/mbox) POST /v1/emails")
    max_text_chars: int = Field(2_000_000, ge=1)
    rate_limit_per_second: float = Field(100.0, gt=0, description="per tenant, per API process; charged only "
                                         "for authenticated requests (a valid key, a verified webhook)")
    rate_limit_burst: int = Field(200, ge=1)
    rate_limit_anonymous_per_second: float = Field(10.0, gt=0, description="requests failing authentication, per "
                                                   "client address, per API process")
    rate_limit_anonymous_burst: int = Field(100, ge=1)
    rate_limit_max_buckets: int = Field(10_000, ge=1, description="token buckets kept per limiter; the least "
                                        "recently used one goes first")
    compress_min_bytes: int = Field(1024, ge=0, description="answers (text, JSON, metrics) of at least this many "
                                    "bytes are compressed when the client's Accept-Encoding asks (README: HTTP API)")
    compress_encodings: list[Coding] = Field(
        default_factory=offered_codings, description="the codings offered, preferred first when the "
        "client weighs them alike; []: never compress; env: a JSON list")
    webhook_tolerance_seconds: int = Field(300, ge=1)
    search_max_k: int = Field(100, ge=1)
    tenants_policy: Path | None = Field(None, description="the tiers: policies/tenants.yaml (rate, burst and "
                                        "quotas per tier, docs/tenants.md); unset: one tier of rate_limit_per_second, "
                                        "rate_limit_burst and search_max_k, without quotas")
    keyword_bm25_k1: float = Field(1.2, ge=0, description="keyword search (BM25): how fast repeats of a word "
                                   "stop adding to a chunk's score (0: presence only)")
    keyword_bm25_b: float = Field(0.75, ge=0, le=1, description="keyword search (BM25): how much a chunk's "
                                  "length beyond the company's average lowers its score (0: none, 1: in full)")
    keyword_title_weight: float = Field(0.5, ge=0, description="keyword search: the weight of a document's title "
                                        "BM25 score added to its chunks' body score (0: the title is not searched)")
    search_per_document: bool = Field(True, description="one hit per document (its best chunk), documents ranked by "
                                      "their chunks' aggregated scores; off: hits are chunks (several per document)")
    search_aggregate: Literal["max", "sum", "max_bonus"] = Field("max", description="a document's score from its "
                                                                 "candidate chunks': the best, the sum, or the best "
                                                                 "plus `search_aggregate_bonus` times the rest")
    search_aggregate_bonus: float = Field(0.0, ge=0, description="`max_bonus`: the weight of a document's further "
                                          "matching chunks")
    search_fusion: Literal["rrf", "minmax", "zscore"] = Field(
        "minmax", description="hybrid search: how the keyword and vector rankings merge: the weighted sum of "
        "their scores scaled per list (min-max, z-score), or weighted reciprocal rank fusion (rrf)")
    search_fusion_keyword_weight: float = Field(0.5, ge=0, le=1, description="hybrid search: the keyword ranking's "
                                                "weight, the vector ranking's is the rest (rrf 0.5: plain RRF)")
    search_rrf_k: int = Field(60, ge=1, description="`rrf`: the constant c in 1 / (c + rank)")
    search_candidates: int = Field(100, ge=1, le=10_000, description="chunks each ranking reads when hits are per "
                                   "document (at least 3 k): a document's several chunks count once")
    vector_exact_max_rows: int = Field(10_000, ge=0, description="a company with at most this many chunks is "
                                       "searched exactly (every one of its chunks compared; recall 1.0); 0: never")

    # mail
    mail_group_by_subject: bool = Field(False, description="a message naming no other (no In-Reply-To, no "
                                        "References) joins the newest thread with its normalized subject; off: "
                                        "threads are what Message-IDs connect, nothing else")
    search_group_max_candidates: int = Field(2000, ge=10, description="`group_by: thread`: the most chunks read to "
                                             "find k threads (from 10 per thread wanted, growing 4x while short)")

    # usage (docs/tenants.md)
    usage_flush_seconds: float = Field(10.0, ge=0, description="how often each API and worker process adds its "
                                       "per-company usage counts to the database (one statement per flush, and one "
                                       "at stop; a process killed -9 loses at most this much); 0: at stop only")
    usage_metrics_top: int = Field(10, ge=1, le=1000, description="the Prometheus view of usage (core_tenant_*) names "
                                   "this many companies per metric, the rest summed as company=\"other\"")

    # cache
    search_cache_ttl_seconds: int = Field(300, ge=0, description="default; `opsctl cache apply` overrides it live")
    document_cache_ttl_seconds: int = Field(300, ge=0, description="document metadata; default, overridden live")
    auth_cache_ttl_seconds: int = Field(30, ge=0, description="API-key lookups; default, overridden live")
    redis_timeout_seconds: float = Field(0.25, gt=0)

    # database pool
    db_pool_min: int = Field(1, ge=0)
    db_pool_max: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunk_overlap must be smaller than chunk_size")
        if self.db_pool_min > self.db_pool_max:
            raise ValueError("db_pool_min must not exceed db_pool_max")
        if self.database_pool_mode == "transaction" and not (self.database_url and self.database_direct_url):
            raise ValueError("database_pool_mode transaction needs database_url (the pooler) and "
                             "database_direct_url (a session for LISTEN, advisory locks, DDL and backups)")
        return self

    @property
    def direct_url(self) -> str | None:
        """The URL for what needs a session of its own (see ``database_direct_url``)."""
        return self.database_direct_url or self.database_url

    @property
    def state_path(self) -> Path:
        return self.data_dir / STATE_FILE

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = (init_settings, env_settings, _FileSource(settings_cls))
        return (*sources, _StateSource(settings_cls)) if cls.include_state else sources


def _config_file_path() -> Path | None:
    """``OPSCTL_CONFIG`` (which must exist), else ``./opsctl.yaml`` if anything has that name: a
    FIFO or a directory there is refused by ``read_text`` rather than skipped or misnamed missing."""
    explicit = os.environ.get("OPSCTL_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.exists():
            raise ConfigError(f"config file {path} (OPSCTL_CONFIG) does not exist")
        return path
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.exists() else None


def _read_config_file() -> dict[str, Any]:
    path = _config_file_path()
    if path is None:
        return {}
    from core import safeyaml
    from core.files import FileProblem, read_text

    try:
        data = safeyaml.parse(read_text(path, MAX_CONFIG_BYTES, "a settings file"))[0] or {}
    except FileProblem as exc:
        where = f"{path}:{exc.line}" if exc.line else str(path)
        raise ConfigError(f"{where}: cannot read: {exc.reason}") from exc
    except yaml.YAMLError as exc:  # safeyaml.Refused included: too deep, an alias bomb, a repeated key
        where = f"{path}:{safeyaml.line_of(exc)}" if safeyaml.line_of(exc) else str(path)
        raise ConfigError(f"{where}: not a valid settings file: {getattr(exc, 'problem', None) or exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of setting names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


class _FileSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return _read_config_file()


class _StateSource(PydanticBaseSettingsSource):
    """Connection settings that a running ``opsctl up`` published in its data dir."""

    KEYS = ("database_url", "database_pool_mode", "database_direct_url", "database_replica_urls", "redis_url",
            "prometheus_url", "api_url", "admin_token")

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        data_dir = os.environ.get("OPSCTL_DATA_DIR") or self.current_state.get("data_dir") or DEFAULT_DATA_DIR
        state = read_state(Path(data_dir))
        return {k: v for k, v in state.items() if k in self.KEYS and v}


class OwnSettings(Settings):
    """Settings without the state file: what ``opsctl up`` itself starts from (it writes the state)."""

    include_state: ClassVar[bool] = False


def read_state(data_dir: Path) -> dict[str, Any]:
    path = data_dir / STATE_FILE
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable state file: {exc}") from exc


def write_state(data_dir: Path, state: dict[str, Any]) -> None:
    """Write the state file atomically, readable by its owner only (it holds the admin token)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh, indent=2, sort_keys=True)
    os.replace(tmp, path)


def load_settings(*, with_state: bool = True, **overrides: Any) -> Settings:
    """Build settings from all layers; ``overrides`` (CLI flags) win. ``None`` means "not given"."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given) if with_state else OwnSettings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        if not where:  # a rule across settings (_check): its own sentence names them
            raise ConfigError(f"invalid settings: {first.get('ctx', {}).get('error') or first['msg']}") from exc
        raise ConfigError(f"invalid setting {where}: {first['msg']}") from exc
