"""Metadata rows ``txs(tx_id, storage_hash, timestamp)``, as in the prototype.

StorageManager does not write through this class (the engine owns the database: WAL,
synchronous=FULL, group commit, ``holder_id`` and ``size`` columns); it is kept for
callers that construct it or use it on raw rows. Its connection is the standard
library's ``sqlite3`` on the loop's default executor; ``_conn`` is ``None`` until
``init()`` (or the first call) and is closed by ``await store._conn.close()`` or
``await store.close()``, as callers of the prototype do. Writes here bypass the engine's
store lock, as the prototype's did: prefer StorageManager.
"""
import asyncio
import sqlite3
import threading
from typing import Any, Callable, List, Optional, Sequence, Tuple, TypeVar, Union
import os

__all__ = ("SQLiteStore",)

T = TypeVar("T")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS txs ("
    " tx_id TEXT PRIMARY KEY,"
    " storage_hash TEXT NOT NULL,"
    " timestamp REAL NOT NULL)"
)


class _Connection:
    """A sqlite3 connection used from the loop's default executor, one call at a time."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.raw = conn
        self._lock = threading.Lock()

    def _locked(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            return fn(*args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._locked, fn, *args)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> List[Tuple[Any, ...]]:
        """Runs one statement and commits; returns its rows."""
        def go() -> List[Tuple[Any, ...]]:
            rows = self.raw.execute(sql, params).fetchall()
            self.raw.commit()
            return rows
        return await self.run(go)

    async def commit(self) -> None:
        await self.run(self.raw.commit)

    async def close(self) -> None:
        await self.run(self.raw.close)


class SQLiteStore:
    """The prototype's metadata store, on the same database file the engine uses."""

    def __init__(self, db_path: Union[str, "os.PathLike[str]"]) -> None:
        self.db_path = os.fspath(db_path)
        self._conn: Optional[_Connection] = None

    async def init(self) -> None:
        """Connects, creating the prototype's table if the database has none (the engine
        migrates it in place when it next opens the database for writing)."""
        if self._conn is not None:
            return
        def connect() -> sqlite3.Connection:
            conn = sqlite3.connect(self.db_path, timeout=30.0, check_same_thread=False)
            conn.execute(_SCHEMA)
            conn.commit()
            return conn
        loop = asyncio.get_running_loop()
        self._conn = _Connection(await loop.run_in_executor(None, connect))

    async def _c(self) -> _Connection:
        if self._conn is None:
            await self.init()
        assert self._conn is not None
        return self._conn

    async def save(self, tx_id: str, storage_hash: str, timestamp: float) -> None:
        await (await self._c()).execute(
            "INSERT OR REPLACE INTO txs (tx_id, storage_hash, timestamp) VALUES (?, ?, ?)",
            (tx_id, storage_hash, timestamp),
        )

    async def load(self, tx_id: str) -> Optional[Tuple[str, float]]:
        rows = await (await self._c()).execute(
            "SELECT storage_hash, timestamp FROM txs WHERE tx_id = ?", (tx_id,))
        if not rows:
            return None
        return rows[0][0], rows[0][1]

    async def remove(self, tx_id: str) -> None:
        await (await self._c()).execute("DELETE FROM txs WHERE tx_id = ?", (tx_id,))

    async def list_ids(self) -> List[str]:
        rows = await (await self._c()).execute("SELECT tx_id FROM txs ORDER BY tx_id")
        return [r[0] for r in rows]

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()
