"""Metrics of the live autoscaling loop (imported by the live path only: a snapshot replay stays light)."""

from __future__ import annotations

from prometheus_client import Counter

METRIC_ERRORS = Counter("opsctl_scale_metric_errors_total",
                        "Autoscaling metric reads that failed (no data, NaN, several series, Prometheus down)",
                        ["service", "metric"])
