"""``opsctl emails show``: one stored e-mail of your company, or its original bytes.

Its own group, beside ``threads``, as the API has ``/v1/emails`` beside ``/v1/threads``: a message
is found by its Message-ID (from a search hit, a thread, or the mail itself), not through a thread.
"""

from __future__ import annotations

import typer

from opsctl.output import OUTPUT_OPTION, Output, emit

app = typer.Typer(help="Read ingested e-mail by Message-ID.\n\nExample: opsctl emails show 'abc123@mail.example.com'",
                  no_args_is_help=True)


@app.command("show")
def show(
    message_id: str = typer.Argument(..., metavar="MESSAGE_ID", help="the Message-ID, with or without <angle "
                                     "brackets>, or as its header has it"),
    raw: bool = typer.Option(False, "--raw", help="print the original message, byte for byte, to stdout"),
    api_url: str | None = typer.Option(None, "--api-url", envvar="OPSCTL_API_URL", help="the core API"),
    api_key: str | None = typer.Option(None, "--api-key", envvar="OPSCTL_API_KEY", help="a tenant API key"),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Show a message's headers as read (subject, from, to, cc, date, the ids it replies to), its
    thread, its attachments (name, type, size, whether their text is indexed) and notes on what could
    not be read. --raw prints the original message as it was ingested (e.g. to open it in a mail
    client); -o json|yaml print the API's answer as it is.

    Example: opsctl emails show '<abc123@mail.example.com>' --raw > message.eml
    """
    import sys

    from opsctl.client import call, call_raw
    from opsctl.context import api_client, settings
    from opsctl.mailview import email_path, email_rows

    path = email_path(message_id)
    if path is None:
        raise typer.BadParameter("the Message-ID is blank", param_hint="'MESSAGE_ID'")
    with api_client(settings(api_url=api_url, api_key=api_key)) as client:
        if raw:
            sys.stdout.buffer.write(call_raw(client, "GET", path, params={"raw": 1}))
            sys.stdout.flush()
            return
        email = call(client, "GET", path)
    if output is not Output.table:
        emit(email, output)
        return
    emit(email_rows(email), output, columns=[("field", "FIELD"), ("value", "VALUE")],
         title=email.get("subject") or "(no subject)")
