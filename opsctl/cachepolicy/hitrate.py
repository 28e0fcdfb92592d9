"""Reading the search cache hit rate: the one adapter behind ``opsctl status``, ``opsctl cache
status`` and the daemon's cache-policy job, so the three show the same figure.

What the hit rate is, and how it is shown, is pure (``plan.SearchHitRate``, ``plan.hit_rate_report``);
this module only reads the counter ``core_search_cache_requests_total{result}``: from Prometheus
over the policy's window when ``prometheus_url`` is set, else from the API's own ``/metrics``.
A source that fails, or a ``cache.yaml`` that cannot be loaded (``report_from_policy_dir``), gives a
hit rate that says why, never an exception: the rest of each screen still shows.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsctl.cachepolicy.plan import SearchHitRate, Source, bad_policy_report, hit_rate_report

if TYPE_CHECKING:
    from core.config import Settings
    from opsctl.cachepolicy.policy import CachePolicy

COUNTER = "core_search_cache_requests_total"
QUERY = "sum by (result) (increase(" + COUNTER + "[{window}s]))"
RESULTS = ("hit", "miss", "error")


def _tally(source: Source, pairs: Iterable[tuple[Any, Any]], window_seconds: int | None = None) -> SearchHitRate:
    """The hit rate from (result label, count) pairs."""
    out = dict.fromkeys(RESULTS, 0.0)
    for result, value in pairs:
        if result in out:
            out[result] += float(value)
    return SearchHitRate(source, out["hit"], out["miss"], out["error"], window_seconds)


def from_prometheus(url: str, window_seconds: int, at: datetime | None = None) -> SearchHitRate:
    """The counter's increase over ``window_seconds`` ending at ``at`` (default: Prometheus's now),
    summed across API replicas. Evaluating every reader at the same ``at`` gives the same figure."""
    import httpx

    params: dict[str, Any] = {"query": QUERY.format(window=window_seconds)}
    if at is not None:
        params["time"] = f"{at.timestamp():.3f}"
    try:
        response = httpx.get(f"{url.rstrip('/')}/api/v1/query", params=params, timeout=10)
        response.raise_for_status()
        samples = response.json()["data"]["result"]
        return _tally("prometheus", [(s["metric"].get("result"), s["value"][1]) for s in samples], window_seconds)
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        return SearchHitRate("prometheus", window_seconds=window_seconds,
                             error=f"Prometheus at {url} failed: {exc}")


def from_api(url: str) -> SearchHitRate:
    """The fallback without Prometheus: the counter's totals in the API's own ``/metrics``."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    try:
        response = httpx.get(f"{url.rstrip('/')}/metrics", timeout=10)
        response.raise_for_status()
        return _tally("api", [(sample.labels.get("result"), sample.value)
                              for family in text_string_to_metric_families(response.text)
                              for sample in family.samples if sample.name == COUNTER])
    except (httpx.HTTPError, ValueError) as exc:
        return SearchHitRate("api", error=f"the API's /metrics at {url} failed: {exc}")


def measure(settings: Settings, window_seconds: int, at: datetime | None = None) -> SearchHitRate:
    if settings.prometheus_url:
        return from_prometheus(settings.prometheus_url, window_seconds, at)
    if settings.api_url:
        return from_api(settings.api_url)
    return SearchHitRate("none", error="no Prometheus (OPSCTL_PROMETHEUS_URL) and no API (OPSCTL_API_URL) to read "
                                       "the counter from")


def report(settings: Settings, policy: CachePolicy, at: datetime | None = None) -> dict[str, Any]:
    """The search cache hit rate against the policy's target, over its window (``hit_rate_report``)."""
    return hit_rate_report(measure(settings, policy.hitRate.windowSeconds, at), policy.hitRate.target)


def report_from_policy_dir(settings: Settings, directory: Path, at: datetime | None = None) -> dict[str, Any]:
    """``report`` with ``<directory>/cache.yaml`` (its defaults when there is no such file). A file
    that cannot be loaded makes the hit rate unknown, naming the file and the reason
    (``policy_error``): `opsctl status` shows it, and everything else, instead of failing."""
    from opsctl.cachepolicy.policy import CachePolicy
    from opsctl.policy import PolicyError, load

    path = directory / "cache.yaml"
    try:
        policy = load(CachePolicy, "cache", path) if path.exists() else CachePolicy()
    except PolicyError as exc:
        return bad_policy_report(str(exc))
    except Exception as exc:  # whatever a hostile file makes the loader raise is that file's problem
        return bad_policy_report(f"{path}: cannot load: {type(exc).__name__}: {str(exc).partition(chr(10))[0]}")
    return report(settings, policy, at)
