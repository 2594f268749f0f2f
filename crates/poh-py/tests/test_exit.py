"""Interpreter exit with an unclosed manager, with work in flight or just finished,
neither hangs nor crashes, and acknowledged saves are there afterwards."""
import asyncio
import textwrap

import pytest

from poh_storage import StorageManager

from conftest import run_script

SCENARIOS = {
    "unclosed after saves": """
        async def main():
            m = await StorageManager.create(BASE, DB)
            await asyncio.gather(*(m.save_tx(Tx(f"a{i}", "h", 1.0, b"p")) for i in range(200)))
            GLOBAL.append(m)   # still referenced at exit
        asyncio.run(main())
    """,
    "saves in flight when asyncio.run returns": """
        async def main():
            m = await StorageManager.create(BASE, DB)
            await m.save_tx(Tx("acked", "h", 1.0, b"p"))
            for i in range(500):
                asyncio.ensure_future(m.save_tx(Tx(f"b{i}", "h", 1.0, b"p" * 1000)))
            await asyncio.sleep(0)  # the saves are handed to the engine, nobody waits
            GLOBAL.append(m)
        asyncio.run(main())
    """,
    "exit from inside a running loop": """
        async def main():
            m = await StorageManager.create(BASE, DB)
            await m.save_tx(Tx("acked", "h", 1.0, b"p"))
            tasks = [asyncio.ensure_future(m.save_tx(Tx(f"c{i}", "h", 1.0, b"p"))) for i in range(300)]
            await asyncio.sleep(0)
            os._exit(0) if False else sys.exit(0)
        asyncio.run(main())
    """,
    "ttl collector running at exit": """
        async def main():
            m = await StorageManager.create(BASE, DB)
            await m.save_tx(Tx("acked", "h", 1.0e10, b"p"))
            TTLManager(m, 3600).run(0.01)
            await asyncio.sleep(0.1)
        asyncio.run(main())
    """,
    "sync manager never closed": """
        m = SyncStorageManager(BASE, DB)
        m.save_tx(Tx("acked", "h", 1.0, b"p"))
        GLOBAL.append(m)
    """,
    "manager garbage before exit": """
        async def main():
            m = await StorageManager.create(BASE, DB)
            await m.save_tx(Tx("acked", "h", 1.0, b"p"))
        asyncio.run(main())
        import gc; gc.collect()
    """,
}

PRELUDE = """
import asyncio, os, sys
from poh_storage import StorageManager, SyncStorageManager, Tx
from poh_ttl import TTLManager
BASE, DB = {base!r}, {db!r}
GLOBAL = []
"""


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_exit_neither_hangs_nor_crashes(name, paths):
    base, db = paths
    code = PRELUDE.format(base=str(base), db=str(db)) + textwrap.dedent(SCENARIOS[name])
    for attempt in range(3):  # exit timing varies: run each a few times
        r = run_script(code, timeout=60)
        assert r.returncode == 0, f"{name}: exit {r.returncode}\n{r.stderr}"
        assert "panicked" not in r.stderr and "Fatal Python error" not in r.stderr, r.stderr

    async def check():
        m = await StorageManager.create(str(base), str(db))
        try:
            ids = await m.list_txs()
            assert await m.recover() == ids  # nothing half-written
            return ids
        finally:
            await m.close()

    ids = asyncio.run(check())
    if "acked" in SCENARIOS[name]:
        assert "acked" in ids
    if name == "unclosed after saves":
        assert len(ids) == 200
