"""poh_storage: durable, verified storage for Proof-of-History transactions.

A drop-in replacement for the prototype's package of the same name (same modules, names
and behaviour), backed by the poh-store Rust engine::

    import asyncio
    from poh_storage import StorageManager, Tx

    async def main():
        m = await StorageManager.create("data", "data/poh.db")
        await m.save_tx(Tx(tx_id="t1", holder_id="alice", timestamp=1.7e9, payload=b"hi"))
        print(await m.load_tx("t1"))
        await m.close()

    asyncio.run(main())
"""
from ._native import __version__
from ._errors import IntegrityError, LayoutMismatchError, StorageError, StoreClosedError
from .storage import LAYOUTS, StorageManager, SyncStorageManager
from .types import Tx

__all__ = ("Tx", "StorageManager", "SyncStorageManager", "IntegrityError", "StorageError",
           "StoreClosedError", "LayoutMismatchError", "LAYOUTS", "__version__")
