"""The synchronous API: the same methods, not coroutines."""
import inspect
import time

import pytest

from poh_storage import IntegrityError, StoreClosedError, SyncStorageManager, Tx
from poh_ttl.manager import SyncTTLManager


def test_sync_api(paths):
    base, db = paths
    with SyncStorageManager.create(str(base), str(db)) as m:
        for name in ("save_tx", "load_tx", "delete_tx", "list_txs", "recover", "close"):
            assert not inspect.iscoroutinefunction(getattr(m, name))
        m.save_tx(Tx("a", "h", 1.0, b"one"))
        m.save_many([Tx("b", "h", 2.0, b"two"), Tx("('127.0.0.1', 5)", "h", 3.0, b"three")])
        assert m.list_txs() == ["('127.0.0.1', 5)", "a", "b"]
        assert m.load_tx("a") == Tx("a", "h", 1.0, b"one")
        assert m.load_tx("nope") is None
        (base / "b.bin").write_bytes(b"bad")
        with pytest.raises(IntegrityError):
            m.load_tx("b")
        assert m.recover() == ["('127.0.0.1', 5)", "a"]
        m.delete_tx("a")
        m.delete_tx("a")
        assert m.list_txs() == ["('127.0.0.1', 5)"]
        with pytest.raises(ValueError):
            m.save_tx(Tx("x", "", 1.0, b""))
        now = time.time()
        m.save_tx(Tx("old", "h", now - 100, b""))
        assert sorted(SyncTTLManager(m, 50).scan_once()) == ["('127.0.0.1', 5)", "old"]
        assert m.list_txs() == []
    with pytest.raises(StoreClosedError):
        m.list_txs()
