"""Split a document into overlapping chunks of bounded size, for embedding.

The text is cut at the coarsest boundary that keeps pieces within ``size`` characters:
paragraphs (blank lines), then sentences, then words, then — for a single token longer than a
chunk — a hard cut every ``size`` characters. Pieces are packed greedily, joined by single
spaces, so whitespace inside a chunk is normalised. Each chunk after the first starts with up
to ``overlap`` characters repeated from the end of the previous one, cut at a sentence boundary
when that keeps at least half of the allowed overlap, else at a word boundary.

Pure and deterministic: the same input always gives the same chunks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
# A sentence ends with . ! ? or an ellipsis (optionally followed by closing quotes or brackets) and a space.
_CLOSERS = "\"'\u201d\u2019)\\]"
_SENTENCE_BREAK = re.compile(rf"(?<=[.!?\u2026])\s+|(?<=[.!?\u2026][{_CLOSERS}])\s+")
_SENTENCE_END = re.compile(rf"[.!?\u2026][{_CLOSERS}]? ")


def chunk_text(text: str, size: int, overlap: int) -> list[str]:
    """Chunks of at most ``size`` characters, neighbours sharing up to ``overlap`` characters."""
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be between 0 and size - 1, got {overlap} (size {size})")
    return _pack(_pieces(text, size), size, overlap)


def _pieces(text: str, size: int) -> Iterator[str]:
    """Whitespace-normalised pieces of at most ``size`` characters, cut as coarsely as possible."""
    for paragraph in _PARAGRAPH_BREAK.split(text):
        normalised = " ".join(paragraph.split())
        if len(normalised) <= size:
            if normalised:
                yield normalised
            continue
        for sentence in _SENTENCE_BREAK.split(normalised):
            if len(sentence) <= size:
                yield sentence
                continue
            for word in sentence.split(" "):
                if len(word) <= size:
                    yield word
                else:
                    yield from (word[i : i + size] for i in range(0, len(word), size))


def _pack(pieces: Iterator[str], size: int, overlap: int) -> list[str]:
    """Join pieces greedily into chunks; start each new chunk with the previous chunk's tail."""
    chunks: list[str] = []
    parts: list[str] = []
    length = 0
    for piece in pieces:
        if parts and length + 1 + len(piece) <= size:
            parts.append(piece)
            length += 1 + len(piece)
            continue
        if parts:
            chunks.append(" ".join(parts))
            carry = _tail(chunks[-1], min(overlap, size - len(piece) - 1))
            parts = [carry, piece] if carry else [piece]
        else:
            parts = [piece]
        length = sum(map(len, parts)) + len(parts) - 1
    if parts:
        chunks.append(" ".join(parts))
    return chunks


def _tail(chunk: str, limit: int) -> str:
    """The longest end of ``chunk`` of at most ``limit`` characters starting at a sentence
    (preferred, if at least half of ``limit`` long) or word boundary; "" if there is none."""
    if limit <= 0:
        return ""
    if len(chunk) <= limit:
        return chunk
    start = len(chunk) - limit  # the tail may begin at index ``start`` or later
    match = _SENTENCE_END.search(chunk, max(0, start - 3))
    while match is not None and match.end() < start:
        match = _SENTENCE_END.search(chunk, match.start() + 1)
    if match is not None and len(chunk) - match.end() >= limit / 2:
        return chunk[match.end() :]
    space = chunk.find(" ", start - 1)
    return chunk[space + 1 :] if space != -1 else ""
