"""Hashing helpers, as in the prototype."""
from ._native import sha256_hex as _sha256_hex

__all__ = ("sha256_hex",)


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256 digest of *data* (the ``storage_hash`` format)."""
    if not isinstance(data, bytes):
        data = bytes(data)
    return _sha256_hex(data)
