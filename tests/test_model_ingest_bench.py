"""bench.model_ingest's arithmetic: where the workers' time went, and the two ratios (pure)."""

from __future__ import annotations

import pytest

from bench.model_ingest import SAMPLER, Alone, Gap, Report, Service, gap
from bench.profile import LOAD_PROCESS, OTHER_PROCESSES, WORKER_BACKENDS, WORKER_PROCESSES


@pytest.mark.parametrize(("metrics", "seconds", "workers", "expected"), [
    # 2 workers x 10 s: 16 s embedding, 2 s more in batches, 2 s without a batch
    ({"core_embed_seconds_sum": 16.0, "core_ingest_batch_seconds_sum": 18.0}, 10.0, 2, Gap(16.0, 2.0, 2.0)),
    # overlapped: the batches took less than their embedding (a group's COPY ran while the next embedded)
    ({"core_embed_seconds_sum": 18.0, "core_ingest_batch_seconds_sum": 17.5}, 10.0, 2, Gap(18.0, 0.0, 2.0)),
    ({}, 5.0, 1, Gap(0.0, 0.0, 5.0)),
])
def test_gap(metrics: dict[str, float], seconds: float, workers: int, expected: Gap) -> None:
    assert gap(metrics, seconds, workers) == expected


def test_gap_shares_sum_to_one() -> None:
    assert Gap(16.0, 2.0, 2.0).shares() == {"embedding": 0.8, "rest_of_batch": 0.1, "no_batch": 0.1}
    assert Gap(0.0, 0.0, 0.0).shares() == {"embedding": 0.0, "rest_of_batch": 0.0, "no_batch": 0.0}


def test_ratios_count_the_service_cpu_only() -> None:
    alone = [Alone(100, 5.0, 9.0, 2), Alone(100, 5.0, 11.0, 2)]  # 20 chunks/s, 10 chunks per CPU-second
    cpu = {WORKER_PROCESSES: 9.0, WORKER_BACKENDS: 1.5, OTHER_PROCESSES: 30.0, LOAD_PROCESS: 2.0, SAMPLER: 0.7}
    service = Service(100, 6.25, cpu, {}, {}, 2)  # 16 chunks/s on 10.5 CPU-seconds of its own
    report = Report({}, {}, 10, 100, alone, service)
    assert report.alone_rate == pytest.approx(20.0)
    assert report.ratio == pytest.approx(0.8)
    assert service.service_cpu_seconds == pytest.approx(10.5)
    assert report.cpu_ratio == pytest.approx(100 / 10.5 / 10)
