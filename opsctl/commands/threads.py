"""``opsctl threads show``: an e-mail thread of your company, drawn as a tree."""

from __future__ import annotations

import typer

from opsctl.output import OUTPUT_OPTION, Output, emit

app = typer.Typer(help="Read e-mail threads: every message connected by Message-ID, In-Reply-To and References."
                  "\n\nExample: opsctl threads show 42", no_args_is_help=True)


@app.command("show")
def show(
    thread_id: int = typer.Argument(..., metavar="ID", min=1, help="a thread id (from `opsctl emails show` or "
                                    "`opsctl search --group-by thread`)"),
    api_url: str | None = typer.Option(None, "--api-url", envvar="OPSCTL_API_URL", help="the core API"),
    api_key: str | None = typer.Option(None, "--api-key", envvar="OPSCTL_API_KEY", help="a tenant API key"),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Draw a thread: its messages depth-first, each under the one it replies to, oldest first, with
    subject, sender and date; a message the others refer to that was never ingested shows as
    "(missing message <id>)". A thread merged into another (a message linking them arrived) shows the
    one it became (and says so on stderr). -o json|yaml print the API's answer as it is.

    Example: opsctl threads show 42 -o json
    """
    from opsctl.client import call
    from opsctl.context import api_client, settings
    from opsctl.mailview import thread_rows, thread_title
    from opsctl.output import info, timestamp

    with api_client(settings(api_url=api_url, api_key=api_key)) as client:
        thread = call(client, "GET", f"/v1/threads/{thread_id}")
    if thread["thread_id"] != thread_id:  # on stderr whatever -o: stdout stays the answer alone
        info(f"thread {thread_id} was merged into thread {thread['thread_id']}")
    if output is not Output.table:
        emit(thread, output)
        return
    emit(thread_rows(thread), output, title=thread_title(thread, timestamp),
         columns=[("message", "MESSAGE"), ("from", "FROM"), ("date", "DATE"), ("message_id", "MESSAGE ID")])
