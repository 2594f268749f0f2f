"""Concurrency: many save_tx coroutines in flight share group commits without a thread
per call; the GIL is released while the engine works; one manager works across several
asyncio.run() calls and from several threads."""
import asyncio
import os
import threading
import time

import pytest

from poh_storage import StorageManager, SyncStorageManager, Tx
from poh_storage import _native


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.asyncio
async def test_concurrent_saves_share_commits_without_a_thread_per_call(manager):
    n = 2000
    before = os_threads()
    peak = before
    done = False

    async def sample():
        nonlocal peak
        while not done:
            peak = max(peak, os_threads())
            await asyncio.sleep(0)

    sampler = asyncio.ensure_future(sample())
    t0 = time.perf_counter()
    await asyncio.gather(*(manager.save_tx(Tx(f"c{i}", "h", float(i), b"%d" % i)) for i in range(n)))
    elapsed = time.perf_counter() - t0
    done = True
    await sampler
    assert len(await manager.list_txs()) == n
    # The engine's threads (runtime workers, its writer and sync helpers, the blocking
    # pool) are shared by every call: far fewer than one per save.
    assert peak - before < 64, f"{peak - before} threads started for {n} saves"
    loaded = await asyncio.gather(*(manager.load_tx(f"c{i}") for i in range(n)))
    assert [t.payload for t in loaded] == [b"%d" % i for i in range(n)]
    for _ in range(500):  # the engine thread lets go of a call just after delivering it
        if _native.inflight() == 0:
            break
        await asyncio.sleep(0.01)
    assert _native.inflight() == 0
    print(f"{n} concurrent saves in {elapsed:.2f}s, peak extra threads {peak - before}")


@pytest.mark.asyncio
async def test_each_concurrent_save_gets_its_own_result(manager):
    good = [manager.save_tx(Tx(f"g{i}", "h", 1.0, b"p")) for i in range(20)]
    bad = manager.save_tx(Tx("bad", "", 1.0, b"p"))  # invalid holder: only this one fails
    results = await asyncio.gather(*good, bad, return_exceptions=True)
    assert results[:20] == [None] * 20
    assert isinstance(results[20], ValueError)
    assert len(await manager.list_txs()) == 20


@pytest.mark.asyncio
async def test_the_event_loop_runs_while_the_engine_works(manager):
    ticks = 0
    stop = False

    async def ticker():
        nonlocal ticks
        while not stop:
            ticks += 1
            await asyncio.sleep(0)

    t = asyncio.ensure_future(ticker())
    await asyncio.gather(*(manager.save_tx(Tx(f"e{i}", "h", 1.0, os.urandom(4096))) for i in range(300)))
    await manager.recover()
    stop = True
    await t
    assert ticks > 10


def test_the_gil_is_released_during_blocking_calls(paths):
    base, db = paths
    with SyncStorageManager(str(base), str(db)) as m:
        txs = [Tx(f"s{i}", "h", 1.0, os.urandom(2048)) for i in range(400)]
        counter = 0
        running = True

        def spin():
            nonlocal counter
            while running:
                counter += 1

        t = threading.Thread(target=spin)
        t.start()
        try:
            start = counter
            t0 = time.perf_counter()
            m.save_many(txs)
            for tx in txs:  # loads run on this thread, GIL released
                assert m.load_tx(tx.tx_id) == tx
            for _ in range(3):
                m.recover()
            spent = time.perf_counter() - t0
            progressed = counter - start
        finally:
            running = False
            t.join()
        # With the GIL held for `spent` seconds the spinning thread would barely move
        # (the switch interval is 5 ms); released, it counts freely.
        assert progressed > 1000, (progressed, spent)


def test_one_manager_across_three_asyncio_runs(paths):
    base, db = paths

    async def make():
        return await StorageManager.create(str(base), str(db))

    async def save(m):
        await asyncio.gather(*(m.save_tx(Tx(f"r{i}", "h", 1.0, b"p")) for i in range(50)))

    async def read_and_close(m):
        ids = await m.list_txs()
        tx = await m.load_tx("r7")
        await m.close()
        return ids, tx

    m = asyncio.run(make())
    asyncio.run(save(m))
    ids, tx = asyncio.run(read_and_close(m))
    assert len(ids) == 50 and tx.payload == b"p"


def test_one_manager_from_two_threads_with_their_own_loops(paths):
    base, db = paths
    m = asyncio.run(StorageManager.create(str(base), str(db)))
    errors = []

    def worker(k):
        async def go():
            await asyncio.gather(*(m.save_tx(Tx(f"t{k}-{i}", "h", 1.0, b"p")) for i in range(100)))
            assert len(await asyncio.gather(*(m.load_tx(f"t{k}-{i}") for i in range(100)))) == 100
        try:
            asyncio.run(go())
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(asyncio.run(m.list_txs())) == 300
    asyncio.run(m.close())


@pytest.mark.asyncio
async def test_a_cancelled_save_does_not_break_the_manager(manager):
    task = asyncio.ensure_future(manager.save_tx(Tx("c", "h", 1.0, b"p")))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await manager.save_tx(Tx("d", "h", 1.0, b"p"))
    assert "d" in await manager.list_txs()
