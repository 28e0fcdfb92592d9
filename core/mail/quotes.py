"""The new text of a reply: quoted earlier messages and the signature left out of the index.

The thread already holds the messages a reply quotes, so indexing them again only inflates the
index and repeats hits. Left out:
- lines quoted with ``>`` (any depth; HTML blockquotes arrive as such, see ``core.mail.html``),
  and the attribution line before a quoted block ("On … wrote:", "Am … schrieb …:",
  "Le … a écrit :", "El … escribió:", and the like);
- everything from Outlook's "-----Original Message-----" or its "From: / Sent: / To: / Subject:"
  header block on (the quoted message follows it unmarked);
- the signature after the standard "-- " line, and well-known mobile footers ("Sent from my
  iPhone", "Von meinem iPhone gesendet"...).
Kept: the new lines between quoted blocks (inline replies, bottom-posting), and forwarded
content ("Begin forwarded message:", "---------- Forwarded message ---------", or Outlook's
header block in a message whose subject says it is a forward): a forward is not a quote.
Stripping never leaves nothing: a message that is all quote keeps its text.
"""

from __future__ import annotations

import re

from core.mail.text import single_blank_lines

_QUOTED = re.compile(r"^\s*>")
_ATTRIBUTION_END = re.compile(
    r"(?:\bwrote|\bwrites|\bschrieb\b.*|\ba écrit|\bescribió|\bha scritto|\bschreef\b.*|\bescreveu|\bskrev\b.*)"
    r"\s*:\s*$", re.IGNORECASE)
_ATTRIBUTION_START = re.compile(r"^\s*(?:On|Am|Le|El|Il|Op|Em|Den|På)\b", re.IGNORECASE)
_ATTRIBUTION_LINES = 3  # an attribution wrapped by the client spans at most this many lines
_ORIGINAL = re.compile(
    r"^\s*-{2,}\s*(?:Original Message|Ursprüngliche Nachricht|Message d'origine|Mensaje original|"
    r"Messaggio originale|Oorspronkelijk bericht|Originalmeddelande)\s*-{2,}\s*$", re.IGNORECASE)
_FORWARD = re.compile(
    r"^\s*(?:-{2,}\s*(?:Forwarded message|Weitergeleitete Nachricht|Message transféré|Mensaje reenviado|"
    r"Messaggio inoltrato|Doorgestuurd bericht)\s*-{2,}|"
    r"(?:Begin forwarded message|Anfang der weitergeleiteten Nachricht|Début du message réexpédié|"
    r"Inicio del mensaje reenviado|Inizio messaggio inoltrato)\s*:)\s*$", re.IGNORECASE)
_HEADER_FROM = re.compile(r"^\s*\*?(?:From|Von|De|Da|Van|Från|Fra)\s*:\*?\s*\S", re.IGNORECASE)
_HEADER_SENT = re.compile(r"^\s*\*?(?:Sent|Date|Gesendet|Datum|Envoyé|Enviado|Inviato|Verzonden|Skickat|Sendt)"
                          r"\s*:", re.IGNORECASE)
_HEADER_SUBJECT = re.compile(r"^\s*\*?(?:Subject|Betreff|Objet|Asunto|Oggetto|Onderwerp|Ämne|Emne)\s*:",
                             re.IGNORECASE)
_HEADER_BLOCK_LINES = 8  # Sent and Subject follow From within this many lines
_SEPARATOR = re.compile(r"^\s*(?:_{8,}|-{8,})\s*$")
_SIGNATURE = "-- "
_MOBILE_FOOTER = re.compile(
    r"^\s*(?:sent from my (?:iphone|ipad|android|blackberry|mobile|mobile device|phone|smartphone|"
    r"samsung[\w ]*|galaxy[\w ]*|huawei[\w ]*|windows phone)|"
    r"sent from (?:mail|outlook) for (?:windows(?: 10| 11)?|ios|android)|sent from outlook|"
    r"get outlook for (?:ios|android)|sent from yahoo mail (?:on|for) (?:android|iphone|ipad)|"
    r"sent (?:from|with) proton ?mail(?: mobile)?|"
    r"von meinem (?:iphone|ipad|smartphone|android[\w ]*|samsung[\w ]*) gesendet|"
    r"envoyé de mon (?:iphone|ipad|smartphone|android)|"
    r"enviado desde mi (?:iphone|ipad|smartphone|android|samsung[\w ]*))\s*\.?\s*$", re.IGNORECASE)
# A line can match the patterns above only when the whole text, folded as they match case-insensitively,
# holds one of these words: a look at the text spares most messages the line-by-line scans.
_FORWARD_WORDS = ("forwarded", "weitergeleitet", "transféré", "reenviado", "inoltrato", "doorgestuurd", "réexpédié")
_ORIGINAL_WORDS = ("original", "ursprüngliche", "origine", "oorspronkelijk")
_SUBJECT_WORDS = ("subject", "betreff", "objet", "asunto", "oggetto", "onderwerp", "ämne", "emne")
_MOBILE_FOOTER_WORDS = ("sent", "get outlook", "von meinem", "envoyé de mon", "enviado desde mi")
_HEADER_FROM_WORDS = re.compile(r"^[^\S\n]*\*?(?:from|von|de|da|van|från|fra)[^\S\n]*:", re.MULTILINE)
_UNFOLDED = {"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"}  # dotted I, dotless i, long s, Kelvin sign
_FOLD = str.maketrans(_UNFOLDED)


def folded(text: str) -> str:
    """``text`` lower-cased so that a word the patterns match case-insensitively is in it."""
    if any(char in text for char in _UNFOLDED):
        text = text.translate(_FOLD)
    return text.lower()


def _holds(text: str, words: tuple[str, ...]) -> bool:
    return any(word in text for word in words)


def strip_quotes(text: str, *, forwarded: bool = False) -> str:
    """``text`` without quoted earlier messages and the signature; ``text`` itself when that
    would leave nothing. ``forwarded``: the message forwards another (its subject says so), so an
    Outlook header block starts forwarded content, which is kept."""
    return _strip(text, forwarded, folded(text))


def _strip(text: str, forwarded: bool, lowered: str) -> str:
    """``strip_quotes``; ``lowered``: ``text`` folded, where the words that let a line match are
    looked for (a string holding them all makes every line be looked at)."""
    lines = text.split("\n")
    start = _forward_start(lines, forwarded, lowered)
    own, kept = lines[:start], lines[start:]
    own = own[: _cut(own, lowered)]
    while own and (_SEPARATOR.match(own[-1]) or not own[-1].strip()):
        own.pop()
    dropped = _quoted(own) if ">" in lowered else set()
    footer = _holds(lowered, _MOBILE_FOOTER_WORDS)
    new = [line for index, line in enumerate(own)
           if index not in dropped and not (footer and _MOBILE_FOOTER.match(line))] if dropped or footer else own
    sections = ("\n".join(new).strip(), "\n".join(kept).strip())
    result = single_blank_lines("\n\n".join(section for section in sections if section))
    return result if result else text


def _forward_start(lines: list[str], forwarded: bool, lowered: str) -> int:
    """Where forwarded content starts (len(lines): nowhere). ``lowered``: the lines joined, folded."""
    marker = _holds(lowered, _FORWARD_WORDS)
    outlook = forwarded and (_holds(lowered, _ORIGINAL_WORDS) or (
        _holds(lowered, _SUBJECT_WORDS) and _HEADER_FROM_WORDS.search(lowered) is not None))
    if marker or outlook:
        for index, line in enumerate(lines):
            if (marker and _FORWARD.match(line)) or (
                    outlook and (_ORIGINAL.match(line) or _header_block(lines, index))):
                return index
    return len(lines)


def _cut(lines: list[str], lowered: str) -> int:
    """Where the quoted original (Outlook) or the signature starts: the rest is left out.
    ``lowered``: the lines (or more) joined, folded."""
    end = lines.index(_SIGNATURE) if _SIGNATURE in lowered and _SIGNATURE in lines else len(lines)
    original = _holds(lowered, _ORIGINAL_WORDS)
    header = _holds(lowered, _SUBJECT_WORDS) and _HEADER_FROM_WORDS.search(lowered) is not None
    if original or header:
        for index in range(end):
            if (original and _ORIGINAL.match(lines[index])) or (header and _header_block(lines, index)):
                return index
    return end


def _header_block(lines: list[str], index: int) -> bool:
    """Whether ``lines[index]`` starts a "From: … Sent: … Subject: …" block (Outlook's quote)."""
    if not _HEADER_FROM.match(lines[index]):
        return False
    following = lines[index + 1 : index + 1 + _HEADER_BLOCK_LINES]
    return any(_HEADER_SENT.match(line) for line in following) and any(
        _HEADER_SUBJECT.match(line) for line in following)


def _quoted(lines: list[str]) -> set[int]:
    """The indexes of quoted lines and of the attribution lines that introduce quoted blocks."""
    dropped = {index for index, line in enumerate(lines) if line.lstrip()[:1] == ">"}  # _QUOTED, faster
    for index in sorted(dropped):
        if index - 1 in dropped:
            continue  # not the start of a block
        above = index - 1
        while above >= 0 and not lines[above].strip():
            above -= 1
        if above < 0 or not _ATTRIBUTION_END.search(lines[above]):
            continue
        first = above
        for candidate in range(above, max(-1, above - _ATTRIBUTION_LINES), -1):
            if not lines[candidate].strip() or candidate in dropped:
                break
            if _ATTRIBUTION_START.match(lines[candidate]):
                first = candidate
                break
        dropped.update(range(first, above + 1))
    return dropped
