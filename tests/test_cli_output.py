"""What the CLI prints reads as words, not as Python: yes/no, lists, one timestamp style, sizes in
MiB, UTF-8, plurals, usage errors that name the choices. JSON and YAML keep the data exact.

The real CLI runs in this process (``opsctl.cli.main``), against the real database and API."""

from __future__ import annotations

import json
import re
import shlex
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
import yaml

from opsctl.audit import record
from opsctl.output import Output, emit
from tests.conftest import RunningApi, drain
from tests.test_ingest_search import DOCS, ingest

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ"  # the one style of a moment in a table


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from opsctl.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def cells(out: str) -> list[list[str]]:
    """The cells of a printed table, row by row (the header first, the rule left out)."""
    return [[c.strip() for c in re.split("[│┃]", line)] for line in out.strip().splitlines() if "━" not in line]


@pytest.fixture
def database(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPSCTL_DATABASE_URL", db_url)
    return db_url


def test_a_table_reads_as_words_and_json_and_yaml_keep_the_data(capsys: pytest.CaptureFixture[str]) -> None:
    at = datetime(2026, 11, 26, 19, 3, 27, 512000, tzinfo=timezone(timedelta(hours=1)))
    row = {"name": "b1", "valid": True, "passed": False, "missing": ["daemon_runs:7", "ops_decisions:31"],
           "recall": {"idx_a": 0.97, "idx_b": 1.0}, "at": at, "iso": "2026-11-26T18:03:27+00:00",
           "day": "2026-11-26", "none": None}
    emit([row], Output.table)
    (header, line) = cells(capsys.readouterr().out)
    assert dict(zip(header, line, strict=True)) == {
        "NAME": "b1", "VALID": "yes", "PASSED": "no", "MISSING": "daemon_runs:7, ops_decisions:31",
        "RECALL": "idx_a: 0.97, idx_b: 1.0", "AT": "2026-11-26 18:03:27Z", "ISO": "2026-11-26 18:03:27Z",
        "DAY": "2026-11-26", "NONE": ""}
    emit([row], Output.json)
    data = json.loads(capsys.readouterr().out)
    assert data == [{"name": "b1", "valid": True, "passed": False, "missing": ["daemon_runs:7", "ops_decisions:31"],
                     "recall": {"idx_a": 0.97, "idx_b": 1.0}, "at": "2026-11-26T19:03:27.512000+01:00",
                     "iso": "2026-11-26T18:03:27+00:00", "day": "2026-11-26", "none": None}]
    emit([row], Output.yaml)
    assert yaml.safe_load(capsys.readouterr().out) == data


def test_an_unknown_output_format_is_a_usage_error_naming_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "runbook", "list", "-o", "xml")
    assert code == 2 and out == ""
    assert err.rstrip().splitlines()[-1] == (
        "Error: Invalid value for '--output' / '-o': 'xml' is not one of 'table', 'json', 'yaml'.")


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_json_and_yaml_are_utf8_text(capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    code, out, _ = run(capsys, "runbook", "list", "-o", fmt)
    assert code == 0
    assert "±Inf" in out and "\\xB1" not in out and "\\u00b1" not in out
    loaded = json.loads(out) if fmt == "json" else yaml.safe_load(out)
    assert any("±Inf" in book["fires_when"] for book in loaded)


@pytest.mark.parametrize("query", ["", "   "])
def test_a_blank_search_is_refused_before_any_request(capsys: pytest.CaptureFixture[str], query: str) -> None:
    # nothing listens on port 9: a request would fail with exit 1, not be refused with 2
    code, out, err = run(capsys, "search", query, "--api-url", "http://127.0.0.1:9", "--api-key", "k")
    assert code == 2 and out == ""
    assert "Invalid value for 'QUERY': the query is blank" in err


def test_search_says_1_result_and_tells_the_next_page(api: RunningApi, tenant: Any, db_url: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    ingest(api, tenant.api_key, DOCS)
    drain(api.settings, db_url)
    args = ("--api-url", api.url, "--api-key", tenant.api_key)
    code, out, _ = run(capsys, "search", "refunds", "-k", "1", "--mode", "keyword", *args)
    assert code == 0 and re.search(r"^\s*1 result \(", out, re.MULTILINE), out
    code, out, _ = run(capsys, "search", "zeppelin", "--mode", "keyword", *args)
    assert code == 0 and re.search(r"^\s*0 results \(", out, re.MULTILINE), out
    # more than a page: the table is followed by the next page's command, which walks on
    code, out, err = run(capsys, "search", "refunds parcels password", "-k", "2", "--mode", "keyword", *args)
    assert code == 0 and re.search(r"^\s*2 results \(", out, re.MULTILINE), out
    again = re.search(r"^next page: opsctl search (.+)$", err, re.MULTILINE)
    assert again, err
    code, out, err = run(capsys, "search", *shlex.split(again.group(1)), *args)
    assert code == 0 and re.search(r"^\s*1 result \(", out, re.MULTILINE), out
    assert "next page" not in err, "the walk is complete"
    code, _, err = run(capsys, "search", "other words", "--cursor", "AAAA", *args)
    assert code == 1 and "cursor" in err, err
    # a query that begins with '-' is told after '--', or the next page's command reads it as an option
    code, _, err = run(capsys, "search", *args, "-k", "2", "--mode", "keyword", "--", "-refunds parcels password")
    again = re.search(r"^next page: opsctl search (.+)$", err, re.MULTILINE)
    assert code == 0 and again, err
    code, out, err = run(capsys, "search", *args, *shlex.split(again.group(1)))
    assert code == 0 and re.search(r"^\s*1 result \(", out, re.MULTILINE), (out, err)


def test_index_status_shows_sizes_and_yes_no(database: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "index", "status")
    assert code == 0
    header, *rows = cells(out)
    assert rows and {"INDEX SIZE", "TABLE SIZE", "VALID"} <= set(header), out
    for row in rows:
        shown = dict(zip(header, row, strict=True))
        assert shown["VALID"] == "yes"
        assert re.fullmatch(r"\d+(\.\d)? (B|KiB|MiB|GiB)", shown["INDEX SIZE"]), shown
    code, out, _ = run(capsys, "index", "status", "-o", "json")
    first = json.loads(out)[0]
    assert first["valid"] is True and isinstance(first["index_bytes"], int)


def test_events_show_ids_and_utc_times(database: str, conn: psycopg.Connection[Any],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    backup = record(conn, "backup.create", target="db", reason="scheduled full")
    job = record(conn, "daemon.job", target="autoscale", to_state="ok", reason="held", change=False)
    code, out, err = run(capsys, "events")
    assert code == 0
    header, row = cells(out)
    shown = dict(zip(header, row, strict=True))
    assert shown["ID"] == str(backup) and re.fullmatch(STAMP, shown["WHEN"]), out
    assert err == "1 decision or job run not shown: add --all\n"
    code, out, _ = run(capsys, "events", "--all")
    assert [r[0] for r in cells(out)[1:]] == [str(backup), str(job)]
    code, out, _ = run(capsys, "events", "-o", "json")
    (event,) = json.loads(out)
    assert datetime.fromisoformat(event["at"]).utcoffset() == timedelta(0) and event["id"] == backup


def test_scale_explain_of_another_event_says_what_it_is(database: str, conn: psycopg.Connection[Any],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    job = record(conn, "daemon.job", target="autoscale", to_state="ok", reason="held", change=False)
    at = conn.execute("SELECT at FROM ops_log WHERE id = %s", (job,)).fetchone()[0]
    code, out, err = run(capsys, "scale", "explain", str(job))
    assert code == 1 and out == ""
    assert err == (f"error: event {job} is a daemon.job of autoscale at {at.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z, "
                   "not a scaling decision: `scale explain` replays scale.decide events (the ids of scaling "
                   "decisions: `opsctl events --all --action scale.decide`)\n")
    code, _, err = run(capsys, "scale", "explain", str(job + 1000))
    assert code == 1 and err.startswith(f"error: no scale.decide event {job + 1000}: no audit row has that id (the "
                                        "ids of scaling decisions: ")


def test_a_time_the_data_carries_as_iso_text_reads_the_same(database: str, tenant: Any,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "tenant", "list")
    header, row = cells(out)
    assert code == 0 and re.fullmatch(STAMP, dict(zip(header, row, strict=True))["CREATED"]), out
    code, out, _ = run(capsys, "tenant", "list", "-o", "json")
    assert datetime.fromisoformat(json.loads(out)[0]["created_at"]).tzinfo is not None
