"""Slow queries (issue 15 §3): the policy's threshold applied to the server, the server's JSON log read
through SQL, statements grouped by their normalised text with count, total, p95 and the company; the
daemon job's counter behind the SlowQueriesRising alert.

The pure parts by tables; end to end against a real PostgreSQL of its own that runs the logging
collector with jsonlog (the shared test server does not, and ALTER SYSTEM is server-wide)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from opsctl.slowqueries.parse import (
    SlowStatement,
    company_of,
    group,
    log_time,
    normalise,
    parameters,
    parse_line,
    percentile,
)
from opsctl.slowqueries.pg import tail_reads, whole_lines
from opsctl.slowqueries.plan import SettingChange, plan_threshold
from tests.test_cli_output import run
from tests.waiting import wait_for

AT = datetime(2026, 11, 27, 5, 45, 1, 123000, tzinfo=UTC)


# -- pure -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("statement", "expected"), [
    ("SELECT * FROM documents WHERE company_id = $1 AND external_id = $2",
     "SELECT * FROM documents WHERE company_id = ? AND external_id = ?"),
    ("SELECT * FROM t WHERE company_id = 7 AND name = 'it''s' AND x > -1.5e3;",
     "SELECT * FROM t WHERE company_id = ? AND name = ? AND x > ?"),
    ("SELECT a FROM t1 WHERE id IN (1, 2, 3,4) AND b = ANY('{1,2}')",
     "SELECT a FROM t1 WHERE id IN (?, ...) AND b = ANY(?)"),
    ("SELECT  a\n  FROM t -- why\n WHERE /* multi\nline */ c = E'x\\n' AND d = $$raw 'q'$$",
     "SELECT a FROM t WHERE c = ? AND d = ?"),
    ("SELECT embedding <=> $1::vector(384) FROM chunks_2026_11 LIMIT 10",
     "SELECT embedding <=> ?::vector(?) FROM chunks_2026_11 LIMIT ?"),  # names keep their digits
    # comment markers inside strings are text, not comments (the statement's rest is kept)
    ("SELECT * FROM documents WHERE body LIKE '%--%' AND company_id = 5 AND id > 10",
     "SELECT * FROM documents WHERE body LIKE ? AND company_id = ? AND id > ?"),
    ("SELECT '/*', x FROM t WHERE y = 3 /* why */", "SELECT ?, x FROM t WHERE y = ?"),
    # quoted identifiers are names: their digits and quotes stay
    ('SELECT "col 5", "it\'s", "a""b" FROM t WHERE a = 1', 'SELECT "col 5", "it\'s", "a""b" FROM t WHERE a = ?'),
    # an escape string's backslash-escaped quote does not end it
    ("SELECT x FROM t WHERE a = E'\\'' AND b = 2", "SELECT x FROM t WHERE a = ? AND b = ?"),
])
def test_statements_are_normalised_so_that_other_values_fall_together(statement: str, expected: str) -> None:
    assert normalise(statement) == expected


@pytest.mark.parametrize(("detail", "expected"), [
    (None, {}),
    ("Parameters: $1 = '7', $2 = 'o''brien', $3 = NULL", {1: "7", 2: "o'brien", 3: None}),
    ("Parameters: $1 = 'a, $2 = b'", {1: "a, $2 = b"}),  # a value holding the separator
    ("some other detail", {}),
])
def test_logged_parameters_are_read(detail: str | None, expected: dict[int, str | None]) -> None:
    assert parameters(detail) == expected


@pytest.mark.parametrize(("statement", "params", "expected"), [
    ("SELECT 1 FROM documents WHERE company_id = $2 AND x = $1", {1: "9", 2: "7"}, 7),
    ("SELECT 1 FROM documents d WHERE d.company_id=42", {}, 42),
    ("SELECT 1 FROM documents WHERE company_id = '12'", {}, 12),
    ("SELECT 1 FROM documents WHERE company_id = $1", {1: None}, None),
    ("SELECT 1 FROM documents WHERE company_id = $1", {}, None),  # parameters not logged
    ("SELECT 1 FROM documents WHERE company_id = ANY($1)", {1: "{1,2}"}, None),
    ("SELECT pg_sleep(1)", {}, None),
])
def test_the_company_is_what_company_id_is_compared_with(statement: str, params: Any, expected: int | None) -> None:
    assert company_of(statement, params) == expected


LOG_WAIT = 60  # the collector writes the log asynchronously; the deadline only ends a failing test


def line(message: str, **extra: Any) -> str:
    return json.dumps({"timestamp": "2026-11-27 05:45:01.123 UTC", "user": "app", "dbname": "opsctl",
                       "application_name": "core-api", "error_severity": "LOG", "message": message, **extra})


@pytest.mark.parametrize(("text", "expected"), [
    (line("duration: 812.345 ms  statement: SELECT 1 WHERE company_id = 3"),
     SlowStatement(AT, 812.345, "SELECT 1 WHERE company_id = 3", 3, "opsctl", "app", "core-api")),
    (line("duration: 5.5 ms  execute <unnamed>: SELECT 1 WHERE company_id = $1", detail="Parameters: $1 = '8'"),
     SlowStatement(AT, 5.5, "SELECT 1 WHERE company_id = $1", 8, "opsctl", "app", "core-api")),
    (line("duration: 5 ms  execute S_1: SELECT 2"), SlowStatement(AT, 5.0, "SELECT 2", None, "opsctl", "app",
                                                                  "core-api")),
    (line("duration: 5.5 ms  parse <unnamed>: SELECT 1"), None),  # a step, not an execution
    (line("duration: 5.5 ms  bind <unnamed>: SELECT 1"), None),
    (line("duration: 5.5 ms"), None),  # log_duration without the statement
    (line("checkpoint starting: time"), None),
    ('{"timestamp": "2026-11-27 05:45:01.123 UTC", "message": "duration: 1', None),  # cut short
    ("[1, 2]", None),
    (line("duration: 5.5 ms  statement: SELECT 1").replace(" UTC", " CET"), None),  # a zone not read
])
def test_log_lines_are_parsed_exactly(text: str, expected: SlowStatement | None) -> None:
    assert parse_line(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-27 05:45:01.123 UTC", AT),
    ("2026-11-27 05:45:01.123 GMT", AT),
    ("2026-11-27 06:45:01.123 +01", AT),
    ("2026-11-27 00:15:01.123 -05:30", AT),
    ("2026-11-27 05:45:01 UTC", None),
    ("garbage", None),
])
def test_log_times_are_read_in_utc(text: str, expected: datetime | None) -> None:
    assert log_time(text) == expected


@pytest.mark.parametrize(("values", "p", "expected"), [
    ([5.0], 95, 5.0),
    ([float(i) for i in range(1, 21)], 95, 19.0),  # nearest rank: ceil(0.95 * 20) = 19th
    ([float(i) for i in range(1, 101)], 95, 95.0),
    ([3.0, 1.0, 2.0], 50, 2.0),
    ([1.0, 2.0], 100, 2.0),
])
def test_percentiles_are_nearest_rank(values: list[float], p: float, expected: float) -> None:
    assert percentile(values, p) == expected


def test_statements_group_by_normalised_text_by_total_time() -> None:
    def s(ms: float, statement: str, company: int | None = None, minutes: int = 0) -> SlowStatement:
        return SlowStatement(AT + timedelta(minutes=minutes), ms, statement, company)

    statements = [s(100, "SELECT * FROM documents WHERE company_id = $1", 1),
                  s(300, "SELECT * FROM documents WHERE company_id = $1", 2, minutes=5),
                  s(200, "SELECT * FROM documents  WHERE company_id = $1", 2),
                  s(700, "SELECT pg_sleep(0.7)"),
                  s(900, "SELECT pg_sleep(0.9)", minutes=-120)]  # before the window
    groups = group(statements, since=AT - timedelta(hours=1))
    assert [(g.query, len(g.durations), g.total_ms) for g in groups] == [
        ("SELECT pg_sleep(?)", 1, 700.0), ("SELECT * FROM documents WHERE company_id = ?", 3, 600.0)]
    docs = groups[1].as_dict({2: "globex"})
    assert docs == {"query": "SELECT * FROM documents WHERE company_id = ?", "count": 3, "total_ms": 600.0,
                    "p95_ms": 300.0, "max_ms": 300.0, "companies": ["globex", "1"],
                    "last_at": (AT + timedelta(minutes=5)).isoformat()}


@pytest.mark.parametrize(("current", "wanted", "changes", "readable"), [
    ({"log_min_duration_statement": "-1", "logging_collector": "on", "log_destination": "stderr,jsonlog"},
     {"log_min_duration_statement": "250"}, [SettingChange("log_min_duration_statement", "-1", "250")], True),
    ({"log_min_duration_statement": "250", "logging_collector": "on", "log_destination": "jsonlog"},
     {"log_min_duration_statement": "250"}, [], True),
    ({"log_min_duration_statement": "250", "logging_collector": "off", "log_destination": "stderr"},
     {"log_min_duration_statement": "250"}, [], False),
    ({"logging_collector": "on", "log_destination": "stderr,csvlog"},
     {"log_timezone": "UTC"}, [SettingChange("log_timezone", "(unset)", "UTC")], False),
])
def test_the_threshold_plan_names_each_change_and_whether_the_log_is_readable(
        current: dict[str, str], wanted: dict[str, str], changes: list[SettingChange], readable: bool) -> None:
    planned = plan_threshold(current, wanted)
    assert list(planned.changes) == changes and planned.readable is readable
    assert ("restart" in planned.sentence(False)) is (current["logging_collector"] == "off")


@pytest.mark.parametrize(("data", "from_start", "expected"), [
    (b'{"a": 1}\n{"b": 2}\n', True, ('{"a": 1}\n{"b": 2}\n', 18)),
    (b'{"a": 1}\n{"b": 2', True, ('{"a": 1}\n', 9)),  # a line being written waits for the next read
    (b'1}\n{"b": 2}\n', False, ('{"b": 2}\n', 12)),  # read from inside a line: its end skipped
    (b"no newline yet", True, ("", 0)),
])
def test_reads_take_whole_lines(data: bytes, from_start: bool, expected: tuple[str, int]) -> None:
    assert whole_lines(data, from_start) == expected


LOG = b'{"a": 1}\n{"b": 2}\n{"c": 3}\n'  # lines of 9 bytes


@pytest.mark.parametrize(("files", "budget", "reads"), [
    ([("f", 27)], 100, [("f", 0, 27, True)]),
    ([("f", 27)], 18, [("f", 8, 27, False)]),  # a byte before the cut tells whether a line starts there
    ([("f", 27)], 14, [("f", 12, 27, False)]),
    ([("old", 27), ("new", 27)], 36, [("new", 0, 27, True), ("old", 17, 27, False)]),  # newest first
    ([("old", 27), ("new", 27)], 27, [("new", 0, 27, True)]),
])
def test_the_newest_part_of_the_log_is_read(files: list[tuple[str, int]], budget: int,
                                            reads: list[tuple[str, int, int, bool]]) -> None:
    assert tail_reads(files, budget) == reads


@pytest.mark.parametrize(("budget", "lines"), [(18, ['{"b": 2}', '{"c": 3}']), (14, ['{"c": 3}']),
                                               (9, ['{"c": 3}']), (8, [])])
def test_a_line_that_begins_at_the_cut_is_kept(budget: int, lines: list[str]) -> None:
    [(_, start, end, from_line_start)] = tail_reads([("f", len(LOG))], budget)
    assert whole_lines(LOG[start:end], from_line_start)[0].splitlines() == lines


def test_the_policy_is_validated_with_its_line(tmp_path: Path) -> None:
    from opsctl.policy import validate_paths

    bad = tmp_path / "slow-queries.yaml"
    bad.write_text("kind: slow-queries\nthresholdMs: -5\n")
    _, problems = validate_paths([bad])
    assert [str(p) for p in problems] == [f"{bad}:2: thresholdMs: Input should be greater than or equal to 0"]
    _, problems = validate_paths([Path("policies/slow-queries.yaml")])
    assert problems == []


# -- a real server with the logging collector -------------------------------------------------------

@pytest.fixture(scope="module")
def logging_server() -> Iterator[Any]:
    from core.db import migrate
    from core.embedded import EmbeddedPostgres
    from opsctl.slowqueries.plan import SERVER_CONF
    from tests.conftest import make_settings, outside_pytest_tmp

    root = outside_pytest_tmp("opsctl-test-pglog-")  # the settings `opsctl up` gives its server
    server = EmbeddedPostgres(root / "pg", extra_conf=(*SERVER_CONF, "fsync = off"))
    server.start()
    migrate(server.url, make_settings())
    yield server
    server.stop(mode="immediate")
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def logged(logging_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setenv("OPSCTL_DATABASE_URL", logging_server.url)
    monkeypatch.setenv("OPSCTL_POLICY_DIR", str(tmp_path))
    (tmp_path / "slow-queries.yaml").write_text("kind: slow-queries\nthresholdMs: 40\nparameterMaxLength: 16\n")
    return logging_server


def slow_statements(url: str, companies: list[int]) -> None:
    """One statement per company over the 40 ms threshold (pg_sleep: at least 50 ms), through the
    extended protocol (the company in a parameter), and one with no company."""
    with psycopg.connect(url, autocommit=True) as conn:
        for company in companies:
            conn.execute("SELECT count(*), pg_sleep(0.05) FROM documents WHERE company_id = %s", (company,))
        conn.execute("SELECT pg_sleep(0.08)")




def test_slow_queries_end_to_end(logged: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from core.tenants import create_company

    with psycopg.connect(logged.url, autocommit=True) as conn:
        acme, globex = (create_company(conn, f"{name}-{time.monotonic_ns()}") for name in ("acme", "globex"))
        conn.execute("ALTER SYSTEM RESET log_min_duration_statement")
        conn.execute("SELECT pg_reload_conf()")

    code, out, err = run(capsys, "slow-queries", "threshold", "-o", "json")  # the plan: nothing changes
    plan = json.loads(out)
    assert code == 0 and plan["log_readable"] is True
    assert {c["setting"]: c["to"] for c in plan["changes"]}["log_min_duration_statement"] == "40"
    with psycopg.connect(logged.url) as conn:
        assert conn.execute("SHOW log_min_duration_statement").fetchone() == ("-1",)

    code, _, err = run(capsys, "slow-queries", "threshold", "--apply")
    assert code == 0 and "set log_min_duration_statement -1 -> 40" in err
    with psycopg.connect(logged.url) as conn:
        assert conn.execute("SHOW log_min_duration_statement").fetchone() == ("40ms",)
        event = conn.execute("SELECT action, to_state FROM ops_events ORDER BY id DESC LIMIT 1").fetchone()
    assert event is not None and event[0] == "slowqueries.threshold" and "log_min_duration_statement=40" in event[1]
    code, _, err = run(capsys, "slow-queries", "threshold", "--apply")
    assert code == 0 and "already logs" in err

    slow_statements(logged.url, [acme.company_id, acme.company_id, globex.company_id])

    def report() -> list[dict[str, Any]]:
        code, out, _ = run(capsys, "slow-queries", "--since", "10m", "-o", "json")
        assert code == 0
        rows = json.loads(out)
        docs = [r for r in rows if r["query"].startswith("SELECT count(*), pg_sleep(?) FROM documents")]
        return rows if docs and docs[0]["count"] >= 3 and any(r["query"] == "SELECT pg_sleep(?)" for r in rows) \
            else []

    rows = wait_for(report, LOG_WAIT, "the slow statements logged")
    docs = next(r for r in rows if r["query"] == "SELECT count(*), pg_sleep(?) FROM documents WHERE company_id = ?")
    assert docs["count"] == 3 and docs["total_ms"] >= 150 and docs["p95_ms"] >= 50
    assert docs["companies"] == [acme.name, globex.name]  # by executions, by name
    sleep = next(r for r in rows if r["query"] == "SELECT pg_sleep(?)")
    assert sleep["count"] >= 1 and sleep["companies"] == []
    assert [r["total_ms"] for r in rows] == sorted((r["total_ms"] for r in rows), reverse=True)

    code, out, _ = run(capsys, "slow-queries", "--since", "10m", "--top", "1")
    assert code == 0 and "QUERY" in out and "TOTAL MS" in out


def test_the_daemon_job_counts_new_slow_statements(logged: Any, tmp_path: Path) -> None:
    from prometheus_client import REGISTRY

    from opsctl.slowqueries import jobs
    from opsctl.slowqueries.pg import LogFollower
    from tests.conftest import make_settings

    jobs.FOLLOWER = LogFollower()  # a daemon started now
    settings = make_settings(database_url=logged.url)

    def counted() -> float:
        return REGISTRY.get_sample_value("opsctl_slow_queries_total") or 0.0

    first = jobs.job_slow_queries(settings, tmp_path)  # notes where the log ends: nothing counted
    assert "0 slow statements" in first, first
    before = counted()
    with psycopg.connect(logged.url, autocommit=True) as conn:
        for _ in range(3):
            conn.execute("SELECT pg_sleep(0.05), 'daemon-job-marker'")
    def three_marked() -> bool:
        jobs.job_slow_queries(settings, tmp_path)
        return counted() - before >= 3

    wait_for(three_marked, LOG_WAIT, "the marked statements logged")
    assert REGISTRY.get_sample_value("opsctl_slow_queries_threshold_ms") == 40.0
    # each statement once: runs after they were counted add only what was logged since (the job's
    # own statements are under the threshold)
    settled = counted()
    jobs.job_slow_queries(settings, tmp_path)
    assert counted() == settled


def test_without_the_collector_the_command_says_what_the_server_needs(
        db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OPSCTL_DATABASE_URL", db_url)
    code, out, err = run(capsys, "slow-queries", "--since", "1h")
    assert code == 1 and out == ""
    assert "logging_collector is off" in err and "restart" in err and len(err.strip().splitlines()) == 1


def test_a_missing_policy_is_a_config_error(db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OPSCTL_DATABASE_URL", db_url)
    monkeypatch.setenv("OPSCTL_POLICY_DIR", str(tmp_path))
    code, _, err = run(capsys, "slow-queries", "threshold")
    assert code == 2 and "slow-queries.yaml" in err


def test_a_platform_that_owns_the_settings_gets_a_drift_report_not_a_change(
        logged: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from opsctl.slowqueries import jobs
    from tests.conftest import make_settings

    (tmp_path / "slow-queries.yaml").write_text("kind: slow-queries\nthresholdMs: 1234\napply: external\n")
    code, _, err = run(capsys, "slow-queries", "threshold", "--apply")
    assert code == 1 and "apply: external" in err and "1234" in err
    with psycopg.connect(logged.url) as conn:
        assert conn.execute("SHOW log_min_duration_statement").fetchone() != ("1234ms",)
    said = jobs.job_slow_queries(make_settings(database_url=logged.url), tmp_path)  # does not fail the job
    assert "would set log_min_duration_statement" in said and "the platform sets them" in said
