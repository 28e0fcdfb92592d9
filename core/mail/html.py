"""HTML mail as text (inscriptis: layout-aware, tables and lists kept readable).

Quoted earlier messages in HTML mail sit in ``<blockquote>`` (Gmail, Apple Mail, Thunderbird):
they come out as ``>``-quoted lines, the way a text/plain client writes them, so that
``core.mail.quotes`` treats both alike.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from core.mail.text import single_blank_lines

_OPEN, _CLOSE = "\ue000", "\ue001"  # private-use characters, removed from the input first
_QUOTE_OPEN = re.compile(r"<blockquote\b[^>]*>", re.IGNORECASE)
_QUOTE_CLOSE = re.compile(r"</blockquote\s*>", re.IGNORECASE)


def html_to_text(html: str) -> str:
    """The readable text of an HTML document, blockquotes as ``> `` lines."""
    html = html.replace(_OPEN, "").replace(_CLOSE, "")
    html = _QUOTE_OPEN.sub(lambda m: f"{m.group()}<div>{_OPEN}</div>", html)
    html = _QUOTE_CLOSE.sub(lambda m: f"<div>{_CLOSE}</div>{m.group()}", html)
    try:
        text = _inscriptis(html)
    except Exception:  # lxml refuses some documents (control characters, odd encodings)
        text = ""
    if not text.strip():  # refused, or nested deeper than libxml2 reads: the standard library's parser
        text = _plain_text(html)
    text = _quote_marked(text)
    return single_blank_lines(text).strip("\n")


def _inscriptis(html: str) -> str:
    from inscriptis import get_text  # imported on first use: lxml is not needed to parse plain mail
    from inscriptis.css_profiles import CSS_PROFILES
    from inscriptis.model.config import ParserConfig

    return get_text(html, ParserConfig(css=CSS_PROFILES["strict"]))


def _quote_marked(text: str) -> str:
    depth = 0
    lines: list[str] = []
    for line in text.split("\n"):
        opened, closed = line.count(_OPEN), line.count(_CLOSE)
        content = line.replace(_OPEN, "").replace(_CLOSE, "")
        depth_here = depth + opened
        depth = max(0, depth_here - closed)
        if (opened or closed) and not content.strip():
            continue
        if content.strip() == "--" and not depth_here:
            content = "-- "  # the signature separator: inscriptis drops the space that makes it one
        lines.append(f"{'>' * depth_here} {content.strip()}".rstrip() if depth_here else content)
    return "\n".join(lines)


class _TextCollector(HTMLParser):
    """The standard library's parser, for documents lxml will not take: text, blocks as lines."""

    _BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "pre",
                         "blockquote"})
    _HIDDEN = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self.hidden += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def _plain_text(html: str) -> str:
    collector = _TextCollector()
    try:
        collector.feed(html)
        collector.close()
    except Exception:  # the last resort: what was collected so far
        pass
    return "\n".join(" ".join(line.split()) for line in "".join(collector.parts).split("\n"))
