"""chunk_text: table tests for the cut points, hypothesis for the invariants."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.chunking import chunk_text


@pytest.mark.parametrize(
    ("text", "size", "overlap", "expected"),
    [
        pytest.param("", 50, 0, [], id="empty"),
        pytest.param(" \n\n\t \r\n ", 50, 10, [], id="whitespace-only"),
        pytest.param("  one   two\tthree\n four ", 50, 0, ["one two three four"], id="normalised"),
        pytest.param("a" * 50, 50, 0, ["a" * 50], id="exactly-size"),
        pytest.param(
            "First paragraph here.\n\nSecond paragraph here.",
            30,
            0,
            ["First paragraph here.", "Second paragraph here."],
            id="paragraph-boundary",
        ),
        pytest.param(
            "Short one.\n\nShort two.\n \nShort three.",
            40,
            0,
            ["Short one. Short two. Short three."],
            id="small-paragraphs-packed",
        ),
        pytest.param(
            "Alpha beta gamma. Delta epsilon zeta. Eta theta iota.",
            40,
            0,
            ["Alpha beta gamma. Delta epsilon zeta.", "Eta theta iota."],
            id="sentence-boundary",
        ),
        pytest.param(
            'He said "stop." Then he left. Nobody followed him there.',
            30,
            0,
            ['He said "stop." Then he left.', "Nobody followed him there."],
            id="sentence-with-closing-quote",
        ),
        pytest.param(
            "one two three four five six seven eight nine ten",
            20,
            0,
            ["one two three four", "five six seven eight", "nine ten"],
            id="word-boundary",
        ),
        pytest.param(
            "abcdefghijklmnopqrstuvwxy", 10, 0, ["abcdefghij", "klmnopqrst", "uvwxy"], id="hard-cut"
        ),
        pytest.param(
            "ab abcdefghijklmnopqrst cd",
            10,
            0,
            ["ab", "abcdefghij", "klmnopqrst", "cd"],
            id="hard-cut-between-words",
        ),
        pytest.param(
            "Alpha beta gamma. Delta epsilon zeta. Eta theta iota.",
            40,
            20,
            ["Alpha beta gamma. Delta epsilon zeta.", "Delta epsilon zeta. Eta theta iota."],
            id="overlap-whole-sentence",
        ),
        pytest.param(
            "one two three four five six seven eight nine ten",
            20,
            10,
            ["one two three four", "three four five six", "five six seven eight", "eight nine ten"],
            id="overlap-words",
        ),
        pytest.param(
            "Its a long first sentence here. Ok. Next sentence goes on.",
            40,
            16,
            ["Its a long first sentence here. Ok.", "here. Ok. Next sentence goes on."],
            id="short-sentence-tail-falls-back-to-words",
        ),
        pytest.param(
            "aaaa bbbb cccc dddd eeeeeeeeeeeeeeee",
            20,
            10,
            ["aaaa bbbb cccc dddd", "eeeeeeeeeeeeeeee"],
            id="overlap-dropped-when-no-room",
        ),
    ],
)
def test_chunk_table(text: str, size: int, overlap: int, expected: list[str]) -> None:
    assert chunk_text(text, size, overlap) == expected


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (10, -1), (10, 10), (10, 11)])
def test_rejects_bad_parameters(size: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        chunk_text("some text", size, overlap)


def test_deterministic() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(500))
    assert chunk_text(text, 120, 30) == chunk_text(text, 120, 30)


@pytest.mark.parametrize(
    "unit",
    [
        "The service stores every document durably. Workers embed chunks! Does search work? Yes.\n\n",
        "one long paragraph of words without any sentence end ",  # the slowest path: word by word
    ],
    ids=["paragraphs", "words-only"],
)
def test_ten_megabytes_chunk_into_bounded_pieces(unit: str) -> None:
    # the time it takes belongs in `make bench`, not in an assertion (shared, noisy machines)
    text = unit * (10_000_000 // len(unit))
    chunks = chunk_text(text, 800, 100)
    assert len(chunks) > 10_000
    assert max(len(c) for c in chunks) <= 800


# --- properties -------------------------------------------------------------------------------

_word = st.text(alphabet="abcdefghij.!?\"'", min_size=1, max_size=14)
_gap = st.sampled_from([" ", "  ", "\n", "\n\n", " \n \n", "\t"])


@st.composite
def _texts(draw: st.DrawFn) -> str:
    words = draw(st.lists(_word, max_size=60))
    gaps = draw(st.lists(_gap, min_size=len(words), max_size=len(words)))
    return "".join(g + w for g, w in zip(gaps, words, strict=True))


_size = st.integers(min_value=1, max_value=60)


@settings(max_examples=300, deadline=None)
@given(text=_texts(), size=_size, data=st.data())
def test_chunks_are_bounded_and_non_empty(text: str, size: int, data: st.DataObject) -> None:
    overlap = data.draw(st.integers(min_value=0, max_value=size - 1))
    for chunk in chunk_text(text, size, overlap):
        assert 0 < len(chunk) <= size
        assert chunk == " ".join(chunk.split())


@settings(max_examples=300, deadline=None)
@given(text=_texts(), size=st.integers(min_value=14, max_value=60))
def test_without_overlap_words_concatenate_to_input(text: str, size: int) -> None:
    chunks = chunk_text(text, size, 0)
    assert [w for c in chunks for w in c.split()] == text.split()


@settings(max_examples=300, deadline=None)
@given(text=_texts(), size=_size)
def test_without_overlap_characters_survive_hard_cuts(text: str, size: int) -> None:
    chunks = chunk_text(text, size, 0)
    assert "".join(c.replace(" ", "") for c in chunks) == "".join(text.split())


@settings(max_examples=300, deadline=None)
@given(text=_texts(), size=st.integers(min_value=14, max_value=60), data=st.data())
def test_with_overlap_input_is_rebuilt_from_chunks_minus_shared_prefixes(
    text: str, size: int, data: st.DataObject
) -> None:
    overlap = data.draw(st.integers(min_value=0, max_value=size - 1))
    chunks = [c.split() for c in chunk_text(text, size, overlap)]
    assert _rebuilds(text.split(), chunks, overlap)


def _rebuilds(words: list[str], chunks: list[list[str]], overlap: int) -> bool:
    """Whether some choice of shared prefixes (each a suffix of the previous chunk, at most
    ``overlap`` characters) makes the chunks, minus those prefixes, concatenate to ``words``."""
    positions = {0}
    previous: list[str] = []
    for chunk in chunks:
        shared = [
            k
            for k in range(min(len(previous), len(chunk) - 1) + 1)
            if (k == 0 or len(" ".join(chunk[:k])) <= overlap) and previous[len(previous) - k :] == chunk[:k]
        ]
        positions = {
            p + len(chunk) - k
            for p in positions
            for k in shared
            if words[p : p + len(chunk) - k] == chunk[k:]
        }
        previous = chunk
    return len(words) in positions
