"""Redis commands of different callers in one round trip: sent together now, each reply read later.

The search route sends, before its key lookup, the cache GET of the answer it guesses and the
rate limit's charge (``core.search.ahead``); the database answers meanwhile, then each caller
reads its own reply (``Batch.reply``). Replies come back in the order the commands were sent, so
reading a later one first keeps the earlier ones for their callers. The connection goes back to
the pool once every reply is read (``close`` reads what nobody asked for). A command Redis refuses
(``NOSCRIPT``, a wrong type) is that command's error only; a failed connection is every unread
reply's, trips the cache's breaker and is discarded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.cache import Cache


class BatchFailed(Exception):
    """The batch was not sent, or its connection failed before this reply was read."""


class Batch:
    """Commands added by ``add``, sent in one write by ``send``; their replies read by ``reply``."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self._commands: list[tuple[Any, ...]] = []
        self._replies: list[Any] = []  # read so far, in order: a value or the command's error
        self._conn: Any = None
        self._failed: BatchFailed | None = None

    def add(self, *command: Any) -> int:
        """Queue one command (not sent yet); returns the index its reply is read by."""
        if self._conn is not None or self._failed is not None:
            raise RuntimeError("add every command before send")
        self._commands.append(command)
        return len(self._commands) - 1

    def __len__(self) -> int:
        return len(self._commands)

    def send(self) -> bool:
        """Send every command in one write; False when Redis is not asked (down, breaker open, a
        failed write): every reply is then ``BatchFailed``."""
        if not self._commands:
            return True
        if not self.cache.available:
            self._failed = BatchFailed("redis not available")
            return False
        pool = self.cache.client.connection_pool
        conn = None
        try:
            conn = pool.get_connection()
            conn.send_packed_command(conn.pack_commands(self._commands))
        except Exception as exc:
            if conn is not None:
                conn.disconnect()
                pool.release(conn)
            self.cache._trip(exc)
            self._failed = BatchFailed(type(exc).__name__)
            return False
        self._conn = conn
        return True

    def reply(self, index: int) -> Any:
        """The reply of command ``index``; raises the error Redis answered it with, or ``BatchFailed``."""
        while len(self._replies) <= index and self._read_one():
            pass
        if index >= len(self._replies):
            raise self._failed or BatchFailed("not sent")
        found = self._replies[index]
        if isinstance(found, Exception):
            raise found
        return found

    def _read_one(self) -> bool:
        conn = self._conn
        if conn is None:
            return False
        from redis.exceptions import ResponseError

        try:
            self._replies.append(conn.read_response())
        except ResponseError as exc:  # that command's error, the connection still in step
            self._replies.append(exc)
        except Exception as exc:
            self._conn = None
            conn.disconnect()
            self.cache.client.connection_pool.release(conn)
            self.cache._trip(exc)
            self._failed = BatchFailed(type(exc).__name__)
            return False
        if len(self._replies) == len(self._commands):
            self._conn = None
            self.cache.client.connection_pool.release(conn)
        return True

    def close(self) -> None:
        """Read the replies nobody asked for: the connection goes back in a clean state."""
        while self._conn is not None and self._read_one():
            pass
