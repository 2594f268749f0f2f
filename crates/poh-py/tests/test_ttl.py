"""TTLManager: strict expiry, failures as TTLManagerError, and the collector started by
run(): a task on the running loop that logs each pass and survives failed ones."""
import asyncio
import logging
import time

import pytest

import poh_ttl.manager
from poh_storage import StorageManager, Tx
from poh_ttl.exceptions import TTLManagerError
from poh_ttl.manager import TTLManager



@pytest.mark.asyncio
async def test_scan_once_expires_strictly_older(manager, monkeypatch):
    now = 1_700_000_000.0
    monkeypatch.setattr(poh_ttl.manager.time, "time", lambda: now)
    await manager.save_tx(Tx("old", "h", now - 100, b"x"))
    await manager.save_tx(Tx("edge", "h", now - 50, b"y"))  # age == ttl: kept
    await manager.save_tx(Tx("just-over", "h", now - 50.001, b"y"))
    await manager.save_tx(Tx("new", "h", now - 10, b"z"))
    await manager.save_tx(Tx("future", "h", now + 1000, b"z"))
    ttl = TTLManager(manager, 50)
    assert ttl.ttl_seconds == 50 and ttl.storage_manager is manager
    assert sorted(await ttl.scan_once()) == ["just-over", "old"]
    assert sorted(await manager.list_txs()) == ["edge", "future", "new"]
    assert await ttl.scan_once() == []


@pytest.mark.asyncio
async def test_with_the_real_clock(manager):
    now = time.time()
    await manager.save_tx(Tx("old", "h", now - 100, b"x"))
    await manager.save_tx(Tx("new", "h", now - 10, b"y"))
    assert await TTLManager(manager, 50).scan_once() == ["old"]
    assert await manager.list_txs() == ["new"]


@pytest.mark.asyncio
async def test_scan_failures_are_ttl_manager_errors(paths):
    base, db = paths
    m = await StorageManager.create(str(base), str(db))
    await m.close()
    with pytest.raises(TTLManagerError) as e:
        await TTLManager(m, 1).scan_once()
    assert e.value.__cause__ is not None


@pytest.mark.asyncio
async def test_run_starts_a_task_logs_passes_and_warns_on_a_second_call(manager, caplog):
    caplog.set_level(logging.INFO, logger="poh_ttl")
    await manager.save_tx(Tx("old", "h", time.time() - 1000, b"x"))
    ttl = TTLManager(manager, 100)
    task = ttl.run(0.05)
    assert isinstance(task, asyncio.Task) and ttl.running
    with pytest.warns(RuntimeWarning, match="already running"):
        assert ttl.run(0.05) is task
    for _ in range(200):
        if sum("TTL GC removed" in r.getMessage() for r in caplog.records) >= 2:
            break
        await asyncio.sleep(0.02)
    messages = [r.getMessage() for r in caplog.records if r.name == "poh_ttl.manager"]
    assert "TTL GC removed: ['old']" in messages
    assert "TTL GC removed: []" in messages
    await ttl.stop()
    assert task.done() and not ttl.running
    assert await manager.list_txs() == []


@pytest.mark.asyncio
async def test_the_collector_survives_failed_passes(paths, caplog):
    caplog.set_level(logging.INFO, logger="poh_ttl")
    base, db = paths
    broken = await StorageManager.create(str(base), str(db))
    await broken.close()  # every pass now fails
    ttl = TTLManager(broken, 1)
    task = ttl.run(0.02)
    for _ in range(200):
        if ttl.failures >= 3:
            break
        await asyncio.sleep(0.02)
    assert ttl.failures >= 3 and not task.done(), "a failed pass ended the collector"
    assert isinstance(ttl.last_error, TTLManagerError)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "poh_ttl.manager"]
    assert errors and "TTL GC pass failed" in errors[0].getMessage()
    # Swap in a working store: the same collector recovers.
    good = await StorageManager.create(str(base), str(db))
    await good.save_tx(Tx("old", "h", 1.0, b"x"))
    ttl.storage_manager = good
    for _ in range(200):
        if ttl.consecutive_failures == 0:
            break
        await asyncio.sleep(0.02)
    assert ttl.consecutive_failures == 0
    await ttl.stop()
    assert await good.list_txs() == []
    await good.close()


def test_run_needs_a_running_loop(paths):
    base, db = paths
    m = asyncio.run(StorageManager.create(str(base), str(db)))
    with pytest.raises(RuntimeError):
        TTLManager(m, 1).run(1)
    asyncio.run(m.close())
