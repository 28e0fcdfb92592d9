"""Metric source: instant PromQL queries (``GET /api/v1/query``) over httpx.

A metric that cannot be read is an error for that metric, never a zero (KEDA#3065): no data,
NaN, ±Inf, more than one series, a timeout or an unreachable server all become
``MetricSample(error=...)``, which the engine treats as "unknown" (blocks a scale-down, counts
toward the fallback when every metric fails). A value that reads fine but cannot be right (a
negative backlog) is passed on: the engine refuses it, so a replayed snapshot says the same.

``timeoutSeconds`` is one deadline for the whole read of a service's metrics, every query and
retry included: each request may use what is left of it (to connect, and for each read from the
socket), Prometheus is given it as the query's own ``timeout``, a 502/503/504 is retried once if
time is left, and a query that finds none left is not sent. A Prometheus that hangs costs the
deadline once (it cost 21.6 s against ``timeoutSeconds: 5`` when each query and retry had its own).
A server that trickles bytes can stretch one socket read past the deadline by at most the time
that was left when the request started.

Utilization reads two queries, each one series per pod (label ``podLabel``): usage and request,
joined with the target's pods (readiness, phase) into ``PodSample``s.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import httpx

from opsctl.scaling.policy import MetricSpec
from opsctl.scaling.snapshot import MetricSample, PodSample
from opsctl.scaling.targets import TargetState

RETRY_STATUSES = (502, 503, 504)
RETRY_PAUSE = 0.2  # seconds before the one retry, if the deadline leaves more than that


class QueryError(Exception):
    pass


class Deadline:
    """A moment on a monotonic clock, ``seconds`` after it was made."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._end = clock() + seconds

    def left(self) -> float:
        return self._end - self._clock()


class PrometheusSource:
    def __init__(self, url: str, timeout: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._clock = clock
        self._client = httpx.Client(follow_redirects=False)

    def close(self) -> None:
        self._client.close()

    def _exceeded(self, what: str) -> QueryError:
        return QueryError(f"prometheus: deadline exceeded: {what}")

    def _get(self, query: str, deadline: Deadline) -> httpx.Response:
        left = deadline.left()
        if left <= 0:
            raise self._exceeded(f"timeoutSeconds {self.timeout:g} was spent before this query "
                                 "(one deadline for all of a service's queries)")
        try:
            return self._client.get(f"{self.url}/api/v1/query", timeout=left,
                                    params={"query": query, "timeout": f"{left:.3f}"})
        except httpx.TimeoutException:
            raise self._exceeded(f"no answer within timeoutSeconds {self.timeout:g}") from None
        except httpx.HTTPError as exc:
            raise QueryError(f"prometheus: cannot reach {self.url} ({type(exc).__name__})") from exc

    def _query(self, query: str, deadline: Deadline) -> list[dict[str, Any]]:
        response = self._get(query, deadline)
        if response.status_code in RETRY_STATUSES and deadline.left() > RETRY_PAUSE:
            time.sleep(RETRY_PAUSE)
            response = self._get(query, deadline)
        return self._result(response)

    @staticmethod
    def _result(response: httpx.Response) -> list[dict[str, Any]]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
            if isinstance(body, dict) and "error" in body:
                detail = f"{body.get('errorType') or 'error'}: {body['error']}"
            else:
                detail = response.text[:200] or response.reason_phrase
            status = f"HTTP {response.status_code}: " if response.status_code != 200 else ""
            raise QueryError(f"prometheus: {status}{detail}"[:300])
        data = body.get("data")
        result = data.get("result") if isinstance(data, dict) else None
        if isinstance(data, dict) and data.get("resultType") == "scalar" and isinstance(result, list):
            return [{"metric": {}, "value": result}]
        if not isinstance(result, list) or not all(isinstance(r, dict) for r in result):
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

    def value(self, query: str, deadline: Deadline) -> float:
        """The single value of ``query``; anything else is a QueryError."""
        series = self._query(query, deadline)
        if not series:
            raise QueryError("prometheus: no data")
        if len(series) > 1:
            raise QueryError(f"prometheus: {len(series)} series, expected 1 (aggregate with sum() or max())")
        return self._number(series[0])

    def by_pod(self, query: str, label: str, deadline: Deadline) -> dict[str, float]:
        out: dict[str, float] = {}
        for sample in self._query(query, deadline):
            pod = sample.get("metric", {}).get(label)
            if pod is None:
                raise QueryError(f"prometheus: a series without the {label!r} label (use sum by ({label}) (...))")
            if pod in out:
                raise QueryError(f"prometheus: two series for pod {pod} (use sum by ({label}) (...))")
            out[pod] = self._number(sample)
        return out

    def sample(self, spec: MetricSpec, state: TargetState, deadline: Deadline) -> MetricSample:
        """One metric's reading for the engine (errors included, never raised)."""
        try:
            if spec.target.type != "Utilization":
                assert spec.query is not None
                return MetricSample(value=self.value(spec.query, deadline))
            if not state.pods:
                return MetricSample(error="the target reports no pods (Utilization needs a Kubernetes target)")
            assert spec.usageQuery is not None and spec.requestQuery is not None
            usage = self.by_pod(spec.usageQuery, spec.podLabel, deadline)
            requests = self.by_pod(spec.requestQuery, spec.podLabel, deadline)
            return MetricSample(pods=tuple(
                PodSample(request=requests.get(p.name), usage=usage.get(p.name), ready=p.ready, phase=p.phase,
                          deleting=p.deleting, name=p.name) for p in state.pods))
        except QueryError as exc:
            return MetricSample(error=str(exc))

    def read(self, specs: list[MetricSpec], state: TargetState) -> dict[str, MetricSample]:
        """Every metric of one service, within one deadline of ``timeout`` seconds."""
        deadline = Deadline(self.timeout, self._clock)
        return {spec.name: self.sample(spec, state, deadline) for spec in specs}
