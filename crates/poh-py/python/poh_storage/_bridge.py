"""The bridge between asyncio and the engine's runtime.

A native call returns at once; the engine completes it on its own threads and then
schedules the result on the caller's event loop with ``loop.call_soon_threadsafe``. No
thread is started per call and the GIL is not held while the engine works. Nothing here
is bound to one event loop, so a StorageManager works across several ``asyncio.run()``
calls, or from several loops at once.

Calls made in the same event-loop iteration (many ``save_tx`` coroutines started with
``gather`` or by concurrent request handlers) are passed to the engine together, in one
native call: saves are still separate requests to the engine, each with its own result,
and the engine's writer commits them as one group (one fsync of the database for all).

At interpreter exit (``atexit``), new work is refused, work in flight is waited for (at
most ``EXIT_WAIT`` seconds) and every StorageManager still open is closed, so queued
writes are finished; a result arriving after that is dropped without touching Python.
"""
import asyncio
import atexit
import functools
import logging
import weakref
from typing import Any, Callable, Dict, List, Tuple

from . import _native
from ._errors import to_exception

log = logging.getLogger("poh_storage")

#: Longest wait at interpreter exit for calls in flight, in seconds.
EXIT_WAIT = 10.0


def _resolve(fut: "asyncio.Future[Any]", ok: bool, value: Any) -> None:
    if fut.done():  # cancelled meanwhile
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(to_exception(value))


def call(start: Callable[..., None], *args: Any) -> "asyncio.Future[Any]":
    """Starts ``start(*args, done)`` and returns a future of the current event loop."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    start(*args, functools.partial(loop.call_soon_threadsafe, _resolve, fut))
    return fut


def unwrap(result: Tuple[bool, Any]) -> Any:
    """The value of a blocking native call's ``(ok, value)``, or its exception raised."""
    ok, value = result
    if ok:
        return value
    raise to_exception(value)


class Coalescer:
    """Gathers the submissions of one event-loop iteration into one native call.

    ``run(items, done)`` starts the native call; ``done(ok, results)`` gets one result per
    item, which ``settle(future, result)`` turns into that item's outcome.
    """

    def __init__(self, run: Callable[[List[Any], Callable[..., None]], None],
                 settle: Callable[["asyncio.Future[Any]", Any], None]) -> None:
        self._run = run
        self._settle = settle
        self._pending: Dict[asyncio.AbstractEventLoop, List[Tuple[Any, "asyncio.Future[Any]"]]] = {}

    def submit(self, item: Any) -> "asyncio.Future[Any]":
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        pending = self._pending.get(loop)
        if pending is None:
            pending = self._pending[loop] = []
            loop.call_soon(self._flush, loop)
        pending.append((item, fut))
        return fut

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        pending = self._pending.pop(loop, None)
        if not pending:
            return
        futs = [f for _, f in pending]
        try:
            self._run([i for i, _ in pending],
                      functools.partial(loop.call_soon_threadsafe, self._distribute, futs))
        except BaseException as e:  # the call could not even start: fail every caller
            for f in futs:
                if not f.done():
                    f.set_exception(e)

    def _distribute(self, futs: List["asyncio.Future[Any]"], ok: bool, results: Any) -> None:
        if not ok:
            for f in futs:
                if not f.done():
                    f.set_exception(to_exception(results))
            return
        for f, r in zip(futs, results):
            if not f.done():
                self._settle(f, r)


# Every StorageManager not yet closed, to close at exit.
_open: "weakref.WeakSet[Any]" = weakref.WeakSet()


def register(manager: Any) -> None:
    _open.add(manager)


def unregister(manager: Any) -> None:
    _open.discard(manager)


@atexit.register
def _at_exit() -> None:
    left = _native.shutdown(EXIT_WAIT)
    if left:
        log.warning("poh_storage: %d call(s) still in flight at exit were abandoned", left)
    for manager in list(_open):
        try:
            manager._close_at_exit()
        except Exception as e:  # never let exit fail
            log.warning("poh_storage: closing a store at exit failed: %s", e)
