"""poh_ttl: TTL garbage collection for a poh_storage store (the prototype's package,
on the poh-store engine: O(expired) passes, a collector that survives failed passes)."""
from poh_storage import __version__

from .exceptions import TTLManagerError
from .manager import SyncTTLManager, TTLManager

__all__ = ("TTLManager", "SyncTTLManager", "TTLManagerError", "__version__")
