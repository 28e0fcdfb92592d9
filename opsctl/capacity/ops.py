"""The adapter of ``opsctl capacity``: reads the calibration, the policies and the settings, names the
source of each number, and calls the pure planner (``opsctl.capacity.plan``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

from core.errors import ConfigError
from opsctl.capacity import calibration as calibration_file
from opsctl.capacity.plan import GIB, TIB, Basis, CapacityPlan, Demand, Deployment, Sourced, plan

API_SERVICE, WORKER_SERVICE = "core-api", "core-worker"
DEFAULT_UTILIZATION = 0.7
# bench/locustfile.py: users 1 ingest : 3 search : 2 read, all with the same think time
MIX_SOURCE = "the Locust mix (bench/locustfile.py: 1 ingest : 3 search : 2 read users)"
SEARCH_SHARE, READ_SHARE = 3 / 6, 2 / 6


@dataclass(frozen=True)
class Hosts:
    """Sizes of one node of each tier: assumptions the user states with flags."""

    max_connections: int = 100
    db_cores: float = 64.0
    db_memory_gib: float = 256.0
    db_disk_tib: float = 16.0
    redis_memory_gib: float = 64.0
    max_connections_given: bool = False


class _Figures(NamedTuple):
    min: Sourced
    max: Sourced | None  # None: no maximum
    util: Sourced


def _service_figures(policy: Any, name: str, where: str) -> _Figures:
    """Min/max replicas and the target utilisation of a service in the autoscaling policy. Without
    ``core-api`` the policy is `opsctl up`'s: one API process; without ``core-worker``, no maximum."""
    svc = policy.services.get(name)
    if svc is None:
        why = f"{where} has no {name}" + (": `opsctl up` runs one API process" if name == API_SERVICE else "")
        return _Figures(Sourced(1, why), Sourced(1, why) if name == API_SERVICE else None,
                        Sourced(DEFAULT_UTILIZATION, f"assumption: the HPA's usual 70 % ({why})"))
    util = next((m for m in svc.metrics if m.target.type == "Utilization"), None)
    return _Figures(
        Sourced(svc.minReplicas, f"{where} {name} minReplicas"),
        Sourced(svc.maxReplicas, f"{where} {name} maxReplicas"),
        (Sourced(util.target.amount / 100, f"{where} {name} metric {util.name} averageUtilization")
         if util else Sourced(DEFAULT_UTILIZATION, f"assumption: the HPA's usual 70 % ({where} {name} "
                              "has no Utilization metric)")),
    )


def deployment(settings: Any, autoscaling: Any, autoscaling_where: str, cache: Any, cache_where: str,
               hosts: Hosts) -> Deployment:
    api = _service_figures(autoscaling, API_SERVICE, autoscaling_where)
    worker = _service_figures(autoscaling, WORKER_SERVICE, autoscaling_where)
    assumed = "assumption: one large host; state yours with"
    return Deployment(
        api_utilization=api.util, worker_utilization=worker.util,
        api_min_replicas=api.min, api_max_replicas=api.max,
        worker_min_replicas=worker.min, worker_max_replicas=worker.max,
        db_pool_max=Sourced(settings.db_pool_max, "setting db_pool_max (OPSCTL_DB_POOL_MAX; default 10)"),
        max_connections=Sourced(hosts.max_connections, "--max-connections" if hosts.max_connections_given
                                else "PostgreSQL's default max_connections (--max-connections)"),
        search_ttl_seconds=Sourced(cache.ttlSeconds.searchResults, f"{cache_where} ttlSeconds.searchResults"),
        document_ttl_seconds=Sourced(cache.ttlSeconds.documentMetadata, f"{cache_where} ttlSeconds.documentMetadata"),
        redis_maxmemory=Sourced(cache.redis.maxmemory_bytes, f"{cache_where} redis.maxmemory", "bytes"),
        search_share=Sourced(SEARCH_SHARE, MIX_SOURCE),
        read_share=Sourced(READ_SHARE, MIX_SOURCE),
        db_cores=Sourced(hosts.db_cores, f"{assumed} --db-cores"),
        db_memory=Sourced(hosts.db_memory_gib * GIB, f"{assumed} --db-memory", "bytes"),
        db_disk=Sourced(hosts.db_disk_tib * TIB, f"{assumed} --db-disk", "bytes"),
        redis_node_memory=Sourced(hosts.redis_memory_gib * GIB, f"{assumed} --redis-memory", "bytes"),
    )


def capacity(demand: Demand, hosts: Hosts, calibration_path: Path | None, autoscaling_path: Path | None,
             cache_path: Path | None, basis: Basis = "measured") -> CapacityPlan:
    """Read everything ``plan`` needs and call it."""
    from opsctl.cachepolicy.policy import CachePolicy
    from opsctl.context import settings
    from opsctl.policy import load, policy_dir
    from opsctl.scaling.policy import AutoscalingPolicy

    cal_path = calibration_path or calibration_file.default_path(policy_dir())
    cal = calibration_file.load(cal_path)
    autoscaling_where = str(autoscaling_path or policy_dir() / "autoscaling.yaml")
    autoscaling = load(AutoscalingPolicy, "autoscaling", autoscaling_path)
    cache_where = str(cache_path or policy_dir() / "cache.yaml")
    cache = load(CachePolicy, "cache", cache_path)
    given = deployment(settings(), autoscaling, autoscaling_where, cache, cache_where, hosts)
    try:
        return plan(demand, given, cal, str(cal_path), basis)
    except ValueError as exc:
        raise ConfigError(f"{cal_path}: {exc}") from exc


def as_data(demand: Demand, result: CapacityPlan) -> dict[str, Any]:
    """The plan as JSON/YAML carries it."""
    first = result.breaks_first
    return {
        "demand": asdict(demand),
        "plan": [{"tier": line.tier, "item": line.item, "value": line.value, "unit": line.unit, "how": line.how}
                 for line in result.lines],
        "limits": [{"tier": lim.tier, "what": lim.what, "need": lim.need, "limit": lim.limit, "unit": lim.unit,
                    "ratio": round(lim.ratio, 3), "breaks": lim.breaks, "kind": lim.kind, "advice": lim.advice}
                   for lim in result.limits],
        "breaks_first": first.what if first else None,
        "notes": result.notes,
        "assumptions": [{"name": name, "value": s.value, "unit": s.unit, "source": s.source}
                        for name, s in result.assumptions],
    }
