"""StorageManager's behaviour, the way callers use it: a store under tmp_path with the
database inside the base directory."""
import asyncio
import errno
import os
import pathlib

import pytest

from poh_storage import IntegrityError, StorageManager, StoreClosedError, Tx
from poh_storage.file_store import FileStore
from poh_storage.sqlite_store import SQLiteStore

from conftest import listing



@pytest.mark.asyncio
async def test_save_load_list_delete(manager, paths):
    base, db = paths
    await manager.save_tx(Tx(tx_id="a", holder_id="h1", timestamp=1.5, payload=b"hello"))
    await manager.save_tx(Tx(tx_id="b", holder_id="h2", timestamp=2.5, payload=b"world"))
    assert sorted(await manager.list_txs()) == ["a", "b"]
    tx = await manager.load_tx("a")
    assert tx == Tx(tx_id="a", holder_id="h1", timestamp=1.5, payload=b"hello")  # holder kept
    assert await manager.load_tx("zzz") is None
    await manager.save_tx(Tx("a", "h1", 3.0, b"again"))  # re-save replaces
    assert (await manager.load_tx("a")).payload == b"again"
    await manager.delete_tx("a")
    await manager.delete_tx("a")  # idempotent
    await manager.delete_tx("never-there")
    assert await manager.list_txs() == ["b"]
    assert not (base / "a.bin").exists()
    assert (base / "b.bin").read_bytes() == b"world"  # the prototype's file name
    assert db.is_file() and db.parent == base


@pytest.mark.asyncio
async def test_attributes(manager, paths):
    base, db = paths
    assert isinstance(manager.file_store, FileStore)
    assert manager.file_store.base == base and isinstance(manager.file_store.base, pathlib.Path)
    assert isinstance(manager.sqlite_store, SQLiteStore)
    assert manager.sqlite_store.db_path == str(db)
    assert manager.loop is None
    assert await manager.file_store.list_keys() == []


@pytest.mark.asyncio
async def test_constructed_from_its_parts_opens_at_first_use(paths):
    base, db = paths
    m = StorageManager(FileStore(str(base)), SQLiteStore(str(db)))
    try:
        await m.save_tx(Tx("x", "h", 1.0, b"p"))
        assert await m.list_txs() == ["x"]
    finally:
        await m.close()


@pytest.mark.asyncio
async def test_create_makes_the_base_directory(tmp_path):
    base = tmp_path / "deep" / "er" / "data"
    m = await StorageManager.create(base, base / "meta.db")  # PathLike works too
    try:
        assert base.is_dir()
        await m.save_tx(Tx("t", "h", 1.0, b""))
        assert (await m.load_tx("t")).payload == b""
    finally:
        await m.close()


@pytest.mark.asyncio
async def test_tampered_payload_is_a_value_error_and_a_missing_one_file_not_found(manager, paths):
    base, _ = paths
    for i in range(4):
        await manager.save_tx(Tx(str(i), "h", float(i), b"p%d" % i))
    (base / "1.bin").write_bytes(b"tampered")
    os.remove(base / "2.bin")
    with pytest.raises(IntegrityError) as e:
        await manager.load_tx("1")
    assert isinstance(e.value, ValueError) and "1" in str(e.value)
    with pytest.raises(FileNotFoundError) as e:
        await manager.load_tx("2")
    assert e.value.errno == errno.ENOENT
    assert (await manager.load_tx("0")).payload == b"p0"


@pytest.mark.asyncio
async def test_recover_returns_valid_ids_and_quarantines(manager, paths):
    base, _ = paths
    for i in range(4):
        await manager.save_tx(Tx(str(i), "h", float(i), b"p%d" % i))
    (base / "1.bin").write_bytes(b"tampered")
    os.remove(base / "2.bin")
    (base / "orphan.bin").write_bytes(b"no row")
    assert sorted(await manager.recover()) == ["0", "3"]
    assert sorted(await manager.list_txs()) == ["0", "3"]
    quarantined = listing(base / ".quarantine")
    assert any(n.startswith("1.") and n.endswith(".bin") for n in quarantined)  # kept, not deleted
    assert any(n.startswith("orphan.") and n.endswith(".bin") for n in quarantined)
    kinds = sorted(f["kind"] for f in manager.last_recover_report["findings"])
    assert kinds == ["corrupt", "missing_payload", "orphan"]
    assert await manager.recover() == ["0", "3"]  # nothing left to repair


@pytest.mark.asyncio
async def test_invalid_input(manager):
    with pytest.raises(ValueError, match="tx_id"):
        await manager.save_tx(Tx("a\nb", "h", 1.0, b"p"))
    with pytest.raises(ValueError, match="tx_id"):
        await manager.save_tx(Tx("", "h", 1.0, b"p"))
    with pytest.raises(ValueError, match="holder_id"):
        await manager.save_tx(Tx("a", "", 1.0, b"p"))
    with pytest.raises(ValueError, match="timestamp"):
        await manager.save_tx(Tx("a", "h", -1.0, b"p"))
    with pytest.raises(ValueError, match="timestamp"):
        await manager.save_tx(Tx("a", "h", float("nan"), b"p"))
    with pytest.raises(TypeError):
        await manager.save_tx(Tx(5, "h", 1.0, b"p"))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await manager.save_tx(Tx("a", "h", 1.0, "text"))  # type: ignore[arg-type]
    await manager.save_tx(Tx("ba", "h", 1, bytearray(b"bytes-like")))  # type: ignore[arg-type]
    assert (await manager.load_tx("ba")).payload == b"bytes-like"
    # An id no store can hold is simply not there.
    assert await manager.load_tx("a\x00b") is None
    await manager.delete_tx("a\x00b")
    assert await manager.list_txs() == ["ba"]


@pytest.mark.asyncio
async def test_closed_manager(paths):
    base, db = paths
    m = await StorageManager.create(str(base), str(db))
    await m.save_tx(Tx("a", "h", 1.0, b"p"))
    await m.close()
    await m.close()  # twice is fine
    with pytest.raises(StoreClosedError):
        await m.load_tx("a")
    with pytest.raises(StoreClosedError):
        await m.save_tx(Tx("b", "h", 1.0, b"p"))
    m2 = await StorageManager.create(str(base), str(db))  # the data is there
    try:
        assert (await m2.load_tx("a")).payload == b"p"
    finally:
        await m2.close()


@pytest.mark.asyncio
async def test_callers_cleanup_pattern(paths):
    """Callers close the SQLite connection themselves, the prototype's way."""
    base, db = paths
    m = await StorageManager.create(str(base), str(db))
    await m.save_tx(Tx("a", "h", 1.0, b"p"))
    store = m.sqlite_store
    await store.init()
    row = await store.load("a")
    assert row is not None and row[1] == 1.0 and len(row[0]) == 64
    assert await store.list_ids() == ["a"]
    conn = getattr(store, "_conn", None)
    if conn:
        await conn.close()
    await m.close()


@pytest.mark.asyncio
async def test_many_payload_sizes_round_trip(manager):
    sizes = [0, 1, 1023, 1024, 65537, 1 << 20]
    for n in sizes:
        await manager.save_tx(Tx(f"s{n}", "h", 1.0, os.urandom(n)))
    for n in sizes:
        assert len((await manager.load_tx(f"s{n}")).payload) == n


@pytest.mark.asyncio
async def test_a_small_load_completes_without_waiting_on_the_loop(manager):
    await manager.save_tx(Tx("small", "h", 1.0, b"tiny"))
    # Read on the calling thread: the coroutine finishes at its first step, with no
    # future to wait for and no trip through the engine's threads.
    coro = manager.load_tx("small")
    with pytest.raises(StopIteration) as done:
        coro.send(None)
    assert done.value.value == Tx("small", "h", 1.0, b"tiny")
    coro = manager.load_tx("unknown")
    with pytest.raises(StopIteration) as done:
        coro.send(None)
    assert done.value.value is None


@pytest.mark.asyncio
async def test_a_load_over_the_inline_limit_waits_for_the_engine(manager):
    await manager.save_tx(Tx("big", "h", 1.0, b"x" * 100))
    manager.inline_load_max = 99
    coro = manager.load_tx("big")
    fut = coro.send(None)  # suspended on the engine's answer
    assert isinstance(fut, asyncio.Future) and not fut.done()
    await asyncio.wait([fut])
    with pytest.raises(StopIteration) as done:
        coro.send(None)
    assert done.value.value.payload == b"x" * 100
    manager.inline_load_max = 100
    assert (await manager.load_tx("big")).payload == b"x" * 100


@pytest.mark.asyncio
@pytest.mark.parametrize("inline", [64 * 1024, 0])
async def test_load_errors_are_the_same_inline_or_not(manager, paths, inline):
    base, _ = paths
    manager.inline_load_max = inline
    for i in range(3):
        await manager.save_tx(Tx(str(i), "h", float(i), b"p%d" % i))
    (base / "1.bin").write_bytes(b"p9")  # same size, other bytes
    os.remove(base / "2.bin")
    with pytest.raises(IntegrityError):
        await manager.load_tx("1")
    with pytest.raises(FileNotFoundError):
        await manager.load_tx("2")
    assert await manager.load_tx("nope") is None
    assert await manager.load_tx("bad\x00id") is None
    assert (await manager.load_tx("0")).payload == b"p0"
