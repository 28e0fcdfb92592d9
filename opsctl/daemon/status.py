"""``opsctl status``: one screen of what an on-call engineer checks first.

``fetch`` reads the database (``ops_log``: changes and decisions; queue, partitions, the leader
lock) and Prometheus when configured; ``read`` adds the search cache hit rate as every cache
command reports it; ``summarize`` (pure: rows and the clock in, a plain dict out) turns that into
the screen's data, including an ``attention`` list of what looks wrong; ``render`` draws it.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.partitioning import PARTITIONED_TABLES
from opsctl.partitions.plan import parse_bound
from opsctl.up.health import render_up, summarize_up

if TYPE_CHECKING:
    from core.config import Settings

NO_PROMETHEUS = "n/a (no Prometheus)"
_API = 'route=~"/v1/.*"'
PROMQL = {
    "p95_latency_seconds": f"histogram_quantile(0.95, sum by (job, le) "
                           f"(rate(core_http_request_duration_seconds_bucket{{{_API}}}[5m])))",
    "request_rate": f"sum by (job) (rate(core_http_request_duration_seconds_count{{{_API}}}[5m]))",
    "error_rate": f'sum by (job) (rate(core_http_request_duration_seconds_count{{{_API},status=~"5.."}}[5m]))',
}

LATEST_SQL = """
SELECT DISTINCT ON (target) target, at, from_state, to_state, reason, details
FROM ops_log WHERE action = %s ORDER BY target, at DESC, id DESC
"""
LAST_SQL = "SELECT at, details FROM ops_log WHERE action = %s ORDER BY at DESC, id DESC LIMIT 1"
# per remote repository, the newest backup copy verified there (opsctl.backup.repos.copy_offsite)
OFFSITE_SQL = ("SELECT DISTINCT ON (details->>'repo') details->>'repo', at FROM ops_log"
               " WHERE action = 'backup.copy' AND reason = 'verified' ORDER BY details->>'repo', at DESC, id DESC")
RELOAD_SQL = ("SELECT at, to_state, reason, target, details FROM ops_log WHERE action = 'daemon.reload'"
              " ORDER BY at DESC, id DESC LIMIT 1")
FAILURES_SQL = """
SELECT target, count(*) FROM ops_log
WHERE action = 'daemon.job' AND to_state = 'failed' AND at > now() - interval '24 hours' GROUP BY target
"""
PARTITIONS_SQL = """
SELECT parent.relname, child.relname, pg_get_expr(child.relpartbound, child.oid)
FROM pg_inherits i JOIN pg_class parent ON parent.oid = i.inhparent JOIN pg_class child ON child.oid = i.inhrelid
WHERE parent.relname = ANY(%s) ORDER BY 1, 2
"""


def fetch(conn: Any, prometheus_url: str | None, data_dir: Path | None = None) -> dict[str, Any]:
    """Everything ``summarize`` needs, as plain rows (``data_dir``: where ``opsctl up`` records its children)."""
    from psycopg import sql

    from core.metrics import queue_stats
    from opsctl.daemon.leader import lock_holder
    from opsctl.up.record import observe as observe_up

    def latest(action: str) -> list[dict[str, Any]]:
        return [{"target": r[0], "at": r[1], "from": r[2], "to": r[3], "reason": r[4], "details": r[5]}
                for r in conn.execute(LATEST_SQL, (action,)).fetchall()]

    def last(action: str) -> dict[str, Any] | None:
        row = conn.execute(LAST_SQL, (action,)).fetchone()
        return {"at": row[0], "details": row[1]} if row else None

    partitions = [{"table": r[0], "name": r[1], "bound": r[2]}
                  for r in conn.execute(PARTITIONS_SQL, (list(PARTITIONED_TABLES),)).fetchall()]
    default_rows = {}
    for part in partitions:
        if part["bound"] == "DEFAULT":
            # counted up to a cap: a default partition should be empty, and a huge one must not stall the screen
            row = conn.execute(sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} LIMIT 1000001) s").format(
                sql.Identifier(part["name"]))).fetchone()
            default_rows[part["table"]] = int(row[0]) if row else 0
    waiting, in_flight, oldest, dead = queue_stats(conn)
    reload = conn.execute(RELOAD_SQL).fetchone()
    return {
        "scale": latest("scale.decide"),
        "jobs": latest("daemon.job"),
        "job_failures_24h": dict(conn.execute(FAILURES_SQL).fetchall()),
        "backup": last("backup.create"),
        "offsite": [{"repo": r[0], "at": r[1]} for r in conn.execute(OFFSITE_SQL).fetchall()],
        "drill": last("restore.drill"),
        "recall": last("index.recall"),
        "spaces": spaces(conn),
        "partitions": partitions,
        "default_rows": default_rows,
        "queue": {"depth": waiting, "in_flight": in_flight, "oldest_pending_seconds": oldest, "dead": dead},
        "leader": lock_holder(conn),
        "reload": ({"at": reload[0], "to": reload[1], "reason": reload[2], "by": reload[3], "details": reload[4]}
                   if reload else None),
        "prometheus": fetch_prometheus(prometheus_url) if prometheus_url else None,
        "up": observe_up(data_dir) if data_dir is not None else None,
    }


def read(conn: Any, settings: Settings, policy_dir: Path, now: datetime) -> dict[str, Any]:
    """``fetch``, and the search cache hit rate exactly as `opsctl cache status` and the daemon's
    cache-policy job report it (``opsctl.cachepolicy.hitrate``: the policy's window and target)."""
    from opsctl.cachepolicy.hitrate import report_from_policy_dir

    raw = fetch(conn, settings.prometheus_url, settings.data_dir)
    raw["cache_hit_rate"] = report_from_policy_dir(settings, policy_dir, now)
    return raw


def fetch_prometheus(url: str) -> dict[str, Any]:
    """Each PROMQL value by job label (or ``_`` when unlabelled); ``{"error": …}`` if Prometheus fails."""
    import httpx

    out: dict[str, Any] = {}
    try:
        with httpx.Client(base_url=url, timeout=3) as client:
            for name, query in PROMQL.items():
                body = client.get("/api/v1/query", params={"query": query}).raise_for_status().json()
                out[name] = {r["metric"].get("job", "_"): float(r["value"][1]) for r in body["data"]["result"]}
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        return {"error": f"Prometheus at {url} failed: {exc}"}
    return out


def _number(value: float | None, digits: int = 3) -> float | None:
    if value is None or value != value or value in (float("inf"), float("-inf")):  # NaN: no traffic
        return None
    return round(value, digits)


def _rounded(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else value


def _age(at: datetime | None, now: datetime) -> float | None:
    return None if at is None else round((now - at).total_seconds(), 1)


def _int(text: Any) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _event(row: dict[str, Any] | None, now: datetime, **fields: str) -> dict[str, Any] | None:
    """An audit row as the screen shows it: when, how long ago, and ``fields`` (name → details key)."""
    if not row:
        return None
    details = row["details"] or {}
    return {"at": row["at"].isoformat(timespec="seconds"), "age_seconds": _age(row["at"], now),
            **{name: details.get(key) for name, key in fields.items()}}


def summarize(raw: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The status screen as a plain dict (pure)."""
    attention: list[str] = []
    prom = raw.get("prometheus")
    prom_error = prom.get("error") if isinstance(prom, dict) else None
    if prom_error:
        attention.append(prom_error)
    have_prom = isinstance(prom, dict) and not prom_error

    def metric(name: str, job: str) -> Any:
        if not have_prom:
            return NO_PROMETHEUS if prom is None else "n/a (Prometheus failed)"
        assert isinstance(prom, dict)
        return _number(prom.get(name, {}).get(job), 6)

    names = sorted({row["target"] for row in raw["scale"]} | {"core-api"})
    scale = {row["target"]: row for row in raw["scale"]}
    services = []
    for name in names:
        row = scale.get(name)
        p95 = metric("p95_latency_seconds", name)
        services.append({
            "service": name,
            "current": _int(row["from"]) if row else None,
            "desired": _int(row["to"]) if row else None,
            "decided_at": row["at"].isoformat(timespec="seconds") if row else None,
            "why": row["reason"] if row else None,
            "p95_latency_ms": round(p95 * 1000, 1) if isinstance(p95, float) else p95,
            "requests_per_second": _rounded(metric("request_rate", name)),
            "errors_per_second": _rounded(metric("error_rate", name)),
        })

    queue = dict(raw["queue"])
    queue["oldest_pending_seconds"] = round(float(queue["oldest_pending_seconds"]), 1)
    if queue.get("dead"):
        attention.append(f"{queue['dead']} ingest jobs are dead (exhausted their attempts)")

    backup = _event(raw.get("backup"), now, id="id", type="type", size_bytes="size")
    if backup is None:
        attention.append("no backup has been taken")

    drill = _event(raw.get("drill"), now, passed="passed", rto_seconds="rto_seconds", rpo_seconds="rpo_seconds")
    if drill is None:
        attention.append("no restore drill has run")
    elif drill["passed"] is False:
        attention.append("the last restore drill failed")

    partitions: dict[str, dict[str, Any]] = {}
    for table in sorted({p["table"] for p in raw["partitions"]} | set(raw["default_rows"])):
        ranges = [r for r in (parse_bound(p["bound"]) for p in raw["partitions"] if p["table"] == table) if r]
        ahead = sum(1 for start, _ in ranges if start > now)  # whole intervals still to come, any interval
        rows = raw["default_rows"].get(table, 0)
        partitions[table] = {"partitions": len(ranges), "premade_ahead": ahead, "default_rows": rows}
        if ahead == 0:
            attention.append(f"{table}: no partition premade after the current one")
        if rows:
            attention.append(f"{table}: {rows} rows in the default partition")

    recall = _event(raw.get("recall"), now)
    if recall is not None:
        details = raw["recall"]["details"] or {}
        recall["recall"] = details.get("recall", details)

    leader = raw.get("leader")
    if leader is None:
        attention.append("no daemon holds the leader lock: no scheduled job runs")
    reload = raw.get("reload")
    # a refusal with no set in force (a bad set at start): that replica enforces nothing
    enforcing = not reload or reload["to"] != "refused" or (reload.get("details") or {}).get("enforcing", True)
    policies = {"state": reload["to"], "at": reload["at"].isoformat(timespec="seconds"),
                "reason": reload["reason"], "enforcing": enforcing} if reload else None
    if reload and reload["to"] == "refused":
        attention.append(f"policy reload refused: {reload['reason']} ({reload['by']} keeps the previous policies)"
                         if enforcing else
                         f"policy files refused: {reload['reason']} ({reload['by']} has no valid set: it enforces "
                         "nothing and does not lead until they are fixed)")
    jobs = []
    failures = raw.get("job_failures_24h", {})
    for row in sorted(raw["jobs"], key=lambda r: r["target"] or ""):
        jobs.append({"job": row["target"], "last_run": row["at"].isoformat(timespec="seconds"),
                     "age_seconds": _age(row["at"], now), "outcome": row["to"], "result": row["reason"],
                     "failures_24h": int(failures.get(row["target"], 0))})
        if row["to"] == "failed":
            attention.append(f"job {row['target']} failed its last run: {row['reason']}")
    hit_rate = raw.get("cache_hit_rate")
    if hit_rate and hit_rate.get("policy_error"):
        attention.append(f"invalid policy file: {hit_rate['policy_error']}")
    up, up_attention = summarize_up(raw.get("up"), now)
    attention.extend(up_attention)

    return {
        "generated_at": now.isoformat(timespec="seconds"),
        "services": services,
        "cache_hit_rate": hit_rate,  # hitrate.report's dict (None: not read)
        "queue": queue,
        "backup": backup,
        "drill": drill,
        "partitions": partitions,
        "index_recall": recall,
        "vector_space": vector_space(raw.get("spaces"), now),
        "daemon": {"leader": leader["application_name"] if leader else None,
                   "leader_since": leader["backend_start"].isoformat(timespec="seconds") if leader else None,
                   "policies": policies, "jobs": jobs},
        "up": up,
        "attention": attention,
    }


def spaces(conn: Any) -> dict[str, Any]:
    """The active vector space and the one a re-embed builds (``core.spaces``), as plain rows."""
    from core.spaces.store import active, building

    found = building(conn)
    return {"active": active(conn).as_dict(), "building": found.as_dict() if found else None}


def vector_space(rows: dict[str, Any] | None, now: datetime) -> dict[str, Any] | None:
    """The active space's label and a re-embed's progress (pure)."""
    if not rows:
        return None
    from opsctl.reembed.plan import progress

    act, b = rows["active"], rows.get("building")
    out: dict[str, Any] = {"active": f"{act['name']} ({act['dim']}-d)", "building": None}
    if b:
        p = progress(b["chunks_done"], b["chunks_total"], datetime.fromisoformat(b["created_at"]), now)
        out["building"] = {"space": f"{b['name']} ({b['dim']}-d)", "chunks_done": p.done, "chunks_total": p.total,
                           "ratio": round(p.ratio, 4),
                           "eta_seconds": None if p.eta_seconds is None else round(p.eta_seconds, 1)}
    return out


def space_line(v: dict[str, Any]) -> str:
    """``vector_space``'s summary in one line."""
    b = v.get("building")
    if not b:
        return str(v["active"])
    eta = "" if b["eta_seconds"] is None else f", ~{b['eta_seconds']:.0f} s left"
    return (f"{v['active']}; re-embedding into {b['space']}: {b['ratio']:.0%} "
            f"({b['chunks_done']}/{b['chunks_total']} chunks{eta})")


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit} ago"
    return f"{seconds:.0f}s ago"


def _show(value: Any) -> str:
    return "-" if value is None else str(value)


NOT_MEASURED = "not measured yet (opsctl index status measures it)"


def _recall(r: dict[str, Any] | None) -> str:
    """The newest recall measurement (recall@k per index): the lowest, with its age."""
    if r is None:
        return NOT_MEASURED
    values = r["recall"]
    if isinstance(values, dict):
        measured = {name: v for name, v in values.items() if isinstance(v, int | float)}
        if not measured:
            return f"no index held rows to measure ({_ago(r['age_seconds'])})"
        low = min(measured.values())
        text = f"{round(low, 3)}" if len(measured) == 1 else f"{round(low, 3)} (lowest of {len(measured)} indexes)"
    else:
        text = _show(values)
    return f"{text}, {_ago(r['age_seconds'])}"


def _line(text: str) -> Any:
    """Free text in one table line, cut with "…" where the column ends."""
    from rich.text import Text

    return Text(text, no_wrap=True, overflow="ellipsis")


def render(data: dict[str, Any]) -> Any:
    """The summary as rich renderables (one screen). Free text (a decision's reason, a job's result)
    stays on one line, cut with "…" at the terminal's width: -o json has it whole."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from opsctl.output import timestamp

    parts: list[Any] = [Text(f"opsctl status at {timestamp(data['generated_at'])}", style="bold")]
    # a figure Prometheus could not give is "n/a" in its cell, and why once, under the table
    missing = sorted({v.removeprefix("n/a (").removesuffix(")") for s in data["services"]
                      for v in (s["p95_latency_ms"], s["requests_per_second"], s["errors_per_second"])
                      if isinstance(v, str)})

    def figure(value: Any) -> str:
        return "n/a" if isinstance(value, str) else _show(value)

    services = Table(title="services", title_justify="left", show_edge=False, header_style="bold",
                     caption=f"n/a: {'; '.join(missing)}" if missing else None, caption_justify="left")
    for col in ("SERVICE", "REPLICAS", "P95 MS", "REQ/S", "ERR/S", "LAST DECISION"):
        services.add_column(col)
    for s in data["services"]:
        replicas = f"{_show(s['current'])} → {_show(s['desired'])}" if s["current"] is not None else "-"
        services.add_row(s["service"], replicas, figure(s["p95_latency_ms"]), figure(s["requests_per_second"]),
                         figure(s["errors_per_second"]), _line(_show(s["why"])))
    parts.append(services)

    q = data["queue"]
    health = Table(title="data", title_justify="left", show_edge=False, show_header=False)
    health.add_column(style="bold")
    health.add_column()
    health.add_row("queue", f"{q['depth']} waiting, {q['in_flight']} in flight, oldest {q['oldest_pending_seconds']} s,"
                            f" {q['dead']} dead")
    health.add_row("search cache hit rate", data["cache_hit_rate"]["text"] if data["cache_hit_rate"] else "-")
    b = data["backup"]
    last_backup = f"{b['type'] or ''} {b['id'] or ''} {_ago(b['age_seconds'])}".strip() if b else "never"
    health.add_row("last backup", last_backup)
    d = data["drill"]
    health.add_row("last drill", (f"{'passed' if d['passed'] else 'FAILED'}, RTO {_show(d['rto_seconds'])} s, "
                                  f"{_ago(d['age_seconds'])}") if d else "never")
    for table, p in data["partitions"].items():
        health.add_row(f"partitions {table}", f"{p['premade_ahead']} premade ahead, "
                                              f"{p['default_rows']} rows in default")
    health.add_row("index recall", _recall(data["index_recall"]))
    if data.get("vector_space"):
        health.add_row("vector space", space_line(data["vector_space"]))
    parts.append(health)

    daemon = data["daemon"]
    jobs = Table(title=f"daemon: leader {daemon['leader'] or 'NONE'}", title_justify="left", show_edge=False,
                 header_style="bold")
    for col in ("JOB", "LAST RUN", "OUTCOME", "FAILED 24H", "RESULT"):
        jobs.add_column(col)
    for j in daemon["jobs"]:
        style = "red" if j["outcome"] == "failed" else None
        jobs.add_row(j["job"], _ago(j["age_seconds"]), Text(str(j["outcome"]), style=style or ""),
                     str(j["failures_24h"]), _line(_show(j["result"])))
    parts.append(jobs)
    if data.get("up"):
        parts.append(render_up(data["up"]))
    if data["attention"]:
        parts.append(Text("attention:\n" + "\n".join(f"  • {a}" for a in data["attention"]), style="yellow"))
    else:
        parts.append(Text("nothing needs attention", style="green"))
    return Group(*parts)
