"""Exceptions, and the mapping from the engine's error tuples to them."""
import errno as _errno
from typing import Optional, Tuple

__all__ = ("StorageError", "IntegrityError", "StoreClosedError", "LayoutMismatchError",
           "to_exception")


class StorageError(Exception):
    """A storage failure the engine reported (database, lock, store layout, ...)."""


class IntegrityError(StorageError, ValueError):
    """A stored payload does not match the SHA-256 recorded for it.

    A ``ValueError``, as callers of the prototype expect; ``poh_storage.IntegrityError``
    as in the prototype. ``recover()`` moves such payloads to ``.quarantine/``.
    """


class StoreClosedError(StorageError):
    """The StorageManager was closed."""


class LayoutMismatchError(StorageError):
    """The store's layout (or segment window) is not the one asked for: an existing store
    always opens with its own."""


ErrorInfo = Tuple[str, str, Optional[str], Optional[int]]


def to_exception(info: ErrorInfo) -> BaseException:
    """The exception for an error tuple ``(kind, message, path, errno)`` of ``_native``."""
    kind, message, path, code = info
    if kind == "invalid":
        return ValueError(message)
    if kind == "integrity":
        return IntegrityError(message)
    if kind in ("payload_missing", "no_store"):
        return FileNotFoundError(_errno.ENOENT, message, path)
    if kind == "closed":
        return StoreClosedError(message)
    if kind == "layout_mismatch":
        return LayoutMismatchError(message)
    if kind == "io" and code is not None:
        return OSError(code, message, path)
    return StorageError(message)
