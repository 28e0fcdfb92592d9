"""Words and quantities as a person reads them: ``32.4 MiB``, ``1 result``, ``2 results``.

Pure and dependency-free, so pure decision modules (a plan's sentence) and the CLI's table renderer
(``opsctl.output``) phrase them the same way. Machine output (JSON, YAML, metrics) keeps the exact
integers; only text meant to be read uses these.
"""

from __future__ import annotations

_BINARY = ("KiB", "MiB", "GiB", "TiB", "PiB")


def format_bytes(n: int | float) -> str:
    """``512 B``, ``982.8 KiB``, ``32.4 MiB``, ``256 MiB`` (a whole number drops its ``.0``)."""
    size = float(n)
    if abs(size) < 1024:
        return f"{int(size)} B"
    for unit in _BINARY:
        size /= 1024
        if abs(size) < 1024 or unit == _BINARY[-1]:
            return f"{f'{size:.1f}'.removesuffix('.0')} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 result``, ``2 results``, ``0 results``; ``many`` for an irregular plural (``index``, ``indexes``)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"
