"""Blocking work a coroutine hands off (file writes, fsyncs, store calls made the blocking
way), on one pool of threads the process keeps for its lifetime.

`asyncio.to_thread` uses the event loop's own default executor, which `asyncio.run` creates
for each run and joins at its end: a thread started and stopped per run, a few
milliseconds that every short run pays. This pool outlives the loops that use it; a
forked child starts its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

T = TypeVar("T")

MAX_THREADS = 16

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(MAX_THREADS, thread_name_prefix="cmbagent-io")
        return _pool


def _forget_pool() -> None:
    global _pool, _lock
    _pool, _lock = None, threading.Lock()  # the parent's threads do not exist in a child


os.register_at_fork(after_in_child=_forget_pool)


async def in_thread(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`asyncio.to_thread` on the process's pool: run `func` there (with the caller's
    context variables) and await its result."""
    call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_executor(), call)
