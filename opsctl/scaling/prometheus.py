"""Metric source: instant PromQL queries through prometheus-api-client.

A metric that cannot be read is an error for that metric, never a zero (KEDA#3065): no data,
NaN, ±Inf, more than one series, a timeout or an unreachable server all become
``MetricSample(error=...)``, which the engine treats as "unknown" (blocks a scale-down, counts
toward the fallback when every metric fails).

Utilization reads two queries, each one series per pod (label ``podLabel``): usage and request,
joined with the target's pods (readiness, phase) into ``PodSample``s.
"""

from __future__ import annotations

import math
from typing import Any

from opsctl.scaling.policy import MetricSpec
from opsctl.scaling.snapshot import MetricSample, PodSample
from opsctl.scaling.targets import TargetState


class QueryError(Exception):
    pass


class PrometheusSource:
    def __init__(self, url: str, timeout: float = 5.0) -> None:
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        self.url = url.rstrip("/")
        self.timeout = timeout
        # one quick retry on a 502/503/504; a refused connection fails at once
        retry = Retry(total=1, connect=0, backoff_factor=0.2, status_forcelist=(502, 503, 504))
        self._client = PrometheusConnect(url=self.url, disable_ssl=True, retry=retry)

    def _query(self, query: str) -> list[dict[str, Any]]:
        import requests
        from prometheus_api_client.exceptions import PrometheusApiClientException

        try:
            result = self._client.custom_query(query, params={"timeout": f"{self.timeout:g}"}, timeout=self.timeout)
        except requests.Timeout:
            raise QueryError(f"prometheus: no answer within {self.timeout:g}s") from None
        except requests.RequestException as exc:
            raise QueryError(f"prometheus: cannot reach {self.url} ({type(exc).__name__})") from exc
        except PrometheusApiClientException as exc:
            raise QueryError(f"prometheus: {str(exc)[:300]}") from exc
        except ValueError as exc:
            raise QueryError(f"prometheus: unreadable answer ({exc})") from exc
        if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
            return [{"metric": {}, "value": result}]  # a scalar result
        if not isinstance(result, list):
            raise QueryError(f"prometheus: unexpected result {str(result)[:100]}")
        return result

    @staticmethod
    def _number(sample: dict[str, Any]) -> float:
        try:
            value = float(sample["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            raise QueryError("prometheus: a sample without a value (a range vector? use an instant query)") from None
        if math.isnan(value):
            raise QueryError("prometheus: NaN (e.g. a rate over no requests)")
        if math.isinf(value):
            raise QueryError("prometheus: infinite value")
        return value

    def value(self, query: str) -> float:
        """The single value of ``query``; anything else is a QueryError."""
        series = self._query(query)
        if not series:
            raise QueryError("prometheus: no data")
        if len(series) > 1:
            raise QueryError(f"prometheus: {len(series)} series, expected 1 (aggregate with sum() or max())")
        return self._number(series[0])

    def by_pod(self, query: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for sample in self._query(query):
            pod = sample.get("metric", {}).get(label)
            if pod is None:
                raise QueryError(f"prometheus: a series without the {label!r} label (use sum by ({label}) (...))")
            if pod in out:
                raise QueryError(f"prometheus: two series for pod {pod} (use sum by ({label}) (...))")
            out[pod] = self._number(sample)
        return out

    def sample(self, spec: MetricSpec, state: TargetState) -> MetricSample:
        """One metric's reading for the engine (errors included, never raised)."""
        try:
            if spec.target.type != "Utilization":
                assert spec.query is not None
                return MetricSample(value=self.value(spec.query))
            if not state.pods:
                return MetricSample(error="the target reports no pods (Utilization needs a Kubernetes target)")
            assert spec.usageQuery is not None and spec.requestQuery is not None
            usage = self.by_pod(spec.usageQuery, spec.podLabel)
            requests = self.by_pod(spec.requestQuery, spec.podLabel)
            return MetricSample(pods=tuple(
                PodSample(request=requests.get(p.name), usage=usage.get(p.name), ready=p.ready, phase=p.phase,
                          deleting=p.deleting, name=p.name) for p in state.pods))
        except QueryError as exc:
            return MetricSample(error=str(exc))

    def read(self, specs: list[MetricSpec], state: TargetState) -> dict[str, MetricSample]:
        return {spec.name: self.sample(spec, state) for spec in specs}
