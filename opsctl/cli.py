"""The ``opsctl`` command line: one thin Typer module per command group in ``opsctl.commands``.

Exit codes: 0 success, 1 the operation failed, 2 usage or configuration error. Errors are one
line on stderr; ``--debug`` (anywhere on the command line) adds the traceback. Heavy libraries
are imported inside commands so ``opsctl --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer

from opsctl.commands import backup as backup_cmd
from opsctl.commands import cache as cache_cmd
from opsctl.commands import capacity as capacity_cmd
from opsctl.commands import daemon as daemon_cmd
from opsctl.commands import emails as emails_cmd
from opsctl.commands import events as events_cmd
from opsctl.commands import index as index_cmd
from opsctl.commands import ingest as ingest_cmd
from opsctl.commands import partitions as partitions_cmd
from opsctl.commands import policy as policy_cmd
from opsctl.commands import runbook as runbook_cmd
from opsctl.commands import scale as scale_cmd
from opsctl.commands import search as search_cmd
from opsctl.commands import slowqueries as slowqueries_cmd
from opsctl.commands import status as status_cmd
from opsctl.commands import tenant as tenant_cmd
from opsctl.commands import threads as threads_cmd
from opsctl.commands import up as up_cmd
from opsctl.commands import wal as wal_cmd

app = typer.Typer(
    name="opsctl",
    help="Operate the opsctl core: run it, load and search data, scale, back up, maintain.\n\n"
    "\b\nExample: opsctl up                     (then, in a second terminal:)\n"
    "         opsctl tenant create acme",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # click's own help layout, for every command below: paragraphs reflowed to the terminal as
    # written, flags without a type. (Typer's rich panels keep the source's line breaks inside a
    # paragraph and, in typer 0.29, print a `<bool>` type after every flag, --help included.)
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="show tracebacks and debug logs", envvar="OPSCTL_DEBUG"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="state dir of `opsctl up`", envvar="OPSCTL_DATA_DIR"),
    config: Path | None = typer.Option(None, "--config", help="settings file (YAML)", envvar="OPSCTL_CONFIG"),
) -> None:
    """opsctl: the ingest/search core and its operations toolkit (the help is the app's, above)."""
    if data_dir is not None:
        os.environ["OPSCTL_DATA_DIR"] = str(data_dir)
    if config is not None:
        os.environ["OPSCTL_CONFIG"] = str(config)
    if os.environ.get("OPSCTL_LOG_FORMAT") == "json":  # the CLI's own records; up and daemon set theirs
        import logging

        from core.logs import configure_json

        configure_json("cli")
        if debug:
            logging.getLogger().setLevel(logging.DEBUG)
    elif debug:
        import logging

        logging.basicConfig(level=logging.DEBUG)


# in the order of DESIGN.md: run it, use it, operate it, look at it
app.command("up", help=up_cmd.HELP)(up_cmd.up)
app.add_typer(tenant_cmd.app, name="tenant")
app.command("ingest", help=ingest_cmd.HELP)(ingest_cmd.ingest)
app.command("search", help=search_cmd.HELP)(search_cmd.search)
app.add_typer(threads_cmd.app, name="threads")
app.add_typer(emails_cmd.app, name="emails")
app.add_typer(scale_cmd.app, name="scale")
app.command("capacity", help=capacity_cmd.HELP)(capacity_cmd.capacity)
backup_cmd.register(app)  # backup, restore-test, restore
app.add_typer(wal_cmd.app, name="wal")
app.add_typer(partitions_cmd.app, name="partitions")
app.add_typer(index_cmd.app, name="index")
app.add_typer(cache_cmd.app, name="cache")
app.command("daemon", help=daemon_cmd.HELP)(daemon_cmd.daemon)
app.command("status", help=status_cmd.HELP)(status_cmd.status)
app.command("events", help=events_cmd.HELP)(events_cmd.events)
app.add_typer(slowqueries_cmd.app, name="slow-queries")
app.add_typer(runbook_cmd.app, name="runbook")
app.add_typer(policy_cmd.app, name="policy")


def _click_exceptions() -> Any:
    """Typer >= 0.29 carries its own copy of click; older ones use click itself."""
    import importlib

    try:
        return importlib.import_module("typer._click.exceptions")
    except ImportError:  # pragma: no cover - older typer
        return importlib.import_module("click.exceptions")


def lift_debug(args: list[str]) -> list[str]:
    """``--debug`` is accepted anywhere (every error says "rerun with --debug"): moved to the front,
    where the root callback reads it. Words after a ``--`` separator are left alone."""
    end = args.index("--") if "--" in args else len(args)
    if "--debug" not in args[:end]:
        return args
    return ["--debug", *(a for a in args[:end] if a != "--debug"), *args[end:]]


def plain_reason(message: str) -> str:
    """Typer checks values with pydantic, whose messages start with its own error type
    (``Value error, 'xml' is not one of 'table', 'json', 'yaml'.``): keep the reason only."""
    return message.removeprefix("Value error, ")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and map errors to one line and an exit code."""
    from core.errors import OpsError

    click = _click_exceptions()

    args = lift_debug(sys.argv[1:] if argv is None else argv)
    debug = args[:1] == ["--debug"] or os.environ.get("OPSCTL_DEBUG", "").lower() in ("1", "true", "yes")
    try:
        result = app(args=args, prog_name="opsctl", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        sys.stderr.write("aborted\n")
        return 130
    except click.ClickException as exc:
        if isinstance(exc, click.BadParameter):
            exc.message = plain_reason(exc.message)
        exc.show()
        return 2 if isinstance(exc, click.UsageError) else exc.exit_code
    except OpsError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        sys.stderr.write(f"error: {exc.message}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except Exception as exc:
        if debug:
            import traceback

            traceback.print_exc()
        sys.stderr.write(f"error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)\n")
        return 1
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
