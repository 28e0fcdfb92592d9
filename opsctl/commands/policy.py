"""``opsctl policy validate``: check policy files before the daemon or a command loads them."""

from __future__ import annotations

from pathlib import Path

import typer

from opsctl.output import OUTPUT_OPTION, Output, emit, plural

app = typer.Typer(help="Validate the YAML policies in policies/.\n\nExample: opsctl policy validate policies/",
                  no_args_is_help=True)


@app.command("validate")
def validate(
    paths: list[Path] | None = typer.Argument(None, help="policy files or directories (default: the policy dir)"),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Validate policy files; every error names the file, line, path and reason (exit 2 if any).

    The policy dir is ./policies unless OPSCTL_POLICY_DIR says otherwise.

    Example: opsctl policy validate policies/autoscaling.yaml
    """
    from core.errors import ConfigError
    from opsctl.policy import policy_dir, validate_paths

    ok, problems = validate_paths(list(paths) if paths else [policy_dir()])
    if output is not Output.table:
        emit({"valid": ok, "problems": [{"file": p.file, "line": p.line, "path": p.path, "reason": p.reason}
                                        for p in problems]}, output)
    else:
        for name in ok:
            typer.echo(f"{name}: valid")
        for problem in problems:
            typer.echo(str(problem), err=True)
    if problems:
        raise ConfigError(f"{plural(len(problems), 'problem')} in the policies")
