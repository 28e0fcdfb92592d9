"""The closed loop's logic, by tables: a recording as a Run (summarized like a replay), the agreement
of real and simulated figures, and a trace exported from a recording read back as it was."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from opsctl.simulate import trace
from opsctl.simulate.model import Model, SimulationError, Trace
from opsctl.simulate.observed import (
    Row,
    agreement,
    observed_run,
    observed_summary,
    saturated_throughput,
    startup_seconds,
)
from opsctl.simulate.summary import Summary, summarize


def rows(desired: list[int], ready: list[int], demand: list[float], backlog: list[float] | None = None) -> list[Row]:
    backlog = backlog or [0.0] * len(desired)
    return [Row(float(i), d, c, r, b) for i, (d, c, r, b) in enumerate(zip(demand, desired, ready, backlog,
                                                                          strict=True))]


@pytest.mark.parametrize("desired, ready, demand, minutes, to_capacity, events", [
    # one replica for a minute, no shortfall
    ([1] * 60, [1] * 60, [5.0] * 60, 1.0, 0.0, ()),
    # demand 30/s at 10/s per replica: 3 s short with 1 ready, 2 with 2 ready, then enough (3 ready);
    # desired 3 from t=1: replicas starting are paid
    ([1, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3], [1, 1, 1, 2, 2, 3, 3, 3, 3, 3, 3, 3], [30.0] * 12,
     round((1 + 3 * 11) / 60, 4), 5.0, ((1.0, 2),)),
    # a scale-up then a scale-down: two events, the shortfall stretches counted apart (longest 2 s)
    ([1, 2, 2, 2, 1, 1], [1, 1, 2, 2, 1, 1], [15.0, 15.0, 15.0, 0.0, 15.0, 15.0], round(9 / 60, 4), 2.0,
     ((1.0, 1), (4.0, -1))),
])
def test_a_recording_is_summarized_like_a_replay(desired: list[int], ready: list[int], demand: list[float],
                                                 minutes: float, to_capacity: float,
                                                 events: tuple[tuple[float, int], ...]) -> None:
    model = Model(capacity=10.0, sync=5)
    run = observed_run(rows(desired, ready, demand), model)
    summary = summarize(run, model, 30)
    assert summary.replica_minutes == minutes
    assert summary.time_to_capacity_seconds == to_capacity
    assert run.scale_events == events
    assert [p.t for p in run.timeline] == [float(t) for t in range(0, len(desired), 5)]
    # the chart draws the recording's ready (running) replicas and the ones set, as a replay's
    assert [(p.desired_replicas, p.ready_replicas) for p in run.timeline] == list(zip(desired, ready, strict=True))[::5]


def test_a_recording_with_a_missing_second_is_refused() -> None:
    broken = [Row(0.0, 1.0, 1, 1, 0.0), Row(2.0, 1.0, 1, 1, 0.0)]
    with pytest.raises(SimulationError, match="row 1 is at t=2"):
        observed_run(broken, Model(capacity=1.0))


def summary(minutes: float, to_capacity: float) -> Summary:
    return Summary(minutes, 0.0, None, 0.0, 0, 0, to_capacity)


@pytest.mark.parametrize("real, simulated, expected", [
    (summary(10, 60), summary(10, 60), [(0.0, True), (0.0, True)]),
    (summary(10, 60), summary(11.9, 49), [(0.19, True), (0.1833, True)]),
    (summary(10, 60), summary(12.5, 80), [(0.25, False), (0.3333, False)]),
    (summary(10, 60), summary(8, 72), [(0.2, True), (0.2, True)]),  # exactly 20 %: within
    (summary(10, 0), summary(10, 0), [(0.0, True), (0.0, True)]),  # never short, in both: agree
    (summary(10, 0), summary(10, 15), [(0.0, True), (None, False)]),  # short only in the model: no ratio
])
def test_agreement_is_the_relative_error_within_the_tolerance(real: Summary, simulated: Summary,
                                                              expected: list[tuple[float | None, bool]]) -> None:
    got = agreement(real, simulated, 0.2)
    assert [f.name for f in got] == ["replica_minutes", "time_to_capacity_seconds"]
    assert [(f.relative_error, f.within) for f in got] == expected


@pytest.mark.parametrize("exported", [
    Trace((0.0, 1.0, 2.0), (0.0, 12.5, 1 / 3), 1.0),
    Trace((0.0, 5.0), (3.0, 4.0), 5.0, {"backlog": (None, 7.0)}),
    Trace((0.0, 1.0), (1.0, 2.0), 1.0, {}, datetime(2026, 11, 27, 3, 0, tzinfo=UTC)),
])
def test_an_exported_trace_reads_back_as_it_was(exported: Trace) -> None:
    back = trace.parse(trace.dump(exported), "exported.csv", exported.columns)
    assert back == exported


@pytest.mark.parametrize("served, backlog, short, longest", [
    # served less than the demand while work waited: short, whatever the model's capacity says
    ([20.0, 20.0, 30.0, 30.0], [0.0, 10.0, 20.0, 20.0], 1.0, 1.0),
    ([10.0, 10.0, 10.0, 40.0], [5.0, 25.0, 45.0, 35.0], 3.0, 3.0),
    # nothing waited: never short, even if little was served (there was little to serve)
    ([0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], 0.0, 0.0),
])
def test_the_real_shortfall_is_measured_from_what_was_served(served: list[float], backlog: list[float],
                                                             short: float, longest: float) -> None:
    model = Model(capacity=100.0)  # one replica would serve it all: the model alone would see no shortfall
    recorded = [Row(float(t), 30.0, 1, 1, b, s) for t, (s, b) in enumerate(zip(served, backlog, strict=True))]
    got = observed_summary(recorded, model, 30)
    assert (got.underprovisioned_seconds, got.time_to_capacity_seconds) == (short, longest)
    unmeasured = [dataclasses.replace(r, served=None) for r in recorded]
    assert observed_summary(unmeasured, model, 30).time_to_capacity_seconds == 0.0


def test_saturated_throughput_is_the_median_per_ready_count_while_work_waited() -> None:
    recorded = [Row(0.0, 0.0, 1, 1, 0.0, 5.0),  # nothing waited: not saturated
                Row(1.0, 0.0, 1, 1, 9.0, 28.0), Row(2.0, 0.0, 1, 1, 9.0, 30.0), Row(3.0, 0.0, 1, 1, 9.0, 31.0),
                Row(4.0, 0.0, 4, 2, 9.0, 34.0), Row(5.0, 0.0, 4, 4, 9.0, 40.0), Row(6.0, 0.0, 4, 4, 9.0, 42.0)]
    assert saturated_throughput(recorded) == {1: 30.0, 2: 34.0, 4: 41.0}


@pytest.mark.parametrize("desired, ready, expected", [
    ([1, 1, 1], [1, 1, 1], None),  # no scale-up: nothing to measure
    ([1, 3, 3, 3, 3], [1, 1, 2, 3, 3], 2.0),  # asked at t=1, all 3 running at t=3
    ([1, 2, 2, 4, 4, 4, 4], [1, 1, 2, 2, 2, 4, 4], 1.5),  # 1 s and 2 s: the median
    ([1, 2, 2], [1, 1, 1], None),  # never reached within the recording: not counted
])
def test_startup_is_the_median_wait_from_a_rise_to_the_ready_count(desired: list[int], ready: list[int],
                                                                   expected: float | None) -> None:
    assert startup_seconds(rows(desired, ready, [0.0] * len(desired))) == expected
