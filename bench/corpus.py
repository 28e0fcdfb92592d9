"""A deterministic synthetic corpus: seeded pseudo-words with Zipf frequencies, two companies.

Documents are sized so that the service's chunker (default ``chunk_size`` 800, overlap 100)
cuts each into about four chunks. Company A holds 90% of the documents, company B 10%.
Chunking here uses the service's own ``chunk_text``, so the raw baselines COPY exactly the rows
the service writes.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from core.chunking import chunk_text

COMPANIES = ("A", "B")
VOCABULARY_SIZE = 4000
ZIPF_EXPONENT = 1.0
DOC_CHARS = (1800, 2300)  # ~4 chunks per document with chunk_size 800, overlap 100
SENTENCE_WORDS = (6, 18)
SENTENCES_PER_PARAGRAPH = (3, 7)
_CONSONANTS = "bcdfghjklmnprstvwz"
_VOWELS = "aeiou"


@dataclass(frozen=True)
class Doc:
    company: str
    external_id: str
    title: str
    text: str
    chunks: tuple[str, ...]

    @property
    def metadata(self) -> dict[str, Any]:
        return {"bench": True, "company": self.company}

    def payload(self) -> dict[str, Any]:
        return {"external_id": self.external_id, "title": self.title, "text": self.text, "metadata": self.metadata}


@dataclass
class Corpus:
    docs: list[Doc]
    vocabulary: list[str]
    chunk_seconds: float = 0.0
    _offsets: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        offsets, total = [], 0
        for doc in self.docs:
            offsets.append(total)
            total += len(doc.chunks)
        self._offsets = offsets

    @property
    def n_chunks(self) -> int:
        return sum(len(d.chunks) for d in self.docs)

    def chunk_texts(self) -> list[str]:
        return [c for d in self.docs for c in d.chunks]

    def chunk_offset(self, doc_index: int) -> int:
        """Index of the first chunk of ``docs[doc_index]`` in ``chunk_texts()``."""
        return self._offsets[doc_index]

    def docs_of(self, company: str) -> list[Doc]:
        return [d for d in self.docs if d.company == company]

    def chunks_of(self, company: str) -> int:
        return sum(len(d.chunks) for d in self.docs if d.company == company)


def vocabulary(rng: random.Random, size: int = VOCABULARY_SIZE) -> list[str]:
    """``size`` distinct pronounceable pseudo-words (1 to 4 syllables)."""
    words: dict[str, None] = {}
    while len(words) < size:
        syllables = rng.choice((1, 2, 2, 3, 3, 4))
        words["".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(syllables))] = None
    return list(words)


def zipf_probabilities(n: int, exponent: float = ZIPF_EXPONENT) -> npt.NDArray[np.float64]:
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    return weights / weights.sum()


def _sentences(words: Sequence[str], rng: random.Random) -> Iterator[str]:
    i = 0
    while i < len(words):
        n = rng.randint(*SENTENCE_WORDS)
        part = list(words[i : i + n])
        i += n
        if part:
            yield " ".join([part[0].capitalize(), *part[1:]]) + "."


def document_text(words: Sequence[str], rng: random.Random, target_chars: int) -> str:
    """Paragraphs of sentences drawn from ``words``, cut near ``target_chars`` characters."""
    paragraphs: list[str] = []
    current: list[str] = []
    length = 0
    limit = rng.randint(*SENTENCES_PER_PARAGRAPH)
    for sentence in _sentences(words, rng):
        current.append(sentence)
        length += len(sentence) + 1
        if len(current) >= limit:
            paragraphs.append(" ".join(current))
            current, limit = [], rng.randint(*SENTENCES_PER_PARAGRAPH)
        if length >= target_chars:
            break
    if current:
        paragraphs.append(" ".join(current))
    return "\n\n".join(paragraphs)


def build_corpus(target_chunks: int, seed: int, chunk_size: int, chunk_overlap: int) -> Corpus:
    """Documents until the corpus holds at least ``target_chunks`` chunks; every 10th belongs to B."""
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    vocab = vocabulary(rng)
    probabilities = zipf_probabilities(len(vocab))
    docs: list[Doc] = []
    total = 0
    chunk_seconds = 0.0
    while total < target_chunks:
        index = len(docs)
        company = "B" if index % 10 == 9 else "A"
        target = rng.randint(*DOC_CHARS)
        words = [vocab[i] for i in np_rng.choice(len(vocab), size=target // 4, p=probabilities)]
        text = document_text(words, rng, target)
        started = time.perf_counter()
        chunks = tuple(chunk_text(text, chunk_size, chunk_overlap))
        chunk_seconds += time.perf_counter() - started
        title = " ".join(words[:5]).capitalize()
        docs.append(Doc(company, f"{company.lower()}-{index:07d}", title, text, chunks))
        total += len(chunks)
    return Corpus(docs, vocab, chunk_seconds)


def make_queries(corpus: Corpus, company: str, n: int, seed: int, replace_ratio: float = 0.25) -> list[str]:
    """``n`` distinct queries: a window of 6 to 12 words of a random stored chunk of ``company``,
    about a quarter of the words replaced by random vocabulary words."""
    rng = random.Random(seed)
    docs = corpus.docs_of(company)
    found: dict[str, None] = {}
    while len(found) < n:
        chunk = rng.choice(rng.choice(docs).chunks)
        words = chunk.replace(".", "").lower().split()
        width = rng.randint(6, 12)
        start = rng.randrange(max(1, len(words) - width))
        window = [rng.choice(corpus.vocabulary) if rng.random() < replace_ratio else w
                  for w in words[start : start + width]]
        found[" ".join(window)] = None
    return list(found)
