"""The Python package on a PostgreSQL store (a ``postgres://`` URL where callers pass the
SQLite path), against a real throwaway server: the prototype's calls, many saves in
flight, two managers (two nodes) on one database, TTL expiry, the synchronous API and the
``python -m`` command lines. Skipped with a note where the server binaries are missing;
mandatory under POH_REQUIRE_ALL=1."""
import asyncio
import itertools
import os
import time

import pytest

from poh_storage import StorageManager, SyncStorageManager, Tx
from poh_ttl.manager import TTLManager

from conftest import run_module
from pgcluster import Cluster, require_postgres

_names = itertools.count()


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(require_postgres())
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def url(cluster):
    """A fresh, empty database of the cluster."""
    return cluster.create_db(f"t{next(_names)}")


@pytest.mark.asyncio
async def test_the_prototypes_calls_on_postgres(cluster, url, tmp_path):
    m = await StorageManager.create(str(tmp_path / "unused"), url)
    try:
        assert m.layout == "postgres"
        odd = str(("127.0.0.1", 5))
        txs = [Tx(f"t{i}", f"holder-{i}", 1_700_000_000.0 + i * 5000, os.urandom(50 + i))
               for i in range(5)]
        txs.append(Tx(odd, "udp", 1_700_000_000.5, b"from a datagram"))
        for tx in txs:
            await m.save_tx(tx)
        for tx in txs:
            assert await m.load_tx(tx.tx_id) == tx
        assert await m.list_txs() == sorted(tx.tx_id for tx in txs)
        assert await m.load_tx("nope") is None
        # A re-save replaces the tx (one row), even into another time window.
        moved = Tx("t1", "holder-1", 1_800_000_000.0, b"moved")
        await m.save_tx(moved)
        assert await m.load_tx("t1") == moved
        assert cluster.psql(url.rsplit("/", 1)[1],
                            "SELECT count(*) FROM poh_txs WHERE tx_id = 't1'") == "1"
        await m.delete_tx("t2")
        await m.delete_tx("t2")  # idempotent
        assert await m.load_tx("t2") is None
        assert sorted(await m.recover()) == sorted(tx.tx_id for tx in txs if tx.tx_id != "t2")
    finally:
        await m.close()
    assert not (tmp_path / "unused" / "poh.db").exists()


@pytest.mark.asyncio
async def test_many_saves_in_flight_and_a_second_node(url, tmp_path):
    a = await StorageManager.create(str(tmp_path / "a"), url)
    b = await StorageManager.create(str(tmp_path / "b"), url)
    try:
        now = time.time()
        txs = [Tx(f"n{i:03}", "h", now - i, os.urandom(64)) for i in range(200)]
        await asyncio.gather(*(a.save_tx(tx) for tx in txs))
        # The other node sees every one of them.
        assert await b.list_txs() == [tx.tx_id for tx in txs]
        got = await asyncio.gather(*(b.load_tx(tx.tx_id) for tx in txs))
        assert got == txs
    finally:
        await a.close()
        await b.close()


@pytest.mark.asyncio
async def test_ttl_expiry_on_postgres(url, tmp_path):
    m = await StorageManager.create(str(tmp_path / "b"), url)
    try:
        now = time.time()
        await m.save_tx(Tx("old", "h", now - 100_000, b"x"))
        await m.save_tx(Tx("older", "h", now - 200_000, b"x"))
        await m.save_tx(Tx("new", "h", now - 10, b"y"))
        ttl = TTLManager(m, 3600)
        assert sorted(await ttl.scan_once()) == ["old", "older"]
        assert await m.list_txs() == ["new"]
        assert await ttl.scan_once() == []
    finally:
        await m.close()


def test_the_synchronous_api_on_postgres(url, tmp_path):
    m = SyncStorageManager.create(str(tmp_path / "s"), url)
    try:
        assert m.layout == "postgres"
        tx = Tx("s1", "h", 1_700_000_000.0, b"sync")
        m.save_tx(tx)
        assert m.load_tx("s1") == tx
        assert m.list_txs() == ["s1"]
    finally:
        m.close()


def test_the_command_lines_on_postgres(url, tmp_path):
    base = str(tmp_path / "c")
    tx = '{"tx_id":"1","holder_id":"h","timestamp":0.0,"payload":"YWJj"}'
    rc, out, err = run_module("poh_storage.app_storage", "save", "--tx", tx, "--base", base,
                              "--db", url)
    assert (rc, out) == (0, "Saved 1\n"), err
    rc, out, err = run_module("poh_storage.app_storage", "list", "--base", base, "--db", url)
    assert (rc, out) == (0, '["1"]\n'), err
    rc, out, err = run_module("poh_ttl.cli", "scan", "--base", base, "--db", url, "--ttl", "3600")
    assert (rc, out) == (0, "Expired: ['1']\n"), err
    rc, out, err = run_module("poh_storage.app_storage", "list", "--base", base, "--db", url)
    assert (rc, out) == (0, "[]\n"), err
