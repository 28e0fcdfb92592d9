"""strip_quotes over the shapes replies take in real clients (index_text = the new text only)."""

from __future__ import annotations

import pytest

from core.mail.message import parse_message
from core.mail.quotes import strip_quotes
from tests.mailfixtures import alternative, html, message, plain

GMAIL_TOP_POST = """\
Sounds good, let's meet at 3.

On Mon, Mar 4, 2024 at 9:30 AM Ann Example <ann@example.com> wrote:

> Can we meet tomorrow?
>
> Ann
"""

GMAIL_WRAPPED_ATTRIBUTION = """\
Yes.

On Mon, Mar 4, 2024 at 9:30 AM Ann Example with a very long name <
ann.example@example.com> wrote:
> Are you coming?
"""

BOTTOM_POST = """\
Ann wrote:
> Is the build green?

Yes, since this morning.
"""

INLINE = """\
On 04/03/2024 09:30, Ann wrote:
> 1. Can you review the patch?
Done, two comments.

> 2. And the release notes?
>> (from last week: we said Friday)
Tomorrow.

> Thanks!
"""

OUTLOOK = """\
Approved.

Best,
Carl

________________________________
From: Ann Example <ann@example.com>
Sent: Monday, March 4, 2024 9:30 AM
To: Carl <carl@example.com>
Subject: Budget

Please approve the budget.
"""

OUTLOOK_ORIGINAL = """\
See my answer below.

-----Original Message-----
From: Ann
Sent: Monday
Subject: Question

What is the plan?
"""

GERMAN = """\
Passt, danke!

Am Mo., 4. März 2024 um 09:30 Uhr schrieb Anna Beispiel <anna@example.de>:
> Passt dir 15 Uhr?
"""

GERMAN_THUNDERBIRD = """\
Ja.

Am 04.03.24 um 09:30 schrieb Anna Beispiel:
> Kommst du?
"""

FRENCH = """\
D'accord.

Le lun. 4 mars 2024 à 09:30, Anne Exemple <anne@example.fr> a écrit :
> On se voit demain ?
"""

SPANISH = """\
Perfecto.

El lun, 4 mar 2024 a las 9:30, Ana Ejemplo (<ana@example.es>) escribió:
> ¿Nos vemos mañana?
"""

OUTLOOK_GERMAN = """\
Erledigt.

Von: Anna Beispiel <anna@example.de>
Gesendet: Montag, 4. März 2024 09:30
An: Carl
Betreff: Rechnung

Bitte die Rechnung prüfen.
"""

SIGNATURE = """\
The fix is deployed.

-- \nCarl Example
Site Reliability | Example Corp
+1 555 0100
"""

MOBILE = """\
On my way.

Sent from my iPhone

On Mon, Mar 4, 2024, Ann <ann@example.com> wrote:
> Where are you?
"""

APPLE_FORWARD = """\
FYI, see the customer's complaint below.

Begin forwarded message:

From: Dana Customer <dana@example.org>
Subject: Broken invoice
Date: March 4, 2024 at 9:30:00 AM GMT+1
To: support@example.com

The invoice total is wrong.
> quoted in the forwarded mail
"""

GMAIL_FORWARD = """\
Please handle.

---------- Forwarded message ---------
From: Dana Customer <dana@example.org>
Date: Mon, Mar 4, 2024 at 9:30 AM
Subject: Broken invoice
To: <support@example.com>

The invoice total is wrong.
"""

SIGNATURE_THEN_FORWARD = """\
Please handle.
-- \nCarl

---------- Forwarded message ---------
From: Dana <dana@example.org>

The invoice total is wrong.
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(GMAIL_TOP_POST, "Sounds good, let's meet at 3.", id="gmail-top-post"),
        pytest.param(GMAIL_WRAPPED_ATTRIBUTION, "Yes.", id="attribution-wrapped-over-two-lines"),
        pytest.param(BOTTOM_POST, "Yes, since this morning.", id="bottom-post"),
        pytest.param(INLINE, "Done, two comments.\n\nTomorrow.", id="inline-replies-kept"),
        pytest.param(OUTLOOK, "Approved.\n\nBest,\nCarl", id="outlook-header-block"),
        pytest.param(OUTLOOK_ORIGINAL, "See my answer below.", id="outlook-original-message"),
        pytest.param(GERMAN, "Passt, danke!", id="german-gmail"),
        pytest.param(GERMAN_THUNDERBIRD, "Ja.", id="german-thunderbird"),
        pytest.param(FRENCH, "D'accord.", id="french"),
        pytest.param(SPANISH, "Perfecto.", id="spanish"),
        pytest.param(OUTLOOK_GERMAN, "Erledigt.", id="outlook-german"),
        pytest.param(SIGNATURE, "The fix is deployed.", id="signature"),
        pytest.param(MOBILE, "On my way.", id="mobile-footer"),
        pytest.param(APPLE_FORWARD, APPLE_FORWARD.strip(), id="apple-forward-kept"),
        pytest.param(GMAIL_FORWARD, GMAIL_FORWARD.strip(), id="gmail-forward-kept"),
        pytest.param(SIGNATURE_THEN_FORWARD, "Please handle.\n\n---------- Forwarded message ---------\n"
                     "From: Dana <dana@example.org>\n\nThe invoice total is wrong.", id="signature-then-forward"),
        pytest.param("> all\n> quoted\n", "> all\n> quoted\n", id="never-strips-to-nothing"),
        pytest.param("-- \nonly a signature", "-- \nonly a signature", id="signature-only-kept"),
        pytest.param("Not a signature:\n--\nstill text", "Not a signature:\n--\nstill text",
                     id="double-dash-without-space-is-text"),
        pytest.param("I wrote:\nthe plan", "I wrote:\nthe plan", id="wrote-without-quote-is-text"),
        pytest.param("Sent from my iPhone, I think it works.", "Sent from my iPhone, I think it works.",
                     id="footer-words-inside-a-sentence-kept"),
    ],
)
def test_strip_quotes(text: str, expected: str) -> None:
    assert strip_quotes(text) == expected


def test_an_outlook_forward_keeps_the_forwarded_message() -> None:
    kept = OUTLOOK[OUTLOOK.index("From: Ann"):].strip()
    assert strip_quotes(OUTLOOK, forwarded=True) == f"Approved.\n\nBest,\nCarl\n\n{kept}"
    assert strip_quotes(OUTLOOK, forwarded=False) == "Approved.\n\nBest,\nCarl"


def test_index_text_of_a_reply_leaves_out_the_quote_and_body_text_keeps_it() -> None:
    m = parse_message(message(subject="Re: meeting", body=GMAIL_TOP_POST))
    assert m.index_text == "Sounds good, let's meet at 3."
    assert m.body_text == GMAIL_TOP_POST.rstrip()


def test_an_outlook_forward_by_subject_keeps_its_content() -> None:
    m = parse_message(message(subject="FW: Budget", body=OUTLOOK))
    assert "Please approve the budget." in m.index_text


def test_html_blockquotes_are_quotes_too() -> None:
    reply = ('<div dir="ltr">Thanks, merged.</div><br><div class="gmail_quote"><div class="gmail_attr">'
             'On Mon, Mar 4, 2024 at 9:30 AM Ann &lt;ann@example.com&gt; wrote:<br></div>'
             '<blockquote class="gmail_quote" style="margin:0 0 0 .8ex">Please merge <b>PR 42</b>.'
             '<blockquote>older</blockquote></blockquote></div><div>-- <br>Carl</div>')
    m = parse_message(message(subject="Re: PR 42", body=alternative(html(reply))))
    assert m.index_text == "Thanks, merged."
    assert "> Please merge PR 42." in m.body_text and ">> older" in m.body_text


def test_a_text_plain_reply_with_an_html_twin_uses_the_plain_one() -> None:
    m = parse_message(message(body=alternative(plain(BOTTOM_POST), html("<p>ignored</p>"))))
    assert m.index_text == "Yes, since this morning."
