"""TTLManager: deletes transactions older than a time-to-live, as in the prototype.

A tx expires when ``now - timestamp > ttl_seconds`` (strictly; ``timestamp`` is the tx's
own). A pass reads ``now`` once and deletes through the engine's timestamp index in
batches, so it costs O(expired), not O(store size), and each batch re-checks the
condition inside its commit (a tx re-saved meanwhile with a fresh timestamp is kept).
"""
import asyncio
import logging
import time
import warnings
from typing import Any, List, Optional

from .exceptions import TTLManagerError

__all__ = ("TTLManager", "SyncTTLManager")

log = logging.getLogger(__name__)


class TTLManager:
    """The TTL collector of one StorageManager.

    ``await scan_once()`` runs one pass. ``run(interval_seconds)`` starts the collector as
    a task on the running event loop and returns it: a pass at once, then one every
    interval. Unlike the prototype's, a failed pass does not end the collector: it is
    logged at ERROR (``failures`` counts them, ``last_error`` keeps the last) and the next
    pass runs at the next tick. ``await stop()`` ends it.
    """

    def __init__(self, storage_manager: Any, ttl_seconds: float) -> None:
        self.storage_manager = storage_manager
        self.ttl_seconds = ttl_seconds
        self._task: Optional["asyncio.Task[None]"] = None
        #: Passes that failed since the collector started.
        self.failures = 0
        #: Failed passes in a row (0 after a pass that worked).
        self.consecutive_failures = 0
        #: The exception of the last failed pass.
        self.last_error: Optional[BaseException] = None
        #: Passes run (successful or not).
        self.passes = 0

    async def scan_once(self) -> List[str]:
        """Deletes every expired tx and returns their ids. Any failure is raised as
        TTLManagerError (what was deleted before it stays deleted)."""
        try:
            return await self.storage_manager._expire(time.time(), float(self.ttl_seconds))
        except Exception as e:
            raise TTLManagerError(str(e)) from e

    async def _loop(self, interval_seconds: float) -> None:
        while True:
            self.passes += 1
            try:
                removed = await self.scan_once()
            except Exception as e:  # logged, counted, retried at the next tick
                self.failures += 1
                self.consecutive_failures += 1
                self.last_error = e
                log.error("TTL GC pass failed (%d in a row), retrying in %ss: %s",
                          self.consecutive_failures, interval_seconds, e,
                          exc_info=e)
            else:
                self.consecutive_failures = 0
                log.info("TTL GC removed: %s", removed)
            await asyncio.sleep(interval_seconds)

    def run(self, interval_seconds: float) -> "asyncio.Task[None]":
        """Starts the collector on the running loop and returns its task (a plain call,
        not a coroutine; awaiting the task runs until it is cancelled). A second call while
        it runs warns and returns the running task."""
        if self._task is not None and not self._task.done():
            msg = "TTL collector already running; run() ignored"
            log.warning(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            return self._task
        if interval_seconds <= 0:
            raise ValueError(f"interval_seconds must be positive, not {interval_seconds!r}")
        self._task = asyncio.get_running_loop().create_task(self._loop(interval_seconds))
        return self._task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """Stops the collector (if running) and waits for it to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass


class SyncTTLManager:
    """``scan_once`` as a plain call, over a SyncStorageManager."""

    def __init__(self, storage_manager: Any, ttl_seconds: float) -> None:
        self.storage_manager = storage_manager
        self.ttl_seconds = ttl_seconds

    def scan_once(self) -> List[str]:
        try:
            return self.storage_manager._expire(time.time(), float(self.ttl_seconds))
        except Exception as e:
            raise TTLManagerError(str(e)) from e
