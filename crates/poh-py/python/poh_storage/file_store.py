"""Payload files: ``<base>/<stem>.bin``, one per key, as in the prototype.

StorageManager does not write through this class (the engine writes payloads with its
own durable, group-committed protocol); it is kept for callers that construct it (to pass
to ``StorageManager(file_store, sqlite_store)``) or use it directly on raw payloads. Unlike
the prototype's, a save here is durable (temp file, fsync, rename, fsync) and never
leaves a partial file, and keys are mapped to file names the way the engine maps ids
(safe keys keep ``<key>.bin``; others are escaped and stay inside the base).
"""
import asyncio
import itertools
import os
from pathlib import Path
from typing import Any, Callable, List, TypeVar, Union

from ._native import file_stem, from_file_stem

__all__ = ("FileStore",)

T = TypeVar("T")
_seq = itertools.count()


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


class FileStore:
    """One file per key under ``base``. Async methods run their file calls on the loop's
    default executor."""

    SUFFIX = ".bin"

    def __init__(self, base_path: Union[str, "os.PathLike[str]"]) -> None:
        self.base_path = os.fspath(base_path)
        self.base = Path(self.base_path)
        os.makedirs(self.base_path, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.base / f"{file_stem(key)}{self.SUFFIX}"

    # -- blocking forms (also the sync API) ----------------------------------------

    def save_sync(self, key: str, data: bytes) -> None:
        dest = self._path(key)
        tmp_dir = self.base / ".tmp"
        tmp_dir.mkdir(mode=0o700, exist_ok=True)
        tmp = tmp_dir / f"{dest.stem}.{os.getpid()}-fs{next(_seq)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        dfd = os.open(self.base, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def load_sync(self, key: str) -> bytes:
        with open(self._path(key), "rb") as f:
            return f.read()

    def exists_sync(self, key: str) -> bool:
        return self._path(key).exists()

    def remove_sync(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def list_keys_sync(self) -> List[str]:
        keys = []
        with os.scandir(self.base) as it:
            for e in it:
                if e.name.endswith(self.SUFFIX):
                    key = from_file_stem(e.name[: -len(self.SUFFIX)])
                    if key is not None:
                        keys.append(key)
        return keys

    # -- the prototype's async API --------------------------------------------------

    async def save(self, key: str, data: bytes) -> None:
        """Writes ``data`` as the payload of ``key``, durably."""
        await _in_thread(self.save_sync, key, data)

    async def load(self, key: str) -> bytes:
        """The payload of ``key``; FileNotFoundError if there is none."""
        return await _in_thread(self.load_sync, key)

    async def exists(self, key: str) -> bool:
        return await _in_thread(self.exists_sync, key)

    async def remove(self, key: str) -> None:
        """Removes the payload of ``key``; a missing one is fine."""
        await _in_thread(self.remove_sync, key)

    async def list_keys(self) -> List[str]:
        """The keys of every payload file in the base (the store's own names excluded)."""
        return await _in_thread(self.list_keys_sync)

    def close(self) -> None:
        """Nothing to release (kept for the prototype's API)."""
