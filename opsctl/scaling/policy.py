"""The autoscaling policy (``policies/autoscaling.yaml``): HPA v2 field names, validated by pydantic.

An SRE can paste an HPA's ``spec`` (``minReplicas``, ``maxReplicas``, ``metrics``, ``behavior``)
and add what the HPA lacks: where the metric comes from (a PromQL ``query``), a ``tolerance``
per direction (and per metric), a ``fallback`` when metrics fail, and KEDA-style scale to zero
(``activation``, ``cooldownPeriod``). Omitted ``behavior`` fields take the Kubernetes v2
defaults, per direction and per field, exactly as the API server fills them in.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from opsctl.policy import PolicyModel

DEFAULT_TOLERANCE = 0.1
# a sane ceiling for replica counts (the HPA takes any int32; the local target runs processes)
MAX_REPLICAS = 10_000
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$")

# Kubernetes autoscaling/v2 defaults (pkg/apis/autoscaling/v2/defaults.go)
DEFAULT_SCALE_UP: dict[str, Any] = {
    "stabilizationWindowSeconds": 0, "selectPolicy": "Max",
    "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15},
                 {"type": "Percent", "value": 100, "periodSeconds": 15}],
}
DEFAULT_SCALE_DOWN: dict[str, Any] = {
    "stabilizationWindowSeconds": 300, "selectPolicy": "Max",
    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
}


class Tolerance(PolicyModel):
    """The band around ratio 1 inside which nothing changes: ``1 - scaleDown <= ratio <= 1 + scaleUp``."""

    scaleUp: float = Field(DEFAULT_TOLERANCE, ge=0, le=100)
    scaleDown: float = Field(DEFAULT_TOLERANCE, ge=0, lt=1)

    def within(self, ratio: float) -> bool:
        return (1.0 - self.scaleDown) <= ratio <= (1.0 + self.scaleUp)

    def describe(self) -> str:
        if self.scaleUp == self.scaleDown:
            return f"±{self.scaleUp:g}"
        return f"+{self.scaleUp:g}/-{self.scaleDown:g}"


def _tolerance_shorthand(data: Any) -> Any:
    """``tolerance: 0.1`` means the same tolerance in both directions."""
    if isinstance(data, dict):
        value = data.get("tolerance")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return {**data, "tolerance": {"scaleUp": value, "scaleDown": value}}
    return data


class MetricTarget(PolicyModel):
    type: Literal["Value", "AverageValue", "Utilization"]
    value: float | None = Field(None, gt=0)
    averageValue: float | None = Field(None, gt=0)
    averageUtilization: int | None = Field(None, gt=0, le=10_000)  # percent of the request

    FIELD_OF: ClassVar[dict[str, str]] = {"Value": "value", "AverageValue": "averageValue",
                                          "Utilization": "averageUtilization"}

    @model_validator(mode="after")
    def _one_value(self) -> MetricTarget:
        wanted = self.FIELD_OF[self.type]
        given = [name for name in self.FIELD_OF.values() if getattr(self, name) is not None]
        if wanted not in given:
            raise ValueError(f"type {self.type} needs {wanted}")
        others = [name for name in given if name != wanted]
        if others:
            raise ValueError(f"type {self.type} takes {wanted}, not {', '.join(others)}")
        return self

    @property
    def amount(self) -> float:
        """The target number: a value, a value per replica, or a utilization percent."""
        found = getattr(self, self.FIELD_OF[self.type])
        assert found is not None
        return float(found)


class MetricSpec(PolicyModel):
    """One metric: a PromQL query (or per-pod usage and request queries for Utilization) and its target."""

    name: str
    query: str | None = None
    usageQuery: str | None = None  # Utilization: one series per pod, label `podLabel`
    requestQuery: str | None = None  # Utilization: one series per pod, label `podLabel`
    podLabel: str = "pod"
    target: MetricTarget
    tolerance: Tolerance | None = None  # opsctl extension: overrides the service's tolerance

    _shorthand = model_validator(mode="before")(_tolerance_shorthand)

    @model_validator(mode="after")
    def _queries(self) -> MetricSpec:
        if not NAME_RE.match(self.name):
            raise ValueError(f"name {self.name!r}: use lowercase letters, digits, '-' and '_'")
        if self.target.type == "Utilization":
            if self.query is not None:
                raise ValueError("Utilization compares per-pod usage with per-pod requests: "
                                 "give usageQuery and requestQuery (one series per pod), not query")
            missing = [q for q in ("usageQuery", "requestQuery") if getattr(self, q) is None]
            if missing:
                raise ValueError(f"Utilization needs per-pod {' and '.join(missing)} "
                                 f"(one series per pod, labelled {self.podLabel!r})")
        else:
            if self.query is None:
                raise ValueError(f"type {self.target.type} needs a query")
            extra = [q for q in ("usageQuery", "requestQuery") if getattr(self, q) is not None]
            if extra:
                raise ValueError(f"{' and '.join(extra)} only apply to type Utilization")
        return self


class ScalingPolicy(PolicyModel):
    type: Literal["Pods", "Percent"]
    value: int = Field(gt=0, le=MAX_REPLICAS)  # pods, or percent
    periodSeconds: int = Field(gt=0, le=1800)

    def describe(self, direction: str) -> str:
        unit = "%" if self.type == "Percent" else ""
        return f"{direction} {self.type} policy {self.value}{unit}/{self.periodSeconds}s"


class ScalingRules(PolicyModel):
    stabilizationWindowSeconds: int = Field(ge=0, le=3600)
    selectPolicy: Literal["Max", "Min", "Disabled"] = "Max"
    policies: list[ScalingPolicy]

    @model_validator(mode="after")
    def _policies(self) -> ScalingRules:
        if not self.policies and self.selectPolicy != "Disabled":
            raise ValueError("policies must not be empty unless selectPolicy is Disabled")
        return self


class Behavior(PolicyModel):
    scaleUp: ScalingRules = Field(default_factory=lambda: ScalingRules.model_validate(DEFAULT_SCALE_UP))
    scaleDown: ScalingRules = Field(default_factory=lambda: ScalingRules.model_validate(DEFAULT_SCALE_DOWN))

    @model_validator(mode="before")
    @classmethod
    def _defaults_per_field(cls, data: Any) -> Any:
        """Like the API server: each omitted field of each direction takes that direction's default."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for key, defaults in (("scaleUp", DEFAULT_SCALE_UP), ("scaleDown", DEFAULT_SCALE_DOWN)):
            given = out.get(key)
            if given is None:
                out[key] = defaults
            elif isinstance(given, dict):
                out[key] = {**defaults, **given}
        return out


class Fallback(PolicyModel):
    """What to do when every metric of a service fails (Prometheus down, no data)."""

    failureThreshold: int = Field(3, ge=1, le=1000)
    behavior: Literal["hold", "static"] = "hold"
    replicas: int | None = Field(None, ge=0, le=MAX_REPLICAS)

    @model_validator(mode="after")
    def _replicas(self) -> Fallback:
        if self.behavior == "static" and self.replicas is None:
            raise ValueError("behavior static needs replicas")
        if self.behavior == "hold" and self.replicas is not None:
            raise ValueError("replicas only applies to behavior static")
        return self


class Activation(PolicyModel):
    """Scale to zero: the service is active while ``metric`` > ``threshold`` (KEDA's activation)."""

    metric: str
    threshold: float = Field(0.0, ge=0)


class Target(PolicyModel):
    kind: Literal["local", "Deployment", "StatefulSet"]
    url: str | None = None  # local: the core API (default: the running system's)
    name: str | None = None
    namespace: str = "default"
    context: str | None = None

    @model_validator(mode="after")
    def _fields(self) -> Target:
        if self.kind == "local":
            if self.name is not None or self.context is not None:
                raise ValueError("a local target takes url only")
        else:
            if not self.name:
                raise ValueError(f"a {self.kind} target needs name")
            if self.url is not None:
                raise ValueError(f"a {self.kind} target takes name, namespace and context, not url")
        return self

    def describe(self) -> str:
        if self.kind == "local":
            return f"local {self.url or '(running system)'}"
        return f"{self.kind} {self.namespace}/{self.name}"


class ServicePolicy(PolicyModel):
    target: Target
    minReplicas: int = Field(1, ge=0, le=MAX_REPLICAS)
    maxReplicas: int = Field(ge=1, le=MAX_REPLICAS)
    tolerance: Tolerance = Field(default_factory=lambda: Tolerance.model_validate({}))
    metrics: list[MetricSpec] = Field(min_length=1)
    behavior: Behavior = Field(default_factory=Behavior)
    fallback: Fallback = Field(default_factory=lambda: Fallback.model_validate({}))
    activation: Activation | None = None
    cooldownPeriod: int = Field(300, ge=0, le=7 * 86400)
    paused: bool = False

    _shorthand = model_validator(mode="before")(_tolerance_shorthand)

    @model_validator(mode="after")
    def _cross_fields(self) -> ServicePolicy:
        if self.maxReplicas < self.minReplicas:
            raise ValueError(f"maxReplicas ({self.maxReplicas}) must be >= minReplicas ({self.minReplicas})")
        names = [m.name for m in self.metrics]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"metric names must be unique: {', '.join(duplicated)} repeated")
        if self.activation is not None:
            if self.minReplicas != 0:
                raise ValueError("activation only applies with minReplicas: 0 (scale to zero)")
            if self.activation.metric not in names:
                raise ValueError(f"activation.metric {self.activation.metric!r} is not one of the metrics "
                                 f"({', '.join(names)})")
        if self.fallback.behavior == "static":
            assert self.fallback.replicas is not None
            if not self.minReplicas <= self.fallback.replicas <= self.maxReplicas:
                raise ValueError(f"fallback.replicas ({self.fallback.replicas}) must be within "
                                 f"minReplicas..maxReplicas ({self.minReplicas}..{self.maxReplicas})")
        return self

    def tolerance_for(self, metric: MetricSpec) -> Tolerance:
        return metric.tolerance or self.tolerance


class PrometheusSource(PolicyModel):
    url: str | None = None  # default: OPSCTL_PROMETHEUS_URL / the running system's
    timeoutSeconds: float = Field(5.0, gt=0, le=120)


class AutoscalingPolicy(PolicyModel):
    prometheus: PrometheusSource = Field(default_factory=lambda: PrometheusSource.model_validate({}))
    services: dict[str, ServicePolicy]

    @model_validator(mode="after")
    def _names(self) -> AutoscalingPolicy:
        bad = [name for name in self.services if not NAME_RE.match(name)]
        if bad:
            raise ValueError(f"service names must be lowercase letters, digits, '-' and '_': {', '.join(bad)}")
        return self

    def select(self, names: list[str] | None) -> dict[str, ServicePolicy]:
        """The services named (all when ``names`` is empty), or ConfigError naming the unknown ones."""
        from core.errors import ConfigError

        if not names:
            return dict(self.services)
        unknown = [n for n in names if n not in self.services]
        if unknown:
            raise ConfigError(f"no autoscaling policy for {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(self.services))})")
        return {n: self.services[n] for n in names}
