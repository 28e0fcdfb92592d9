"""A process's embedder for the database's active vector space.

The API and the ingest workers embed with a :class:`SpaceEmbedder`: the embedder of the space the
database records as active (built from the space's recorded settings), whatever the process was
configured with. It moves to the new space when the database says the space changed: a search's
statement fails with SQLSTATE OPS01 (``vector_space_is``), an ingest batch reads the active row.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from core import metrics
from core.config import Settings
from core.errors import ConfigError
from core.spaces.spec import SpaceSpec, settings_for, spec_of
from core.spaces.store import SPACE_CHANGED, Space, active

if TYPE_CHECKING:
    from core.embed import Embedder, Vectors

log = logging.getLogger(__name__)


def _make(settings: Settings) -> Embedder:
    from core.embed import make_embedder

    return make_embedder(settings)


class SpaceEmbedder:
    """The Embedder protocol (``name``, ``dim``, ``embed``) for the active space.

    ``current()`` gives the space id and embedder together (a switch may happen between two reads
    of attributes); ``follow(space)`` moves to ``space`` if it is another one."""

    def __init__(self, settings: Settings, space: Space, make: Callable[[Settings], Embedder] = _make) -> None:
        self.settings = settings
        self.configured = spec_of(settings)
        self._make = make
        self._lock = threading.Lock()
        self._state = self._build(space)

    def _build(self, space: Space) -> tuple[int, SpaceSpec, Embedder]:
        embedder = self._make(settings_for(space.spec, self.settings))
        differs = not self.configured.same_space(space.spec)
        metrics.EMBEDDER_MISMATCH.set(1 if differs else 0)
        return space.id, space.spec, embedder

    @property
    def name(self) -> str:
        return self._state[2].name

    @property
    def dim(self) -> int:
        return self._state[2].dim

    def current(self) -> tuple[int, Embedder]:
        space_id, _, embedder = self._state
        return space_id, embedder

    def embed(self, texts: Sequence[str]) -> Vectors:
        return self._state[2].embed(texts)

    def load(self) -> None:
        """Load the space's model now, if its embedder has one (``core.ingest.worker.warm_up``)."""
        load = getattr(self._state[2], "load", None)
        if callable(load):
            load()

    def follow(self, space: Space) -> bool:
        """Embed in ``space`` from now on; True if it changed."""
        with self._lock:
            if space.id == self._state[0]:
                return False
            before = self._state[1]
            self._state = self._build(space)
        log.warning("the active vector space changed: %s → %s (space %d); embedding in it from now on",
                    before.label(), space.spec.label(), space.id)
        return True

    def refresh(self, conn: Any) -> bool:
        """Read the active space and follow it; True if it changed."""
        return self.follow(active(conn))


def space_changed(exc: BaseException) -> bool:
    """Whether ``exc`` is the database saying the query's space is not the active one."""
    return getattr(exc, "sqlstate", None) == SPACE_CHANGED


def query_vector(embedder: Embedder | None, query: str) -> tuple[Any, int | None]:
    """The query's vector and its space (None for an embedder that is not a SpaceEmbedder: library
    callers such as the benchmarks, whose vectors the database then does not check)."""
    assert embedder is not None
    if isinstance(embedder, SpaceEmbedder):
        space_id, inner = embedder.current()
        return inner.embed([query])[0], space_id
    return embedder.embed([query])[0], None


def follow_database(settings: Settings, conn: Any, make: Callable[[Settings], Embedder] = _make) -> SpaceEmbedder:
    """At a process's start: the embedder of the database's active space, saying so when the
    settings ask for another space (a warning in the log, the gauge ``core_embedder_config_mismatch``)."""
    space = active(conn)
    follower = SpaceEmbedder(settings, space, make)
    if not follower.configured.same_space(space.spec):
        log.warning("configured embedder %s, but the database's active vector space is %s: embedding in %s",
                    follower.configured.label(), space.spec.label(), space.spec.label())
    return follower


def hold_space(conn: Any, embedder: Embedder) -> None:
    """In an ingest batch's transaction, before it reads or writes chunks: hold the active space's
    row to the commit (a switch waits for the batch, so the batch's vectors are of the space whose
    column it writes) and embed in that space: a SpaceEmbedder follows it, any other embedder must
    write it (ConfigError otherwise: nothing is written, the jobs stay queued)."""
    space = active(conn, hold=True)
    if isinstance(embedder, SpaceEmbedder):
        embedder.follow(space)
        return
    if (embedder.name, embedder.dim) != (space.spec.name, space.spec.dim):
        raise ConfigError(f"the embedder {embedder.name} ({embedder.dim}-d) does not write the database's active "
                          f"vector space {space.spec.label()}")
