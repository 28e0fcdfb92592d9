"""A vector space as data: the embedder that makes its vectors and what changes them (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.config import Settings

MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class SpaceSpec:
    """``embedder``: the setting (hash | onnx | minilm | openai); ``name`` and ``dim``: the space's
    identity (vectors compare only within one); ``options``: the other settings that change vectors."""

    embedder: str
    name: str
    dim: int
    options: dict[str, Any] = field(default_factory=dict)

    def same_space(self, other: SpaceSpec) -> bool:
        return (self.name, self.dim) == (other.name, other.dim)

    def label(self) -> str:
        return f"{self.name} ({self.dim}-d)"


def spec_of(settings: Settings) -> SpaceSpec:
    """The space the settings' embedder writes (no model loaded)."""
    kind, dim = settings.embedder, settings.embed_dim
    if kind == "hash":
        return SpaceSpec(kind, "hash-v1", dim)
    if kind == "onnx":
        int8 = settings.embed_precision == "int8"
        return SpaceSpec(kind, "all-MiniLM-L6-v2/onnx-int8" if int8 else MINILM_NAME, dim,
                         {"embed_precision": settings.embed_precision})
    if kind == "minilm":
        return SpaceSpec(kind, MINILM_NAME, dim)
    return SpaceSpec(kind, f"openai/{settings.openai_model}", dim, {"openai_model": settings.openai_model})


def settings_for(spec: SpaceSpec, settings: Settings) -> Settings:
    """``settings`` with the embedder of ``spec`` (the rest, e.g. URLs and keys, kept)."""
    return settings.model_copy(update={"embedder": spec.embedder, "embed_dim": spec.dim, **spec.options})


def mismatch(configured: SpaceSpec, active: SpaceSpec) -> str | None:
    """What a process configured with ``configured`` says when the database's space is ``active``."""
    if configured.same_space(active):
        return None
    return (f"the configured embedder writes {configured.label()} but the database's active vector space is "
            f"{active.label()}: following the database (set OPSCTL_EMBEDDER/OPSCTL_EMBED_DIM to match, "
            f"or switch with `opsctl index reembed`)")
