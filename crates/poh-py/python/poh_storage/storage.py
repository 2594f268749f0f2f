"""StorageManager: the prototype's API over the poh-store engine.

Every method the prototype had as a coroutine is one here. What changed underneath:
saves are durable when they return (payload fsynced, metadata committed, concurrent saves
share one commit), ``holder_id`` is persisted, ``recover()`` moves corrupt or orphaned
payloads to ``<base>/.quarantine/`` instead of deleting them, and ids may be any string of
at most 255 UTF-8 bytes without control characters.

``SyncStorageManager`` has the same methods as plain functions, for scripts.

Both take keyword-only ``layout`` and ``segment_window`` to choose the layout of a store
they create (see ``_open_args``); an existing store always opens with its own.
"""
import asyncio
import json
import math
import os
import threading
from typing import Any, Dict, List, Optional, Tuple, Union

from . import _bridge, _native
from ._errors import (IntegrityError, LayoutMismatchError, StorageError, StoreClosedError,
                      to_exception)
from .file_store import FileStore
from .sqlite_store import SQLiteStore
from .tx import Tx

__all__ = ("StorageManager", "SyncStorageManager", "IntegrityError", "StorageError",
           "StoreClosedError", "LayoutMismatchError", "LAYOUTS")

PathLike = Union[str, "os.PathLike[str]"]
#: No size limit for a load on the calling thread (the synchronous API blocks anyway).
_NO_LIMIT = 2 ** 64 - 1
_TxTuple = Tuple[str, str, float, bytes]
#: The layouts a store can be created with (``postgres``: with a ``postgres://`` URL as the
#: database).
LAYOUTS = ("files", "segments", "postgres")


def _open_args(layout: Optional[str], segment_window: Optional[float]
               ) -> Tuple[Optional[str], Optional[int]]:
    """The layout and segment window (whole seconds) to open a store with, checked.

    ``layout``: ``"files"`` (one file per payload, the prototype's layout),
    ``"segments"`` (append-only segment files: a group of concurrent saves is one append
    and one flush), ``"postgres"`` (the database is a ``postgres://`` URL), or None: the
    layout the store records, or for a new store the environment's ``POH_LAYOUT`` (as the
    ``poh-storage`` command line reads it), else files. ``segment_window``: seconds each
    segment (or partition) of a new segments (or postgres) store covers (default
    ``POH_SEGMENT_WINDOW``, else one hour); only with those layouts. A layout or window
    other than an existing store's own raises LayoutMismatchError when the store is
    opened."""
    source = "layout"
    if layout is None:
        env = os.environ.get("POH_LAYOUT")
        if env:
            layout, source = env, "POH_LAYOUT"
    if layout is not None:
        if not isinstance(layout, str):
            raise TypeError(f"layout must be a str or None, not {type(layout).__name__}")
        if layout not in LAYOUTS:
            raise ValueError(f"unknown {source} {layout!r}: expected 'files', 'segments' or "
                             "'postgres'")
    window: Optional[int] = None
    if segment_window is not None:
        if isinstance(segment_window, bool) or not isinstance(segment_window, (int, float)):
            raise TypeError("segment_window must be a number of seconds, not "
                            f"{type(segment_window).__name__}")
        if layout not in ("segments", "postgres"):
            raise ValueError("segment_window applies to a segments (or postgres) store only: "
                             "pass layout='segments'")
        window = _whole_seconds(float(segment_window), "segment_window")
    else:
        env = os.environ.get("POH_SEGMENT_WINDOW")
        if env:  # as the command line does: for a new segments store, else checked
            window = _whole_seconds(_native.parse_duration(env), "POH_SEGMENT_WINDOW")
    return layout, window


def _whole_seconds(secs: float, what: str) -> int:
    if not math.isfinite(secs) or secs < 1 or secs != int(secs):
        raise ValueError(f"{what} must be a whole number of seconds, at least 1 (got {secs!r})")
    return int(secs)


def _tx_tuple(tx: Any) -> _TxTuple:
    """The fields of ``tx`` (a Tx or anything with the same attributes), type-checked."""
    tx_id, holder_id, timestamp, payload = tx.tx_id, tx.holder_id, tx.timestamp, tx.payload
    if not isinstance(tx_id, str):
        raise TypeError(f"tx_id must be a str, not {type(tx_id).__name__}")
    if not isinstance(holder_id, str):
        raise TypeError(f"holder_id must be a str, not {type(holder_id).__name__}")
    if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)):
        raise TypeError(f"timestamp must be a number, not {type(timestamp).__name__}")
    if type(payload) is not bytes:
        if isinstance(payload, str):
            raise TypeError("payload must be bytes, not str")
        payload = bytes(payload)
    return tx_id, holder_id, float(timestamp), payload


def _check_id(tx_id: Any) -> str:
    if not isinstance(tx_id, str):
        raise TypeError(f"tx_id must be a str, not {type(tx_id).__name__}")
    return tx_id


def _settle_save(fut: "asyncio.Future[Any]", err: Any) -> None:
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(to_exception(err))


def _loaded(ok: bool, value: Any) -> Optional[Tx]:
    if ok:
        return None if value is None else Tx(*value)
    if value[0] == "invalid":  # an id no store can hold: there is no such tx
        return None
    raise to_exception(value)


def _settle_load(fut: "asyncio.Future[Any]", result: Any) -> None:
    try:
        fut.set_result(_loaded(*result))
    except BaseException as e:
        fut.set_exception(e)


class _Engine:
    """The native store of a manager, opened at most once, closed at most once."""

    def __init__(self, base: str, db: str, layout: Tuple[Optional[str], Optional[int]]) -> None:
        self.base = base
        self.db = db
        self.layout, self.window = layout  # from _open_args
        #: The store's layout once it is open ("files", "segments", ...).
        self.opened_layout: Optional[str] = None
        self.native: Any = None
        self.closed = False
        self._lock = threading.Lock()

    def get(self) -> Any:
        native = self.native
        if native is not None:
            return native
        with self._lock:
            if self.closed:
                raise StoreClosedError("store is closed")
            if self.native is None:
                native = _bridge.unwrap(_native.open_store_sync(
                    self.base, self.db, True, self.layout, self.window))
                self.opened_layout = native.layout
                self.native = native
            return self.native

    async def open_async(self) -> None:
        if self.native is None and not self.closed:
            native = await _bridge.call(_native.open_store, self.base, self.db, True,
                                        self.layout, self.window)
            with self._lock:
                if self.native is None and not self.closed:
                    self.opened_layout = native.layout
                    self.native = native
                    return
            await _bridge.call(native.close)  # lost a race: keep the first

    def store_layout(self) -> str:
        """The open store's layout (opening it if need be; known after close too)."""
        if self.opened_layout is None:
            self.get()
        assert self.opened_layout is not None
        return self.opened_layout

    def take(self) -> Any:
        with self._lock:
            self.closed = True
            native, self.native = self.native, None
            return native


class StorageManager:
    """Durable, verified transaction storage (payload files + SQLite metadata).

    ``StorageManager(file_store, sqlite_store)`` uses ``file_store.base_path`` and
    ``sqlite_store.db_path`` and opens the engine at the first call;
    ``await StorageManager.create(base, db)`` opens it at once (creating the base
    directory; the database may live inside it). ``loop`` is accepted and kept for the
    prototype's signature; the manager works on whichever event loop awaits it.

    Keyword-only ``layout`` (``"files"``, ``"segments"`` or None) and ``segment_window``
    (seconds) choose the layout of a store this creates; an existing store opens with its
    own, and naming another raises LayoutMismatchError. Flat files (the default, unless
    ``POH_LAYOUT`` says otherwise) keep the prototype's layout; ``"segments"`` packs
    payloads into append-only segment files, so concurrent saves commit as one append and
    one flush instead of one durable file each. ``manager.layout`` says which it is.
    """

    #: Largest payload, in bytes (by the size its row records), that ``load_tx`` reads on
    #: the calling thread instead of the engine's threads. Such a read blocks the event
    #: loop for one lookup and one small file read: microseconds from the page cache, a
    #: disk read on a cold one. 0 sends every load to the engine's threads.
    inline_load_max: int = 64 * 1024

    def __init__(self, file_store: FileStore, sqlite_store: SQLiteStore,
                 loop: Optional[asyncio.AbstractEventLoop] = None, *,
                 layout: Optional[str] = None, segment_window: Optional[float] = None) -> None:
        self._engine = _Engine(os.fspath(file_store.base_path), os.fspath(sqlite_store.db_path),
                               _open_args(layout, segment_window))
        self.file_store = file_store
        self.sqlite_store = sqlite_store
        self.loop = loop
        self._saves = _bridge.Coalescer(self._run_saves, _settle_save)
        self._loads = _bridge.Coalescer(self._run_loads, _settle_load)
        #: The last ``recover()`` report (dict), with every finding and what was done.
        self.last_recover_report: Optional[Dict[str, Any]] = None
        _bridge.register(self)

    @classmethod
    async def create(cls, base_path: PathLike, sqlite_path: PathLike,
                     loop: Optional[asyncio.AbstractEventLoop] = None, *,
                     layout: Optional[str] = None,
                     segment_window: Optional[float] = None) -> "StorageManager":
        """Opens (creating if missing) the store with payloads under ``base_path`` and
        metadata at ``sqlite_path``; ``layout`` and ``segment_window`` as for the class."""
        _open_args(layout, segment_window)  # a bad argument creates nothing
        manager = cls(FileStore(base_path), SQLiteStore(sqlite_path), loop, layout=layout,
                      segment_window=segment_window)
        try:
            await manager._engine.open_async()
        except BaseException:
            _bridge.unregister(manager)
            raise
        return manager

    @property
    def layout(self) -> str:
        """The store's layout: ``"files"``, ``"segments"`` (or ``"postgres"``)."""
        return self._engine.store_layout()

    def _run_saves(self, items: List[_TxTuple], done: Any) -> None:
        self._engine.get().save_each(items, done)

    def _run_loads(self, ids: List[str], done: Any) -> None:
        self._engine.get().load_many(ids, done)

    async def save_tx(self, tx: Tx) -> None:
        """Saves ``tx`` durably (replacing a tx with the same id); when this returns, the
        tx survives a crash or power loss. ValueError for invalid fields."""
        await self._saves.submit(_tx_tuple(tx))

    async def load_tx(self, tx_id: str) -> Optional[Tx]:
        """The tx, its payload checked against its SHA-256; None if there is none.
        IntegrityError (a ValueError) if the payload was altered, FileNotFoundError if
        its file is gone.

        A payload of at most ``inline_load_max`` bytes is read right here, with the GIL
        released (one indexed lookup and one small file read: no thread hand-off, so the
        coroutine completes without yielding to the loop); anything else, and any
        problem, goes to the engine's threads like a concurrent batch."""
        tx_id = _check_id(tx_id)
        limit = self.inline_load_max
        if limit > 0:
            got = self._engine.get().load_now(tx_id, limit)
            if got is not False:
                return None if got is None else Tx(*got)
        return await self._loads.submit(tx_id)

    async def delete_tx(self, tx_id: str) -> None:
        """Deletes the tx (row, then payload file); deleting a missing tx is fine."""
        try:
            await _bridge.call(self._engine.get().delete, _check_id(tx_id))
        except ValueError:  # an id no store can hold: nothing to delete
            pass

    async def list_txs(self) -> List[str]:
        """Every tx id, in id order."""
        return await _bridge.call(self._engine.get().list_ids)

    async def recover(self) -> List[str]:
        """Repairs what a crash or corruption left (see docs/design.md) and returns the
        ids of the valid txs. Corrupt and orphaned payloads go to ``.quarantine/``; rows
        whose payload is gone are dropped (their fields kept as a note there)."""
        valid, report = await _bridge.call(self._engine.get().recover)
        self.last_recover_report = json.loads(report)
        return valid

    async def _expire(self, now: float, ttl: float) -> List[str]:
        """Deletes every tx with ``now - timestamp > ttl``; their ids (for TTLManager)."""
        return await _bridge.call(self._engine.get().expire, float(now), float(ttl))

    async def flush(self) -> None:
        """Makes every save answered so far visible to other processes at once. Not
        needed for durability, nor within this process: a tx is on the disk and loads
        here once ``save_tx`` returns. A segments store commits the index rows of small
        saves a millisecond or so after answering them; this commits them now. A no-op
        on the other layouts."""
        await _bridge.call(self._engine.get().flush)

    async def close(self) -> None:
        """Finishes queued writes and closes the store; later calls raise
        StoreClosedError. Closing twice is fine."""
        native = self._engine.take()
        _bridge.unregister(self)
        if native is not None:
            await _bridge.call(native.close)
        await self.sqlite_store.close()
        self.file_store.close()

    def _close_at_exit(self) -> None:
        native = self._engine.take()
        if native is not None:
            _bridge.unwrap(native.close_sync())


class SyncStorageManager:
    """The StorageManager API as plain (blocking) calls, for scripts. Each call releases
    the GIL while the engine works. Usable as a context manager."""

    def __init__(self, base_path: PathLike, sqlite_path: PathLike, *,
                 layout: Optional[str] = None, segment_window: Optional[float] = None) -> None:
        args = _open_args(layout, segment_window)  # a bad argument creates nothing
        self.file_store = FileStore(base_path)
        self.sqlite_store = SQLiteStore(sqlite_path)
        self._engine = _Engine(self.file_store.base_path, self.sqlite_store.db_path, args)
        self._engine.get()
        self.last_recover_report: Optional[Dict[str, Any]] = None
        _bridge.register(self)

    @classmethod
    def create(cls, base_path: PathLike, sqlite_path: PathLike, *,
               layout: Optional[str] = None,
               segment_window: Optional[float] = None) -> "SyncStorageManager":
        return cls(base_path, sqlite_path, layout=layout, segment_window=segment_window)

    @property
    def layout(self) -> str:
        """The store's layout: ``"files"``, ``"segments"`` (or ``"postgres"``)."""
        return self._engine.store_layout()

    def save_tx(self, tx: Tx) -> None:
        (err,) = _bridge.unwrap(self._engine.get().save_each_sync([_tx_tuple(tx)]))
        if err is not None:
            raise to_exception(err)

    def save_many(self, txs: List[Tx]) -> None:
        """Saves several txs, committed together; raises the first failure (the others
        are saved)."""
        errs = _bridge.unwrap(self._engine.get().save_each_sync([_tx_tuple(t) for t in txs]))
        for err in errs:
            if err is not None:
                raise to_exception(err)

    def load_tx(self, tx_id: str) -> Optional[Tx]:
        native = self._engine.get()
        got = native.load_now(_check_id(tx_id), _NO_LIMIT)
        if got is not False:
            return None if got is None else Tx(*got)
        (result,) = _bridge.unwrap(native.load_many_sync([tx_id]))
        return _loaded(*result)

    def delete_tx(self, tx_id: str) -> None:
        try:
            _bridge.unwrap(self._engine.get().delete_sync(_check_id(tx_id)))
        except ValueError:
            pass

    def list_txs(self) -> List[str]:
        return _bridge.unwrap(self._engine.get().list_ids_sync())

    def recover(self) -> List[str]:
        valid, report = _bridge.unwrap(self._engine.get().recover_sync())
        self.last_recover_report = json.loads(report)
        return valid

    def _expire(self, now: float, ttl: float) -> List[str]:
        return _bridge.unwrap(self._engine.get().expire_sync(float(now), float(ttl)))

    def flush(self) -> None:
        """As ``StorageManager.flush``."""
        _bridge.unwrap(self._engine.get().flush_sync())

    def close(self) -> None:
        native = self._engine.take()
        _bridge.unregister(self)
        if native is not None:
            _bridge.unwrap(native.close_sync())

    _close_at_exit = close

    def __enter__(self) -> "SyncStorageManager":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
