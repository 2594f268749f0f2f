"""Payload files: ``<base>/<stem>.bin``, one per key, as in the prototype.

StorageManager does not write through this class (the engine writes payloads with its
own durable, group-committed protocol); it is kept for callers that construct it (to pass
to ``StorageManager(file_store, sqlite_store)``) or use it directly on raw payloads. Unlike
the prototype's, a save here is durable (temp file, fsync, rename, fsync) and never
leaves a partial file, and keys are mapped to file names the way the engine maps ids
(safe keys keep ``<key>.bin``; others are escaped and stay inside the base). A payload a
prototype store keeps at the prototype's name for a key that is not a safe name
(``('127.0.0.1', 5).bin``) is read, listed and removed there while the key's own name is
missing (never through a link, never outside the base); a save writes the own name and
removes the old file.
"""
import asyncio
import itertools
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, TypeVar, Union

from ._native import file_stem, from_file_stem, prototype_file_stem

__all__ = ("FileStore",)

T = TypeVar("T")
_seq = itertools.count()


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def _is_prototype_stem(stem: str) -> bool:
    """True if ``stem`` is the prototype's name for the key ``stem`` (see
    ``FileStore._prototype_path``)."""
    try:
        return prototype_file_stem(stem) == stem
    except ValueError:  # not a valid key
        return False


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

    def _prototype_path(self, key: str) -> Optional[Path]:
        """The prototype's name for ``key``'s payload, when it is not the own name and is
        one plain name inside the base (see ``TxId::prototype_file_stem``)."""
        stem = prototype_file_stem(key)
        return None if stem is None else self.base / f"{stem}{self.SUFFIX}"

    @staticmethod
    def _read(path: Path) -> bytes:
        """The bytes of the regular file at ``path``, never through a symbolic link."""
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            return f.read()

    @staticmethod
    def _unlink(path: Optional[Path]) -> None:
        if path is None:
            return
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

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
        # The new payload is durable at its own name: an older one at the prototype's
        # name for the key is garbage.
        self._unlink(self._prototype_path(key))

    def load_sync(self, key: str) -> bytes:
        try:
            return self._read(self._path(key))
        except FileNotFoundError:
            proto = self._prototype_path(key)
            if proto is None:
                raise
            try:
                return self._read(proto)
            except FileNotFoundError:
                pass
            raise

    def exists_sync(self, key: str) -> bool:
        if self._path(key).exists():
            return True
        proto = self._prototype_path(key)
        return proto is not None and proto.is_file() and not proto.is_symlink()

    def remove_sync(self, key: str) -> None:
        self._unlink(self._path(key))
        self._unlink(self._prototype_path(key))

    def list_keys_sync(self) -> List[str]:
        keys: Dict[str, None] = {}
        with os.scandir(self.base) as it:
            for e in it:
                if e.name.endswith(self.SUFFIX):
                    stem = e.name[: -len(self.SUFFIX)]
                    key = from_file_stem(stem)
                    if key is None and _is_prototype_stem(stem):
                        key = stem
                    if key is not None:
                        keys[key] = None
        return list(keys)

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
