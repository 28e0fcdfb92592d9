"""The API's metrics as a reader sees them: series that exist from the start, counts shown whole."""

from __future__ import annotations

import subprocess
import sys

import pytest

from opsctl.cachepolicy.plan import SearchHitRate, hit_rate_report
from tests.conftest import project_root

CACHE_COUNTERS = ("core_search_cache_requests_total", "core_document_cache_requests_total",
                  "core_auth_cache_requests_total")


def test_the_cache_counters_exist_at_zero_when_the_api_process_starts() -> None:
    """Prometheus' increase() needs a sample before the first lookup: a series born at 1 loses it."""
    code = ("import core.api; from prometheus_client import REGISTRY, generate_latest; "
            "print(generate_latest(REGISTRY).decode())")
    exposition = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                cwd=project_root()).stdout
    for counter in CACHE_COUNTERS:
        for result in ("hit", "miss", "error"):
            assert f'{counter}{{result="{result}"}} 0.0' in exposition.splitlines(), (counter, result)


@pytest.mark.parametrize(("measured", "counts", "about"), [
    # increase() extrapolates to the window's edges: fractions, shown as the whole numbers they estimate
    (SearchHitRate("prometheus", 5.09, 12.22, 0.5, 300), (5, 12, 0), "estimates"),
    (SearchHitRate("api", 6, 15, 1), (6, 15, 1), "exact"),
    (SearchHitRate("none", error="no Prometheus and no API"), (0, 0, 0), None),
])
def test_hit_rate_counts_are_whole_and_say_where_they_come_from(measured: SearchHitRate,
                                                                 counts: tuple[int, int, int],
                                                                 about: str | None) -> None:
    report = hit_rate_report(measured, 0.5)
    shown = (report["hits"], report["misses"], report["errors"])
    assert shown == counts and all(type(n) is int for n in shown)
    if about is None:
        assert report["counts"] is None
    else:
        assert report["counts"].startswith(about)
    if measured.source == "prometheus":
        assert "increase()" in report["counts"]
