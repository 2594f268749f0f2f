"""Choosing the layout from Python: a segments store created, used and reopened, the
layout of an existing store kept, bad choices refused, POH_LAYOUT read as the command
line reads it."""
import asyncio
import os
import sqlite3
import time

import pytest

import poh_ttl.manager
from poh_storage import (LayoutMismatchError, StorageError, StorageManager, StoreClosedError,
                         SyncStorageManager, Tx)
from poh_storage.file_store import FileStore
from poh_storage.sqlite_store import SQLiteStore
from poh_ttl.manager import TTLManager

from conftest import listing, run_module


def layout_record(base) -> str:
    return (base / ".poh-layout").read_text()


def payload_files(base):
    return [n for n in listing(base) if n.endswith(".bin")]


@pytest.mark.asyncio
async def test_segments_round_trip(paths):
    base, db = paths
    m = await StorageManager.create(str(base), str(db), layout="segments")
    try:
        assert m.layout == "segments"
        txs = [Tx(f"t{i}", f"holder-{i}", 1_700_000_000.0 + i, os.urandom(100 + i))
               for i in range(5)]
        for tx in txs:
            await m.save_tx(tx)
        for tx in txs:
            got = await m.load_tx(tx.tx_id)
            assert got is not None
            assert (got.tx_id, got.holder_id, got.timestamp, got.payload) == \
                (tx.tx_id, tx.holder_id, tx.timestamp, tx.payload)
        assert await m.list_txs() == [tx.tx_id for tx in txs]
        await m.delete_tx("t2")
        assert await m.load_tx("t2") is None
        assert await m.list_txs() == ["t0", "t1", "t3", "t4"]
        assert sorted(await m.recover()) == ["t0", "t1", "t3", "t4"]
        assert m.last_recover_report is not None
        assert await m.load_tx("t4") == txs[4]
    finally:
        await m.close()
    assert m.layout == "segments"  # still known after close
    assert "layout=segments" in layout_record(base)
    assert payload_files(base) == []  # payloads are packed, not one file each


def committed_rows(db) -> int:
    """The index rows another connection sees: what is committed."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM records").fetchone()[0]
    finally:
        conn.close()


@pytest.mark.asyncio
async def test_flush_commits_answered_saves_for_other_connections(paths):
    base, db = paths
    m = await StorageManager.create(str(base), str(db), layout="segments")
    try:
        for i in range(3):
            await m.save_tx(Tx(f"f{i}", "h", 1_700_000_000.0 + i, b"x" * 10))
        await m.flush()
        assert committed_rows(db) == 3
        await m.flush()  # nothing left: fine
    finally:
        await m.close()
    with pytest.raises(StoreClosedError):
        await m.flush()
    with SyncStorageManager.create(str(base), str(db)) as s:
        s.save_tx(Tx("f3", "h", 1_700_000_003.0, b"y"))
        s.flush()
        assert committed_rows(db) == 4
    files_base, files_db = base.parent / "files", base.parent / "files.db"
    f = await StorageManager.create(str(files_base), str(files_db))
    try:
        await f.save_tx(Tx("g", "h", 1.0, b"z"))
        await f.flush()  # the files layout commits each save before answering it
        assert await f.list_txs() == ["g"]
    finally:
        await f.close()


@pytest.mark.asyncio
async def test_reopen_without_a_layout_keeps_the_stores_own(paths):
    base, db = paths
    m = await StorageManager.create(str(base), str(db), layout="segments", segment_window=60)
    await m.save_tx(Tx("a", "alice", 1_700_000_000.0, b"payload"))
    await m.close()
    assert "window_secs=60" in layout_record(base)

    m = await StorageManager.create(str(base), str(db))
    try:
        assert m.layout == "segments"
        got = await m.load_tx("a")
        assert got is not None and got.holder_id == "alice" and got.payload == b"payload"
        await m.save_tx(Tx("b", "bob", 1_700_000_001.0, b"more"))
    finally:
        await m.close()
    # The prototype's constructor, opening at the first call; and the blocking API.
    m = StorageManager(FileStore(str(base)), SQLiteStore(str(db)))
    try:
        assert await m.list_txs() == ["a", "b"]
        assert m.layout == "segments"
    finally:
        await m.close()
    with SyncStorageManager(str(base), str(db)) as s:
        assert s.layout == "segments"
        assert s.load_tx("b") == Tx("b", "bob", 1_700_000_001.0, b"more")
    assert payload_files(base) == []


def test_sync_manager_creates_segments(paths):
    base, db = paths
    with SyncStorageManager.create(str(base), str(db), layout="segments") as s:
        assert s.layout == "segments"
        s.save_many([Tx(f"s{i}", "h", 1_700_000_000.0, bytes([i]) * 10) for i in range(10)])
        assert s.list_txs() == [f"s{i}" for i in range(10)]
    assert "layout=segments" in layout_record(base)
    with SyncStorageManager(str(base), str(db), layout="segments") as s:
        assert s.load_tx("s3") == Tx("s3", "h", 1_700_000_000.0, bytes([3]) * 10)


@pytest.mark.asyncio
async def test_files_is_the_default_and_can_be_named(tmp_path):
    for name, layout in (("default", None), ("named", "files")):
        base = tmp_path / name
        m = await StorageManager.create(str(base), str(base / "poh.db"), layout=layout)
        try:
            await m.save_tx(Tx("t", "h", 1.0, b"x"))
            assert m.layout == "files"
        finally:
            await m.close()
        assert not (base / ".poh-layout").exists()
        assert len(payload_files(base)) == 1


@pytest.mark.asyncio
async def test_another_layout_for_an_existing_store_is_refused(tmp_path):
    files, segs = tmp_path / "files", tmp_path / "segs"
    for base, layout in ((files, "files"), (segs, "segments")):
        m = await StorageManager.create(str(base), str(base / "poh.db"), layout=layout,
                                        segment_window=60 if layout == "segments" else None)
        await m.save_tx(Tx("t", "h", 1.0, b"x"))
        await m.close()

    with pytest.raises(LayoutMismatchError) as e:
        await StorageManager.create(str(files), str(files / "poh.db"), layout="segments")
    assert isinstance(e.value, StorageError)
    assert str(files) in str(e.value) and "files store" in str(e.value)
    assert "segments was asked for" in str(e.value)
    with pytest.raises(LayoutMismatchError, match="segments store"):
        await StorageManager.create(str(segs), str(segs / "poh.db"), layout="files")
    with pytest.raises(LayoutMismatchError, match="60 s windows"):
        await StorageManager.create(str(segs), str(segs / "poh.db"), layout="segments",
                                    segment_window=120)
    with pytest.raises(LayoutMismatchError, match="files store"):
        SyncStorageManager(str(files), str(files / "poh.db"), layout="segments")
    lazy = StorageManager(FileStore(str(segs)), SQLiteStore(str(segs / "poh.db")), layout="files")
    with pytest.raises(LayoutMismatchError):
        await lazy.list_txs()
    await lazy.close()

    # Nothing was changed: both open as they were.
    for base, layout in ((files, "files"), (segs, "segments")):
        with SyncStorageManager(str(base), str(base / "poh.db")) as s:
            assert s.layout == layout and s.list_txs() == ["t"]


@pytest.mark.asyncio
async def test_bad_choices_are_refused_before_anything_is_created(tmp_path):
    base = tmp_path / "data"
    db = str(base / "poh.db")
    accepted = "expected 'files', 'segments' or 'postgres'"
    for bad in ("rocks", "Segments", ""):
        with pytest.raises(ValueError, match=accepted):
            await StorageManager.create(str(base), db, layout=bad)
        with pytest.raises(ValueError, match=accepted):
            SyncStorageManager(str(base), db, layout=bad)
    with pytest.raises(TypeError, match="layout must be a str"):
        await StorageManager.create(str(base), db, layout=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="segment_window applies to"):
        await StorageManager.create(str(base), db, segment_window=60)
    with pytest.raises(ValueError, match="segment_window applies to"):
        await StorageManager.create(str(base), db, layout="files", segment_window=60)
    for bad_window in (0, 0.5, 90.5, -60, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="whole number of seconds"):
            await StorageManager.create(str(base), db, layout="segments",
                                        segment_window=bad_window)
    for wrong_type in (True, "60"):
        with pytest.raises(TypeError, match="segment_window"):
            await StorageManager.create(str(base), db, layout="segments",
                                        segment_window=wrong_type)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        StorageManager(FileStore(str(tmp_path / "other")), SQLiteStore(db), layout="nope")
    assert not base.exists()
    # The postgres layout needs a database URL, as the engine says.
    with pytest.raises(StorageError, match="postgres://"):
        await StorageManager.create(str(base), db, layout="postgres")


@pytest.mark.asyncio
async def test_poh_layout_is_read_as_the_command_line_reads_it(tmp_path, monkeypatch):
    monkeypatch.setenv("POH_LAYOUT", "segments")
    monkeypatch.setenv("POH_SEGMENT_WINDOW", "10m")
    new = tmp_path / "new"
    m = await StorageManager.create(str(new), str(new / "poh.db"))
    assert m.layout == "segments"
    await m.close()
    assert "window_secs=600" in layout_record(new)

    # An explicit layout wins; for an existing store of another layout POH_LAYOUT is a
    # mismatch, as it is for the command line.
    named = tmp_path / "named"
    m = await StorageManager.create(str(named), str(named / "poh.db"), layout="files")
    assert m.layout == "files"
    await m.close()
    with pytest.raises(LayoutMismatchError):
        await StorageManager.create(str(named), str(named / "poh.db"))

    monkeypatch.setenv("POH_LAYOUT", "")  # empty is unset
    monkeypatch.delenv("POH_SEGMENT_WINDOW")
    m = await StorageManager.create(str(named), str(named / "poh.db"))
    assert m.layout == "files"
    await m.close()

    monkeypatch.setenv("POH_LAYOUT", "rocks")
    with pytest.raises(ValueError, match="POH_LAYOUT 'rocks'"):
        await StorageManager.create(str(tmp_path / "bad"), str(tmp_path / "bad" / "poh.db"))
    monkeypatch.setenv("POH_LAYOUT", "segments")
    monkeypatch.setenv("POH_SEGMENT_WINDOW", "soon")
    with pytest.raises(ValueError, match="soon"):
        await StorageManager.create(str(tmp_path / "bad"), str(tmp_path / "bad" / "poh.db"))
    assert not (tmp_path / "bad").exists()


@pytest.mark.asyncio
async def test_many_concurrent_saves_on_segments(paths):
    base, db = paths
    m = await StorageManager.create(str(base), str(db), layout="segments")
    try:
        now = time.time()
        txs = [Tx(f"c{i:05d}", f"holder{i % 7}", now - i, os.urandom(64 + i % 300))
               for i in range(2000)]
        await asyncio.gather(*(m.save_tx(tx) for tx in txs))
        assert await m.list_txs() == [tx.tx_id for tx in txs]
        loaded = await asyncio.gather(*(m.load_tx(tx.tx_id) for tx in txs))
        assert loaded == txs
    finally:
        await m.close()
    with SyncStorageManager(str(base), str(db)) as s:  # durable: there after reopening
        assert s.load_tx("c01999") == txs[1999]
        assert len(s.list_txs()) == 2000


@pytest.mark.asyncio
async def test_ttl_scan_on_segments(paths, monkeypatch):
    base, db = paths
    now = 1_700_000_000.0
    monkeypatch.setattr(poh_ttl.manager.time, "time", lambda: now)
    m = await StorageManager.create(str(base), str(db), layout="segments", segment_window=60)
    try:
        # Old ones in several windows, new ones in the current one.
        for i in range(10):
            await m.save_tx(Tx(f"old{i}", "h", now - 1000 - 100 * i, b"o"))
        await m.save_tx(Tx("edge", "h", now - 500, b"e"))  # age == ttl: kept
        await m.save_tx(Tx("new", "h", now - 5, b"n"))
        ttl = TTLManager(m, 500)
        assert sorted(await ttl.scan_once()) == sorted(f"old{i}" for i in range(10))
        assert await m.list_txs() == ["edge", "new"]
        assert await ttl.scan_once() == []
        assert (await m.load_tx("edge")).payload == b"e"  # type: ignore[union-attr]
    finally:
        await m.close()


def test_app_storage_init_with_a_layout(paths):
    base, db = paths
    code, out, err = run_module("poh_storage.app_storage", "init", "--base", str(base), "--db",
                                str(db), "--layout", "segments")
    assert (code, out) == (0, "Initialized\n"), err
    assert "layout=segments" in layout_record(base)
    tx = '{"tx_id": "t1", "holder_id": "h", "timestamp": 1.5, "payload": "aGk="}'
    code, out, err = run_module("poh_storage.app_storage", "save", "--base", str(base), "--db",
                                str(db), "--tx", tx)
    assert (code, out) == (0, "Saved t1\n"), err
    code, out, err = run_module("poh_storage.app_storage", "list", "--base", str(base), "--db",
                                str(db))
    assert (code, out) == (0, '["t1"]\n'), err
    assert payload_files(base) == []
    code, out, err = run_module("poh_storage.app_storage", "list", "--base", str(base), "--db",
                                str(db), "--layout", "files")
    assert code != 0 and "LayoutMismatchError" in err and "segments store" in err
    code, _, err = run_module("poh_storage.app_storage", "init", "--base", str(base), "--db",
                              str(db), "--layout", "rocks")
    assert code == 2 and "invalid choice" in err
