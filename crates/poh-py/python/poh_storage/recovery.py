"""Recovery as one call, as in the prototype."""
import logging
import os
from typing import List, Union

from .storage import StorageManager

__all__ = ("perform_recovery",)

log = logging.getLogger(__name__)


async def perform_recovery(base_path: Union[str, "os.PathLike[str]"],
                           sqlite_path: Union[str, "os.PathLike[str]"]) -> List[str]:
    """Opens the store, repairs it (see ``StorageManager.recover``), closes it, and
    returns the ids of the valid txs. Logs ``Recovery complete: N valid transactions``
    at INFO on the logger ``poh_storage.recovery``."""
    manager = await StorageManager.create(base_path, sqlite_path)
    try:
        valid = await manager.recover()
        log.info("Recovery complete: %d valid transactions", len(valid))
        return valid
    finally:
        await manager.close()
