"""``opsctl scale [SERVICE...]``, ``scale set | pause | resume | explain``: the autoscaler by hand.

``opsctl scale core-worker`` is ``opsctl scale decide core-worker``: any first word that is not a
subcommand is a service name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from opsctl.commands.simulate import simulate as _simulate
from opsctl.output import OUTPUT_OPTION, Output, emit, info

HELP = ("Decide (and with --apply, set) replica counts from the autoscaling policy: HPA math, explained.\n\n"
        "Example: opsctl scale core-worker --apply")

SUBCOMMANDS = ("decide", "set", "pause", "resume", "explain", "simulate")


class _DecideByDefault(TyperGroup):
    """``opsctl scale core-worker`` → ``opsctl scale decide core-worker``."""

    default_command = "decide"

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or (args[0] not in SUBCOMMANDS and args[0] not in ("--help", "-h")):
            args = [self.default_command, *args]
        return list(super().parse_args(ctx, args))


app = typer.Typer(help=HELP, cls=_DecideByDefault)

POLICY_OPTION = typer.Option(None, "--policy", "-p", help="autoscaling policy file "
                             "(default: <policy dir>/autoscaling.yaml; OPSCTL_POLICY_DIR)")


def _policy(path: Path | None) -> Any:
    from opsctl.policy import load
    from opsctl.scaling.policy import AutoscalingPolicy

    return load(AutoscalingPolicy, "autoscaling", path)


def _metric_cell(m: dict[str, Any]) -> str:
    if m.get("error"):
        return f"{m['name']}: error ({m['error']})"
    unit = "%" if m["type"] == "Utilization" else ("/replica" if m["type"] == "AverageValue" else "")
    from opsctl.scaling.engine import num

    return f"{m['name']}: {num(m['value'])} / {num(m['target'])}{unit} → {m['proposal']}"


@app.command("decide")
def decide(
    services: list[str] | None = typer.Argument(None, help="services of the policy (default: all)"),
    policy: Path | None = POLICY_OPTION,
    snapshot: Path | None = typer.Option(None, "--snapshot", help="decide from a recorded snapshot JSON file "
                                         "(never applies)"),
    apply: bool = typer.Option(False, "--apply", help="set the decided replica counts (default: dry run)"),
    force: bool = typer.Option(False, "--force", help="act even if an HPA or KEDA ScaledObject targets the workload"),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Decide each service's replicas from Prometheus and its target, print why; --apply to act.

    Exit 0 when every service was decided (also "no change"), 1 when one could not be or every
    metric of one failed (the fallback's decision is printed and applied all the same), 2 for a bad
    policy, snapshot or usage. Every live decision is stored as a scale.decide event (see `scale
    explain`). Replaying a --snapshot exits 0 whatever its metrics say.

    Example: opsctl scale core-worker --snapshot snap.json -o json
    """
    from core.errors import ConfigError, OperationFailed
    from opsctl.scaling import service

    pol = _policy(policy)
    names = list(services or [])
    if snapshot is not None:
        if apply:
            raise ConfigError("--snapshot replays a recorded state and never applies: drop --apply")
        from opsctl.scaling.snapshot import read

        rows = [d.as_dict() for d in service.from_snapshots(pol, names, read(snapshot), str(snapshot))]
        failed: list[str] = []
    else:
        from opsctl.context import settings

        outcomes = service.run(settings(), pol, names, apply=apply, force=force)
        rows = [o.as_dict() for o in outcomes]
        failed = [f"{o.service}: {o.failure}" for o in outcomes if o.failure]
    if output is Output.table:
        table = [{"service": r["service"],
                  "replicas": "?" if r["current_replicas"] is None else
                  f"{r['current_replicas']} → {r['desired_replicas']}" + (" ✓" if r.get("applied") else ""),
                  "metrics": "\n".join(_metric_cell(m) for m in r["metrics"]),
                  "limited_by": ", ".join(r["limited_by"]), "reason": r["reason"] or r.get("error")} for r in rows]
        emit(table, output, columns=[("service", "SERVICE"), ("replicas", "CURRENT → DESIRED"),
                                     ("metrics", "METRICS (value / target → proposal)"),
                                     ("limited_by", "LIMITED BY"), ("reason", "REASON")])
        if snapshot is None and not apply and any(r["current_replicas"] != r["desired_replicas"] for r in rows):
            info("dry run: nothing changed; add --apply to act")
    else:
        emit(rows[0] if len(rows) == 1 and len(names) == 1 else rows, output)
    if failed:
        raise OperationFailed("; ".join(failed))


@app.command("set")
def set_(
    service_name: str = typer.Argument(..., metavar="SERVICE", help="service of the policy"),
    replicas: int = typer.Argument(..., min=0, help="replica count (within minReplicas..maxReplicas)"),
    reason: str = typer.Option(..., "--reason", help="why (goes into the audit log)"),
    policy: Path | None = POLICY_OPTION,
    apply: bool = typer.Option(False, "--apply", help="set it (default: dry run)"),
    force: bool = typer.Option(False, "--force", help="act even if an HPA or KEDA ScaledObject targets the workload"),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Set a replica count by hand (audited as scale.set; rate policies count it). Pause first to keep it.

    Example: opsctl scale set core-worker 6 --reason "backfill tonight" --apply
    """
    from opsctl.context import settings
    from opsctl.scaling import service

    result = service.set_replicas(settings(), _policy(policy), service_name, replicas, reason, apply=apply,
                                  force=force)
    emit(result, output)
    if not apply and result["current_replicas"] != replicas:
        info("dry run: nothing changed; add --apply to act")


def _pause(service_name: str, paused: bool, reason: str | None, policy: Path | None, output: Output) -> None:
    from opsctl.context import settings
    from opsctl.scaling import service

    emit(service.set_paused(settings(), _policy(policy), service_name, paused, reason), output)


@app.command("pause")
def pause(
    service_name: str = typer.Argument(..., metavar="SERVICE", help="service of the policy"),
    reason: str | None = typer.Option(None, "--reason", help="why (goes into the audit log)"),
    policy: Path | None = POLICY_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Stop autoscaling a service (the CLI and the daemon keep its replicas) until `scale resume`.

    Example: opsctl scale pause core-worker --reason "incident 4711"
    """
    _pause(service_name, True, reason, policy, output)


@app.command("resume")
def resume(
    service_name: str = typer.Argument(..., metavar="SERVICE", help="service of the policy"),
    policy: Path | None = POLICY_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Resume autoscaling a paused service.

    Example: opsctl scale resume core-worker
    """
    _pause(service_name, False, None, policy, output)


@app.command("explain")
def explain(
    event_id: int = typer.Argument(..., help="id of a scale.decide (opsctl events --all)"),
    policy: Path | None = POLICY_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Replay a stored decision from its snapshot and show why it came out as it did.

    Example: opsctl scale explain 42
    """
    from core.errors import ConfigError, NotFound
    from opsctl.context import settings
    from opsctl.output import plural, timestamp
    from opsctl.scaling import service

    try:
        pol = _policy(policy)
    except ConfigError:
        if policy is not None:
            raise
        pol = None  # no policy here: show the stored decision only
    s = settings()
    try:
        result = service.explain(s, event_id, pol)
    except NotFound:
        raise _not_a_decision(s, event_id) from None
    if output is not Output.table:
        emit(result, output)
        return
    stored, replay = result["stored"], result.get("replayed")
    typer.echo(f"event {event_id} at {timestamp(result['at'])}: {result['service']} "
               f"{stored['current_replicas']} → {stored['desired_replicas']}"
               f"{' (applied)' if result['applied'] else ' (not applied)'}")
    typer.echo(f"why: {stored['reason']}")
    emit([{"name": m["name"], "type": m["type"], "value": m["value"], "target": m["target"], "ratio": m["ratio"],
           "proposal": m["proposal"], "error": m["error"]} for m in stored["metrics"]], output)
    hist = result["snapshot"].get("history", {})
    typer.echo(f"history: {plural(len(hist.get('recommendations', [])), 'recommendation')}, "
               f"{plural(len(hist.get('scale_events', [])), 'scale event')}, "
               f"{plural(hist.get('consecutive_failures', 0), 'failure')} in a row")
    if replay is not None:
        typer.echo("replayed with today's policy: " + ("same decision" if result["same"] else
                                                        f"differs: {replay['reason']}"))


def _not_a_decision(s: Any, event_id: int) -> Exception:
    """What ``event_id`` is when it is no ``scale.decide``: another audit row (a job run, a backup), or none."""
    from core.errors import NotFound
    from opsctl.audit import find
    from opsctl.context import connect_db
    from opsctl.output import timestamp

    with connect_db(s) as conn:
        row = find(conn, event_id)
    ids = "the ids of scaling decisions: `opsctl events --all --action scale.decide`"
    if row is None:
        return NotFound(f"no scale.decide event {event_id}: no audit row has that id ({ids})")
    what = row["action"] + (f" of {row['target']}" if row["target"] else "")
    return NotFound(f"event {event_id} is a {what} at {timestamp(row['at'])}, not a scaling decision: "
                    f"`scale explain` replays scale.decide events ({ids})")


app.command("simulate")(_simulate)
