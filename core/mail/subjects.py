"""Subjects compared across a thread: reply and forward prefixes, list tags, case and spacing.

``normalize_subject("Re: RE: Fwd: [list] Hello ")`` is ``"hello"``: the key the store may group
messages without any reference by (an option, off by default; an empty key groups nothing).
``is_forward`` tells the quote stripper that an Outlook header block below the text is forwarded content, not a quote.
"""

from __future__ import annotations

import re

# Re, Fwd, Fw (English), AW/WG (German), SV/VS (Nordic), Antw (Dutch), TR (French), RV (Spanish),
# Odp/PD (Polish), RIF (Italian): each optionally with a count "Re[2]:" / "Re^2:"
_REPLY = r"re|aw|sv|antw|odp|rif|vá|ynt"
_FORWARD = r"fwd?|wg|tr|rv|vs|doorst|pd"
_COLON = "[:\uff1a]"  # the fullwidth colon of CJK clients too
_PREFIX = re.compile(rf"^\s*(?:(?:{_REPLY}|{_FORWARD})\s*(?:\[\d+\]|\^\d+|\(\d+\))?\s*{_COLON}|\[[^\[\]]*\])\s*",
                     re.IGNORECASE)
_FORWARD_PREFIX = re.compile(rf"^\s*(?:\[[^\[\]]*\]\s*)*(?:{_FORWARD})\s*{_COLON}", re.IGNORECASE)


def normalize_subject(subject: str | None) -> str:
    """The subject without reply/forward prefixes (repeated) and list tags, whitespace collapsed,
    case folded."""
    if not subject:
        return ""
    text = " ".join(subject.split())
    while True:
        stripped = _PREFIX.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    return " ".join(text.split()).casefold()


def is_forward(subject: str | None) -> bool:
    """Whether the subject says the message forwards another (Fwd:, Fw:, WG:, TR:...)."""
    return bool(subject and _FORWARD_PREFIX.match(subject))
