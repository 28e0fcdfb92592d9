"""Metric source: instant PromQL queries (``GET /api/v1/query``) over httpx.

A metric that cannot be read is an error for that metric, never a zero (KEDA#3065): no data,
NaN, ±Inf, more than one series, a timeout or an unreachable server all become
``MetricSample(error=...)``, which the engine treats as "unknown" (blocks a scale-down, counts
toward the fallback when every metric fails). A value that reads fine but cannot be right (a
negative backlog) is passed on: the engine refuses it, so a replayed snapshot says the same.

``timeoutSeconds`` is one hard deadline for the whole read of a service's metrics, every query
and retry included. Each request runs under an asyncio timeout of what is left of it: resolving
the name, connecting, sending, the headers and the body, however slowly a server trickles them;
when it expires the request is cancelled and its connection closed. (A hanging Prometheus cost
21.6 s against ``timeoutSeconds: 5`` when each query and retry had its own timeout; one trickling a
byte every 0.5 s stretched a 1 s deadline to 6 s through the body and 18 s through the headers
when only each socket read had one.) Prometheus is given the time left as the query's own
``timeout``; a 502/503/504 is retried once if time is left; a query that finds none left is not
sent. An answer is read as it arrives and refused past :data:`MAX_ANSWER` bytes (decoded).

Utilization reads two queries, each one series per pod (label ``podLabel``): usage and request,
joined with the target's pods (readiness, phase) into ``PodSample``s. A pod whose usage is NaN or
±Inf has no usage (the engine counts it as a pod without a metric, as the HPA does); a request
that is not a number fails the metric.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from opsctl.scaling.policy import MetricSpec
from opsctl.scaling.snapshot import MetricSample, PodSample
from opsctl.scaling.targets import TargetState

RETRY_STATUSES = (502, 503, 504)
RETRY_PAUSE = 0.2  # seconds before the one retry, if the deadline leaves more than that
MAX_ANSWER = 10 << 20  # bytes of one answer, decoded: a per-pod query over thousands of pods is far below


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


@dataclass(frozen=True)
class _Answer:
    status: int
    reason: str
    body: bytes


class PrometheusSource:
    """Reads a service's metrics from the Prometheus at ``url``, within ``timeout`` seconds for them all."""

    def __init__(self, url: str, timeout: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._clock = clock

    def read(self, specs: list[MetricSpec], state: TargetState) -> dict[str, MetricSample]:
        """Every metric of one service, within one deadline of ``timeout`` seconds."""
        deadline = Deadline(self.timeout, self._clock)
        loop = asyncio.new_event_loop()  # its own loop and client: no state is left between reads
        try:
            return loop.run_until_complete(self._read(specs, state, deadline))
        finally:
            loop.close()  # a name lookup still running in the loop's thread pool is abandoned, not awaited

    async def _read(self, specs: list[MetricSpec], state: TargetState, deadline: Deadline) -> dict[str, MetricSample]:
        async with httpx.AsyncClient(follow_redirects=False) as client:
            reading = _Reading(self, client, deadline)
            return {spec.name: await reading.sample(spec, state) for spec in specs}


class _Reading:
    """One read of a service's metrics: the queries share a client and the deadline."""

    def __init__(self, source: PrometheusSource, client: httpx.AsyncClient, deadline: Deadline) -> None:
        self.source = source
        self.client = client
        self.deadline = deadline

    def _exceeded(self, what: str) -> QueryError:
        return QueryError(f"prometheus: deadline exceeded: {what}")

    async def _get(self, query: str) -> _Answer:
        timeout = self.source.timeout
        left = self.deadline.left()
        if left <= 0:
            raise self._exceeded(f"timeoutSeconds {timeout:g} was spent before this query "
                                 "(one deadline for all of a service's queries)")
        try:
            async with asyncio.timeout(left):
                return await self._fetch(query, left)
        except (TimeoutError, httpx.TimeoutException):
            raise self._exceeded(f"no answer within timeoutSeconds {timeout:g}") from None
        except httpx.HTTPError as exc:
            raise QueryError(f"prometheus: cannot reach {self.source.url} ({type(exc).__name__})") from exc

    async def _fetch(self, query: str, left: float) -> _Answer:
        """The answer, read as it arrives and refused past MAX_ANSWER bytes."""
        async with self.client.stream("GET", f"{self.source.url}/api/v1/query", timeout=left,
                                      params={"query": query, "timeout": f"{left:.3f}"}) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_ANSWER:
                    raise QueryError(f"prometheus: an answer of more than {MAX_ANSWER:,} bytes (aggregate the query)")
            return _Answer(response.status_code, response.reason_phrase, bytes(body))

    async def _query(self, query: str) -> list[dict[str, Any]]:
        answer = await self._get(query)
        if answer.status in RETRY_STATUSES and self.deadline.left() > RETRY_PAUSE:
            await asyncio.sleep(RETRY_PAUSE)
            answer = await self._get(query)
        return _result(answer)

    async def value(self, query: str) -> float:
        """The single value of ``query``; anything else is a QueryError."""
        series = await self._query(query)
        if not series:
            raise QueryError("prometheus: no data")
        if len(series) > 1:
            raise QueryError(f"prometheus: {len(series)} series, expected 1 (aggregate with sum() or max())")
        return _finite(_float(series[0]))

    async def by_pod(self, query: str, label: str) -> dict[str, float]:
        """Each pod's value (NaN and ±Inf included: the caller decides what they mean)."""
        out: dict[str, float] = {}
        for sample in await self._query(query):
            metric = sample.get("metric")
            pod = metric.get(label) if isinstance(metric, dict) else None
            if pod is None:
                raise QueryError(f"prometheus: a series without the {label!r} label (use sum by ({label}) (...))")
            if pod in out:
                raise QueryError(f"prometheus: two series for pod {pod} (use sum by ({label}) (...))")
            out[pod] = _float(sample)
        return out

    async def sample(self, spec: MetricSpec, state: TargetState) -> MetricSample:
        """One metric's reading for the engine (errors included, never raised)."""
        try:
            if spec.target.type != "Utilization":
                assert spec.query is not None
                return MetricSample(value=await self.value(spec.query))
            if not state.pods:
                return MetricSample(error="the target reports no pods (Utilization needs a Kubernetes target)")
            assert spec.usageQuery is not None and spec.requestQuery is not None
            usage = await self.by_pod(spec.usageQuery, spec.podLabel)
            requests = {pod: _finite(value) for pod, value in (await self.by_pod(spec.requestQuery,
                                                                                 spec.podLabel)).items()}
            return MetricSample(pods=tuple(
                PodSample(request=requests.get(p.name), usage=_usage(usage.get(p.name)), ready=p.ready,
                          phase=p.phase, deleting=p.deleting, name=p.name) for p in state.pods))
        except QueryError as exc:
            return MetricSample(error=str(exc))


def _result(answer: _Answer) -> list[dict[str, Any]]:
    try:
        body = json.loads(answer.body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past the parser's recursion
        body = None
    if answer.status != 200 or not isinstance(body, dict) or body.get("status") != "success":
        if isinstance(body, dict) and "error" in body:
            detail = f"{body.get('errorType') or 'error'}: {body['error']}"
        else:
            detail = answer.body[:200].decode("utf-8", "replace") or answer.reason
        status = f"HTTP {answer.status}: " if answer.status != 200 else ""
        raise QueryError(f"prometheus: {status}{detail}"[:300])
    data = body.get("data")
    result = data.get("result") if isinstance(data, dict) else None
    if isinstance(data, dict) and data.get("resultType") == "scalar" and isinstance(result, list):
        return [{"metric": {}, "value": result}]
    if not isinstance(result, list) or not all(isinstance(r, dict) for r in result):
        raise QueryError(f"prometheus: unexpected result {str(result)[:100]}")
    return result


def _float(sample: dict[str, Any]) -> float:
    try:
        return float(sample["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        raise QueryError("prometheus: a sample without a value (a range vector? use an instant query)") from None


def _finite(value: float) -> float:
    if math.isnan(value):
        raise QueryError("prometheus: NaN (e.g. a rate over no requests)")
    if math.isinf(value):
        raise QueryError("prometheus: infinite value")
    return value


def _usage(value: float | None) -> float | None:
    """A pod's usage; NaN or ±Inf is none (a pod without a metric), so a snapshot stays JSON."""
    return value if value is not None and math.isfinite(value) else None
