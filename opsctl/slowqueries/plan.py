"""Slow queries: what applying the policy changes on the server (pure; ``opsctl slow-queries threshold``)."""

from __future__ import annotations

from dataclasses import dataclass, field

# postgresql.conf lines that make the server's log readable through SQL as JSON (``opsctl up`` gives
# them to its embedded server; logging_collector needs a restart, the rest a reload). The stderr
# output goes into the collector's files too (log/*.log), next to the JSON ones (log/*.json).
SERVER_CONF = ("logging_collector = on", "log_destination = 'stderr,jsonlog'", "log_directory = 'log'",
               "log_rotation_age = 1d", "log_rotation_size = 100MB", "log_timezone = 'UTC'")


@dataclass(frozen=True)
class SettingChange:
    name: str
    current: str
    wanted: str


@dataclass(frozen=True)
class ThresholdPlan:
    """The settings to change (``ALTER SYSTEM``, then ``pg_reload_conf()``: none needs a restart) and
    whether the server's log can be read through SQL at all (a jsonlog file of the logging collector,
    which only a restart turns on)."""

    changes: tuple[SettingChange, ...]
    readable: bool
    why_unreadable: str | None = None
    current: dict[str, str] = field(default_factory=dict)  # the server's settings read

    def sentence(self, applied: bool) -> str:
        if not self.changes:
            what = "the server already logs slow statements as the policy says"
        else:
            listed = ", ".join(f"{c.name} {c.current} -> {c.wanted}" for c in self.changes)
            what = f"{'set' if applied else 'would set'} {listed}"
        return what if self.readable else f"{what}; but {self.why_unreadable}"


def plan_threshold(current: dict[str, str], wanted: dict[str, str]) -> ThresholdPlan:
    """From the server's settings (``pg_settings``: ``log_min_duration_statement`` … and
    ``logging_collector``, ``log_destination``) and the policy's: what to change, and whether the log
    is readable. Settings in ``wanted`` missing from ``current`` are changed too."""
    changes = tuple(SettingChange(name, current.get(name, "(unset)"), value)
                    for name, value in wanted.items() if current.get(name) != value)
    destinations = {d.strip() for d in current.get("log_destination", "").split(",")}
    if current.get("logging_collector") != "on":
        return ThresholdPlan(changes, False, current=current, why_unreadable=(
            "logging_collector is off: the log is not in files the database can read (set logging_collector = on "
            "and log_destination to include jsonlog, then restart the server)"))
    if "jsonlog" not in destinations:
        return ThresholdPlan(changes, False, current=current, why_unreadable=(
            "log_destination has no jsonlog (add it: ALTER SYSTEM SET log_destination = 'stderr,jsonlog'; a reload "
            "suffices)"))
    return ThresholdPlan(changes, True, current=current)
