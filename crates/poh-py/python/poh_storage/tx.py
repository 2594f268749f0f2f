"""The transaction record: a plain, mutable dataclass, as in the prototype."""
from dataclasses import dataclass

__all__ = ("Tx",)


@dataclass
class Tx:
    """One Proof-of-History transaction.

    ``tx_id``: any non-empty string of at most 255 UTF-8 bytes without control characters
    (``str(addr)`` such as ``"('127.0.0.1', 5)"`` is fine). ``holder_id``: non-empty, no
    control characters; it is persisted. ``timestamp``: UNIX seconds, finite, not negative.
    ``payload``: the raw bytes.
    """

    tx_id: str
    holder_id: str
    timestamp: float
    payload: bytes
