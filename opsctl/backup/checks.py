"""The restore drill's checks: the restored database against the source at the recovered point.

The source is read once, in one REPEATABLE READ snapshot taken after the restore (``read_source``):
every later source figure (expected rows, counts, the recorded search) comes from that snapshot, so
rows the source keeps writing during the checks never make the two sides disagree. A row version
the source still holds and whose transaction the point includes must be in the restored database,
with the same key and ``xmin``: nothing else can have replaced it by the point, since nothing has
replaced it since.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from opsctl.backup.point import AtPoint, Recovered, listed, recovered, xid_questions
from opsctl.backup.policy import BackupPolicy

Version = tuple[int, datetime | None, str | None]  # xmin, commit time, content digest (documents)
Rows = dict[str, Version]  # key → version


@dataclass
class Check:
    name: str
    passed: bool
    figure: str
    detail: str = ""


# --- reading both databases ---------------------------------------------------------------------

TABLES_SQL = ("SELECT c.relname, c.xmin::text::bigint, pg_xact_commit_timestamp(c.xmin) FROM pg_class c"
              " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'"
              " ORDER BY 1")


def leaf_tables(conn: Any) -> list[str]:
    return [r[0] for r in conn.execute(TABLES_SQL).fetchall()]


def primary_key(conn: Any, table: str) -> list[str]:
    rows = conn.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
        " WHERE i.indrelid = %s::regclass AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)",
        (f'public."{table}"',)).fetchall()
    return [r[0] for r in rows]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def row_versions(conn: Any, table: str, pk: list[str]) -> Rows:
    """key → (xmin, commit time, content digest) of every row."""
    key = "concat_ws('|', " + ", ".join(f"{_q(c)}::text" for c in pk) + ")"
    digest = "md5(concat_ws('|', title, body, metadata::text))" if table.startswith("documents") else "NULL"
    rows = conn.execute(f"SELECT {key}, xmin::text::bigint, pg_xact_commit_timestamp(xmin), {digest}"
                        f" FROM public.{_q(table)}").fetchall()
    return {r[0]: (int(r[1]), r[2], r[3]) for r in rows}


def xmin_counts(conn: Any, table: str) -> dict[int, tuple[int, datetime | None]]:
    """xmin → (rows, commit time) of a table without a primary key."""
    rows = conn.execute(f"SELECT xmin::text::bigint, pg_xact_commit_timestamp(xmin), count(*) FROM public.{_q(table)}"
                        " GROUP BY 1, 2").fetchall()
    return {int(r[0]): (int(r[2]), r[1]) for r in rows}


def recovered_in(restored: Any, xmins: set[int], next_full: int) -> Recovered:
    """Which of ``xmins`` (the source's) the restored server has as committed: ``pg_xact_status`` of
    each, asked before the restored server assigns any transaction id of its own (``next_full``)."""
    questions = xid_questions(xmins, next_full)
    ids = sorted(questions.ask)
    status: dict[int, str | None] = {}
    for i in range(0, len(ids), 50_000):
        status.update((int(r[0]), r[1]) for r in restored.execute(
            "SELECT x, pg_xact_status(x::text::xid8) FROM unnest(%s::bigint[]) x", (ids[i:i + 50_000],)).fetchall())
    return recovered(questions, status)


VECTOR_INDEXES_SQL = ("SELECT c.relname, i.indisvalid AND i.indisready FROM pg_index i"
                      " JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam"
                      " WHERE a.amname IN ('hnsw', 'ivfflat')")


@dataclass
class SourceView:
    """The source at the recovered point, as read in one snapshot."""

    point: AtPoint
    tables: dict[str, Version]  # table → (xmin, commit time) of its catalog row: the point includes its creation
    rows: dict[str, Rows]  # tables with a primary key
    counts: dict[str, dict[int, tuple[int, datetime | None]]]  # the others: rows per xmin
    vector_indexes: set[str]
    search: list[str]  # the recorded search's top 10 at the point

    def expected(self, table: str) -> Rows:
        return {k: v for k, v in self.rows.get(table, {}).items() if self.point.includes(v[0], v[1])}

    def expected_count(self, table: str) -> int:
        if table in self.rows:
            return len(self.expected(table))
        return sum(n for xmin, (n, at) in self.counts.get(table, {}).items() if self.point.includes(xmin, at))

    def tables_at_point(self) -> set[str]:
        return {t for t, (xmin, at, _) in self.tables.items() if self.point.includes(xmin, at)}


def read_source(source: Any, tables: list[str], keys: dict[str, list[str]], point_of: Callable[[set[int]], AtPoint],
                query: tuple[Any, Any] | None) -> SourceView:
    """Read the source in one REPEATABLE READ, READ ONLY snapshot: the tables the restored database
    has, their rows, the transactions at the point (``point_of`` asks the restored server about
    every xmin seen), the vector indexes, and the recorded search for ``query`` (company, vector)."""
    with source.transaction():
        source.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        catalog: dict[str, Version] = {r[0]: (int(r[1]), r[2], None) for r in source.execute(TABLES_SQL).fetchall()}
        both = [t for t in tables if t in catalog]
        rows = {t: row_versions(source, t, keys[t]) for t in both if keys.get(t)}
        counts = {t: xmin_counts(source, t) for t in both if not keys.get(t)}
        xmins = {v[0] for r in rows.values() for v in r.values()} | {x for c in counts.values() for x in c}
        point = point_of(xmins | {v[0] for v in catalog.values()})
        indexes = {r[0] for r in source.execute(VECTOR_INDEXES_SQL).fetchall()}
        search: list[str] = []
        if query is not None:
            after = sorted({str(v[0]) for t, r in rows.items() if t.startswith("chunks") for v in r.values()
                            if not point.includes(v[0], v[1])})
            # the last statement of the snapshot: an exact search sets planner options until it ends
            search = [key for key, _ in _top(source, query[1], 10, exact=True,
                                             where="WHERE company_id = %s AND NOT (xmin = ANY(%s::text[]::xid[]))",
                                             args=(query[0], after))]
    return SourceView(point, catalog, rows, counts, indexes, search)


# --- the checks ---------------------------------------------------------------------------------

def check_point_in_time(view: SourceView, restored: dict[str, Rows], restored_tables: set[str], recovered_to: str,
                        overshoot: str) -> Check:
    """Every row version the point includes is restored (same key, same xmin), every table it
    includes exists, and recovery stopped where it was told (``overshoot`` says how it did not)."""
    missing = [f"table {t}" for t in sorted(view.tables_at_point() - restored_tables)]
    expected = 0
    for table in sorted(set(view.rows) & restored_tables):
        want, got = view.expected(table), restored.get(table, {})
        expected += len(want)
        missing += [f"{table} {k}" for k, v in want.items() if k not in got or got[k][0] != v[0]]
    lost = [m for m in missing if not m.startswith("table ")]
    figure = f"{expected - len(lost)}/{expected} rows committed by the point restored; the point: {recovered_to}"
    detail = "; ".join(filter(None, [f"{len(missing)} missing: {listed(missing)}" if missing else "", overshoot]))
    return Check("point_in_time", not missing and not overshoot, figure, detail)


def check_document_checksums(view: SourceView, restored: dict[str, Rows]) -> Check:
    per_company_src: dict[str, Any] = {}
    per_company_dst: dict[str, Any] = {}
    for table in view.rows:
        if not table.startswith("documents"):
            continue
        src, dst = view.expected(table), restored.get(table, {})
        for key in sorted(src):
            company = key.split("|", 1)[0]
            per_company_src.setdefault(company, hashlib.sha256()).update(f"{key}={src[key][2]};".encode())
            got = dst.get(key)
            per_company_dst.setdefault(company, hashlib.sha256()).update(f"{key}={got[2] if got else None};".encode())
    bad = [c for c in per_company_src if per_company_src[c].digest() != per_company_dst[c].digest()]
    return Check("document_checksums", not bad, f"{len(per_company_src) - len(bad)}/{len(per_company_src)} companies",
                 f"companies differing: {listed(bad)}" if bad else "")


def check_heap_and_counts(restored: Any, tables: list[str], view: SourceView) -> tuple[Check, Check]:
    """Read every heap tuple (with its TOAST: a whole-row value detoasts) and compare row counts with
    the source at the point (rows the source changed later count once more here; fewer means loss)."""
    lower: list[str] = []
    total = 0
    errors = []
    for table in tables:
        try:
            row = restored.execute(f"SELECT count(*), coalesce(sum(pg_column_size(t.*)), 0)"
                                   f" FROM public.{_q(table)} t").fetchone()
        except Exception as exc:  # a corrupt page raises: that is the finding
            errors.append(f"{table}: {str(exc).splitlines()[0]}")
            continue
        total += int(row[0])
        expected = view.expected_count(table)
        if int(row[0]) < expected:
            lower.append(f"{table} {row[0]} < {expected}")
    heap = Check("heap_read", not errors, f"{len(tables) - len(errors)}/{len(tables)} tables read",
                 "; ".join(errors))
    counts = Check("row_counts", not lower and not errors, f"{total} rows in {len(tables)} tables and partitions",
                   "; ".join(lower))
    return heap, counts


def check_index_vs_seq(restored: Any, tables: list[str], sample: int) -> Check:
    """Per table: count via the primary key index (forced) = count via a sequential scan, and sampled
    keys found by the index."""
    bad = []
    checked = 0
    for table in tables:
        pk = primary_key(restored, table)
        if not pk:
            continue
        cols = ", ".join(_q(c) for c in pk)
        with restored.transaction():
            restored.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
            by_index = restored.execute(f"SELECT count(*) FROM (SELECT {cols} FROM public.{_q(table)}"
                                        f" ORDER BY {cols}) s").fetchone()[0]
        with restored.transaction():
            restored.execute("SET LOCAL enable_indexscan = off; SET LOCAL enable_indexonlyscan = off;"
                             " SET LOCAL enable_bitmapscan = off")
            by_seq = restored.execute(f"SELECT count(*) FROM public.{_q(table)}").fetchone()[0]
            keys = restored.execute(f"SELECT {cols} FROM public.{_q(table)} LIMIT %s", (sample,)).fetchall()
        with restored.transaction():
            restored.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
            cond = " AND ".join(f"{_q(c)} = %s" for c in pk)
            found = sum(restored.execute(f"SELECT count(*) FROM public.{_q(table)} WHERE {cond}",
                                         tuple(k)).fetchone()[0] for k in keys)
        checked += 1
        if by_index != by_seq or found != len(keys):
            bad.append(f"{table}: index {by_index} vs seq {by_seq}, {found}/{len(keys)} sampled keys")
    return Check("index_vs_seq", not bad, f"{checked - len(bad)}/{checked} primary keys agree", "; ".join(bad))


def check_vector_indexes(restored: Any, view: SourceView) -> Check:
    found = dict(restored.execute(VECTOR_INDEXES_SQL).fetchall())
    missing = sorted(view.vector_indexes - set(found))
    invalid = sorted(n for n, ok in found.items() if not ok)
    ok = len(found) - len(invalid)
    detail = "; ".join(filter(None, [f"missing {listed(missing)}" if missing else "",
                                     f"invalid {listed(invalid)}" if invalid else ""]))
    return Check("vector_indexes", not missing and not invalid, f"{ok}/{len(view.vector_indexes)} present and valid",
                 detail)


def _top(conn: Any, query: Any, k: int, exact: bool, where: str = "",
         args: tuple[Any, ...] = ()) -> list[tuple[str, float]]:
    """The ``k`` nearest chunks as (key, distance). Exact search breaks distance ties by key, so two
    servers holding the same rows agree on the order even when documents are near-duplicates."""
    order = "ORDER BY embedding <=> %s, company_id, id, created_at" if exact else "ORDER BY embedding <=> %s"
    with conn.transaction():
        if exact:
            conn.execute("SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off")
        rows = conn.execute(f"SELECT concat_ws('|', company_id, id, created_at), embedding <=> %s FROM chunks {where}"
                            f" {order} LIMIT %s", (query, *args, query, k)).fetchall()
    return [(r[0], float(r[1])) for r in rows]


def recall_hits(exact: list[tuple[str, float]], approx: list[tuple[str, float]]) -> int:
    """Approximate results that are true neighbours: any result no farther than the k-th exact one
    counts (a tie at the k-th distance is as right as the row the exact scan happened to pick)."""
    if not exact:
        return 0
    kth = exact[-1][1]
    return min(len(exact), sum(1 for _, distance in approx if distance <= kth + 1e-9))


def sample_chunks(conn: Any, n: int) -> list[tuple[Any, Any]]:
    """About ``n`` random (company_id, embedding) pairs, sampling pages rather than sorting the table."""
    row = conn.execute("SELECT coalesce(sum(greatest(c.reltuples, 0)), 0) FROM pg_inherits i"
                       " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'chunks'::regclass").fetchone()
    total = float(row[0]) if row else 0.0
    if total > 20 * n:
        percent = min(100.0, 100.0 * 4 * n / total)
        rows = conn.execute(f"SELECT company_id, embedding FROM chunks TABLESAMPLE SYSTEM ({percent:.4f})"
                            " LIMIT %s", (n,)).fetchall()
        if len(rows) >= n // 2 and rows:
            return [(r[0], r[1]) for r in rows]
    rows = conn.execute("SELECT company_id, embedding FROM chunks ORDER BY random() LIMIT %s", (n,)).fetchall()
    return [(r[0], r[1]) for r in rows]


def check_vector_recall(restored: Any, policy: BackupPolicy, hnsw_ef_search: int) -> Check:
    restored.execute(f"SET hnsw.ef_search = {int(hnsw_ef_search)}")
    restored.execute("SET hnsw.iterative_scan = relaxed_order")
    sample = [(vec,) for _, vec in sample_chunks(restored, policy.drill.recall_sample)]
    if not sample:
        return Check("vector_recall", True, "no vectors stored")
    hits = total = 0
    for (vec,) in sample:
        exact = _top(restored, vec, 10, exact=True)
        hits += recall_hits(exact, _top(restored, vec, 10, exact=False))
        total += len(exact)
    recall = hits / total if total else 1.0
    minimum = policy.drill.recall_at_10_min
    return Check("vector_recall", recall >= minimum, f"recall@10 {recall:.3f} (min {minimum}) on {len(sample)} vectors")


def check_recorded_search(restored: Any, view: SourceView, query: tuple[Any, Any] | None) -> Check:
    """A company-scoped vector search returns the same top 10 on the restored database as on the source
    at the point (restored rows the source has since changed or removed are left out)."""
    if query is None:
        return Check("recorded_search", True, "no chunks to search")
    company, vec = query
    known = set().union(*(view.expected(t).keys() for t in view.rows if t.startswith("chunks")))
    dst = [key for key, _ in _top(restored, vec, 50, exact=True, where="WHERE company_id = %s", args=(company,))
           if key in known][:10]
    src = view.search
    return Check("recorded_search", src == dst, f"{sum(a == b for a, b in zip(src, dst, strict=False))}/{len(src)} "
                 f"top results identical (company {company})")


def check_accepts_write(restored: Any) -> Check:
    try:
        restored.execute("CREATE TABLE opsctl_drill_probe (id int PRIMARY KEY, at timestamptz DEFAULT now())")
        restored.execute("INSERT INTO opsctl_drill_probe (id) SELECT generate_series(1, 100)")
        n = restored.execute("SELECT count(*) FROM opsctl_drill_probe").fetchone()[0]
        restored.execute("DROP TABLE opsctl_drill_probe")
    except Exception as exc:
        return Check("accepts_write", False, "write failed", str(exc).splitlines()[0])
    return Check("accepts_write", n == 100, f"{n}/100 rows written and read back")
