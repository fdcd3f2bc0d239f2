"""The engine's own event-loop thread: runs execute there, never on the caller's thread.

In a Jupyter kernel the shell thread stays free (decision 5): widget clicks, other
cells and interrupts keep working while a run goes on for hours. One daemon thread
per process hosts every run this process executes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, Callable


class EngineLoop:
    _instance: "EngineLoop | None" = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name="cmbagent-engine", daemon=True)
        self.thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    @classmethod
    def get(cls) -> "EngineLoop":
        with cls._lock:
            if cls._instance is None or not cls._instance.thread.is_alive():
                cls._instance = cls()
            return cls._instance

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run a plain function on the engine's thread (thread-safe)."""
        self.loop.call_soon_threadsafe(fn, *args)

    @property
    def in_loop(self) -> bool:
        return threading.current_thread() is self.thread
