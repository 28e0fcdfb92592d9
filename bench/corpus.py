"""A deterministic synthetic corpus with topical structure, like a real document collection.

Real collections are about subjects: documents on the same subject share vocabulary, so their
embeddings cluster, and a search query is a few words about one subject. Independent random
words (what an earlier version generated) give near-uniform vectors that no approximate index
can rank, which says nothing about real data. The model here is the classic one of topic models
(LDA-style mixtures with bursty words):

- a vocabulary of pronounceable pseudo-words: ``BACKGROUND_WORDS`` function-like words used by
  every document (Zipf frequencies), the rest shared out among ``TOPICS`` subjects of
  ``TOPIC_WORDS`` words each (general words belong to many subjects, specific ones to few);
- each company has its own Zipf popularity over the subjects (a few are common, most rare);
- a document has one main subject drawn by its company's popularity, sometimes a second one, and
  mixes background words (25 %), second-subject words (10 %) and main-subject words, the latter
  through its own Dirichlet draw around the subject's word probabilities (documents repeat their
  own key terms: burstiness);
- a query is 2 to 6 distinct words of one subject (drawn by the company's popularity), like what
  people type into a search box.

Documents are sized so that the service's chunker (default ``chunk_size`` 800, overlap 100)
cuts each into about four chunks. Company A holds 90% of the documents, company B 10%.
Chunking here uses the service's own ``chunk_text``, so the raw baselines COPY exactly the rows
the service writes. Everything is seeded: the same seed gives the same corpus and queries.
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
VOCABULARY_SIZE = 12000
BACKGROUND_WORDS = 150  # function-like words every document uses (the, of, and …)
ZIPF_EXPONENT = 1.0
TOPICS = 300
TOPIC_WORDS = 120  # each subject's own vocabulary
TOPIC_POPULARITY_EXPONENT = 0.8  # a few subjects are common in a company, most are rare
SHARED_WORD_EXPONENT = 0.7  # topic vocabularies overlap through general domain words
DOC_CONCENTRATION = 30.0  # Dirichlet concentration of a document's own word mix (burstiness)
MIX_BACKGROUND, MIX_SECONDARY = 0.25, 0.10  # token shares; the rest comes from the main topic
SECONDARY_TOPIC_SHARE = 0.4  # documents that also touch a second subject
QUERY_WORDS = (2, 6)
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
    topic: int = -1  # index into Corpus.topics of the document's main subject

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
    topics: list[Topic] = field(default_factory=list)
    popularity: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)  # per company, over topics
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


@dataclass(frozen=True)
class Topic:
    """A subject: its own vocabulary (indexes into the corpus vocabulary) and word probabilities."""

    words: npt.NDArray[np.int64]
    weights: npt.NDArray[np.float64]


def make_topics(np_rng: np.random.Generator, n_topics: int = TOPICS) -> list[Topic]:
    """``n_topics`` subjects over the non-background vocabulary. A topic's words are drawn with a
    Zipf preference for general words, so common domain words belong to many topics and rare
    ones to few; inside a topic the word probabilities are Zipf-shaped in a random order."""
    pool = np.arange(BACKGROUND_WORDS, VOCABULARY_SIZE)
    shared = zipf_probabilities(len(pool), SHARED_WORD_EXPONENT)
    weights = zipf_probabilities(TOPIC_WORDS)
    return [Topic(np_rng.choice(pool, size=TOPIC_WORDS, replace=False, p=shared), weights) for _ in range(n_topics)]


def _document_words(np_rng: np.random.Generator, topics: list[Topic], main: int, secondary: int | None,
                    background: npt.NDArray[np.float64], n: int) -> npt.NDArray[np.int64]:
    """``n`` word indexes: background words, the main topic through the document's own bursty mix
    (a Dirichlet draw around the topic's probabilities: a document repeats its own key terms), and
    with ``secondary`` some words of a second topic."""
    topic = topics[main]
    own = np_rng.dirichlet(DOC_CONCENTRATION * topic.weights + 1e-3)
    sources = np_rng.random(n)
    second_share = MIX_SECONDARY if secondary is not None else 0.0
    n_back = int((sources < MIX_BACKGROUND).sum())
    n_second = int(((sources >= MIX_BACKGROUND) & (sources < MIX_BACKGROUND + second_share)).sum())
    parts = [np_rng.choice(BACKGROUND_WORDS, size=n_back, p=background),
             np_rng.choice(topic.words, size=n - n_back - n_second, p=own)]
    if secondary is not None:
        parts.append(np_rng.choice(topics[secondary].words, size=n_second, p=topics[secondary].weights))
    words = np.concatenate(parts)
    np_rng.shuffle(words)
    return words


def build_corpus(target_chunks: int, seed: int, chunk_size: int, chunk_overlap: int) -> Corpus:
    """Documents until the corpus holds at least ``target_chunks`` chunks; every 10th belongs to B.

    Each company has its own popularity order over the shared topics (Zipf), each document one
    main topic, sometimes a second one, and background words (see the module docstring)."""
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    vocab = vocabulary(rng)
    topics = make_topics(np_rng)
    background = zipf_probabilities(BACKGROUND_WORDS)
    topic_zipf = zipf_probabilities(len(topics), TOPIC_POPULARITY_EXPONENT)
    popularity = {c: topic_zipf[np_rng.permutation(len(topics))] for c in COMPANIES}
    docs: list[Doc] = []
    total = 0
    chunk_seconds = 0.0
    while total < target_chunks:
        index = len(docs)
        company = "B" if index % 10 == 9 else "A"
        target = rng.randint(*DOC_CHARS)
        main = int(np_rng.choice(len(topics), p=popularity[company]))
        secondary = int(np_rng.integers(len(topics))) if np_rng.random() < SECONDARY_TOPIC_SHARE else None
        words = [vocab[i] for i in _document_words(np_rng, topics, main, secondary, background, target // 4)]
        text = document_text(words, rng, target)
        started = time.perf_counter()
        chunks = tuple(chunk_text(text, chunk_size, chunk_overlap))
        chunk_seconds += time.perf_counter() - started
        title = " ".join(vocab[i] for i in topics[main].words[:3]).capitalize() + f" {index}"
        docs.append(Doc(company, f"{company.lower()}-{index:07d}", title, text, chunks, main))
        total += len(chunks)
    return Corpus(docs, vocab, chunk_seconds, topics, popularity)


def make_queries(corpus: Corpus, company: str, n: int, seed: int) -> list[str]:
    """``n`` distinct search-box queries for ``company``: a topic drawn by the company's topic
    popularity, then 2 to 6 distinct words of that topic by their probability in it."""
    np_rng = np.random.default_rng(seed)
    popularity = corpus.popularity[company]
    found: dict[str, None] = {}
    while len(found) < n:
        topic = corpus.topics[int(np_rng.choice(len(corpus.topics), p=popularity))]
        size = int(np_rng.integers(QUERY_WORDS[0], QUERY_WORDS[1] + 1))
        words = np_rng.choice(topic.words, size=size, replace=False, p=topic.weights)
        found[" ".join(corpus.vocabulary[i] for i in words)] = None
    return list(found)
