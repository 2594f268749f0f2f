"""perform_recovery: returns the valid ids and logs the summary through logging."""
import logging
import os

import pytest

from poh_storage import StorageManager, Tx
from poh_storage.recovery import perform_recovery


@pytest.mark.asyncio
async def test_perform_recovery_logs_through_logging(paths, caplog):
    base, db = paths
    m = await StorageManager.create(str(base), str(db))
    for i in range(4):
        await m.save_tx(Tx(str(i), "h", float(i), b"p%d" % i))
    await m.close()
    (base / "1.bin").write_bytes(b"tampered")
    os.remove(base / "2.bin")
    with caplog.at_level(logging.INFO, logger="poh_storage.recovery"):
        valid = await perform_recovery(str(base), str(db))
    assert sorted(valid) == ["0", "3"]
    records = [r for r in caplog.records if r.name == "poh_storage.recovery"]
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.INFO, "Recovery complete: 2 valid transactions")]
    m = await StorageManager.create(str(base), str(db))
    try:
        assert sorted(await m.list_txs()) == ["0", "3"]
    finally:
        await m.close()


@pytest.mark.asyncio
async def test_engine_warnings_reach_python_logging(paths, caplog):
    """The engine's own log events go to Python's logging under ``poh_storage.*``."""
    base, db = paths
    m = await StorageManager.create(str(base), str(db))
    await m.save_tx(Tx("a", "h", 1.0, b"p"))
    await m.close()
    (base / ".tmp" / "a.1-0.tmp").write_bytes(b"left by a crash")  # an unfinished save
    caplog.set_level(logging.INFO, logger="poh_storage")
    m = await StorageManager.create(str(base), str(db))  # the open repairs it, and says so
    await m.close()
    engine = [r for r in caplog.records if r.name.startswith("poh_storage.") and r.name != "poh_storage.recovery"]
    assert engine, [r.name for r in caplog.records]
    assert any("interrupted" in r.getMessage() for r in engine), [r.getMessage() for r in engine]
