"""``opsctl cache status | apply | warm | flush``: the Redis cache under ``policies/cache.yaml``."""

from __future__ import annotations

from pathlib import Path

import typer

from opsctl.output import OUTPUT_OPTION, Output, emit, info, stderr_progress

app = typer.Typer(help="Inspect and enforce the cache policy; warm or flush the cache.\n\n"
                       "Example: opsctl cache status -o yaml", no_args_is_help=True)

POLICY_OPTION = typer.Option(None, "--policy", help="policy file (default: <policy dir>/cache.yaml)",
                             envvar="OPSCTL_CACHE_POLICY")


def _policy(path: Path | None):  # type: ignore[no-untyped-def]
    from opsctl.cachepolicy.policy import CachePolicy
    from opsctl.policy import load

    return load(CachePolicy, "cache", path)


@app.command("status")
def status(policy: Path | None = POLICY_OPTION, output: Output = OUTPUT_OPTION) -> None:
    """Search hit rate against the target, Redis memory, evictions, keyspace reads, keys per type.

    The hit rate is the one `opsctl status` and the daemon's cache-policy job show: hits / lookups
    of core_search_cache_requests_total over the policy's hitRate.windowSeconds, from Prometheus
    (without Prometheus: the API's own /metrics, since it started; labelled so).

    Example: opsctl cache status -o json
    """
    from opsctl.cachepolicy import ops
    from opsctl.context import settings

    data = ops.status(settings(), _policy(policy))
    if output is Output.table:
        emit(ops.status_rows(data), output, columns=[("item", "ITEM"), ("value", "VALUE")])
    else:
        emit(data, output)


@app.command("apply")
def apply(
    policy: Path | None = POLICY_OPTION,
    do_apply: bool = typer.Option(False, "--apply", help="make the changes (default: print the plan)"),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Plan Redis maxmemory/maxmemory-policy and the live TTLs against the policy; --apply sets them.

    Example: opsctl cache apply --apply
    """
    from opsctl.cachepolicy import ops
    from opsctl.context import settings

    changes, sentence = ops.apply(settings(), _policy(policy), do_apply=do_apply)
    table = output is Output.table  # maxmemory in MiB; JSON and YAML keep the values as Redis takes them
    rows: list[dict[str, object]] = [
        {"kind": c.kind, "name": c.name, "current": c.show(c.current) if table else c.current,
         "desired": c.show(c.desired) if table else c.desired} for c in changes]
    emit(rows, output, columns=[("kind", "KIND"), ("name", "NAME"), ("current", "CURRENT"), ("desired", "DESIRED")])
    info(sentence if do_apply or not changes else sentence + "; rerun with --apply to make them")


@app.command("warm")
def warm(
    company: int | None = typer.Option(None, "--company", help="one company id (default: every company)"),
    top: int | None = typer.Option(None, "--top", min=1, help="requests per company (default: the policy's)"),
    policy: Path | None = POLICY_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Re-run each company's most frequent recent searches so they are cached; audited.

    Example: opsctl cache warm --company 1 --top 20
    """
    from opsctl.cachepolicy import ops
    from opsctl.context import settings

    with stderr_progress() as bar:
        task = bar.add_task("warming", total=None)

        def step(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = ops.warm(settings(), _policy(policy), company, top, step)
    rows = [{"company": cid, **counts} for cid, counts in result["companies"].items()]
    if output is Output.table:
        emit(rows, output, columns=[("company", "COMPANY"), ("warmed", "WARMED"),
                                    ("already_cached", "ALREADY CACHED"), ("skipped", "SKIPPED")])
        info(f"{result['warmed']} of {result['requests']} requests warmed (TTL {result['ttl_seconds']} s)")
    else:
        emit(result, output)


@app.command("flush")
def flush(
    company: int | None = typer.Option(None, "--company", help="one company id (default: everything)"),
    do_apply: bool = typer.Option(False, "--apply", help="delete (default: count what would go)"),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Delete cached search results and API-key lookups, of everyone or one company (SCAN); audited.

    Example: opsctl cache flush --company 3 --apply
    """
    from opsctl.cachepolicy import ops
    from opsctl.context import settings

    result = ops.flush(settings(), company, do_apply=do_apply)
    if output is Output.table:
        emit([{"type": k, "keys": v} for k, v in result["keys"].items()], output,
             columns=[("type", "TYPE"), ("keys", "DELETED" if do_apply else "WOULD DELETE")])
        if not do_apply:
            info(f"dry run for {result['scope']}: rerun with --apply to delete")
    else:
        emit(result, output)
