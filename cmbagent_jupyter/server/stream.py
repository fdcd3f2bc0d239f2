"""One client's event stream: the current state, the events it missed, then live ones.

Tornado-free: it needs an async `send(frame)` and the blocking `ServerAPI`, which it
only calls through `asyncio.to_thread`. Store events arrive on the store client's
reader thread and are handed to the event loop with `call_soon_threadsafe`.

A client that reads slower than events come must not stall the server or grow its
memory: live events wait in a bounded queue; when it overflows the queue is dropped,
the store subscription closed, and the client told `replay_required` with the last
gseq it was sent, so it can come back with `since` and lose nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from cmbagent_jupyter.core import utcnow
from cmbagent_jupyter.server.api import ServerAPI
from cmbagent_jupyter.server.bodies import (
    PauseRun,
    Ping,
    RequestState,
    ResolveApproval,
    ResumeRun,
    parse_message,
)
from cmbagent_jupyter.server.errors import ApiError, api_error

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class StreamScope:
    """What a connection follows: one session (or all of the user's), maybe one run."""

    session_id: str | None = None
    run_id: str | None = None


@dataclass
class _Restart:
    since: int | None
    snapshot: dict[str, Any] | None
    frame: str
    request_id: Any = None


class EventStream:
    def __init__(self, api: ServerAPI, scope: StreamScope, send: Send, *, queue_size: int = 10_000,
                 heartbeat_s: float = 15.0, page_size: int = 1_000):
        self.api = api
        self.scope = scope
        self._send = send
        self.queue_size = queue_size
        self.heartbeat_s = heartbeat_s
        self.page_size = page_size
        self.loop = asyncio.get_running_loop()
        self.queue: deque[dict[str, Any]] = deque()
        self.wakeup = asyncio.Event()
        self.restart: _Restart | None = None
        self.generation = 0
        self.subscription: Any = None
        self.last_sent = 0
        self.stalled = False
        self.closed = False
        self.tasks: list[asyncio.Task] = []

    # ------------------------------------------------------------ lifecycle

    def start(self, snapshot: dict[str, Any], since: int | None) -> None:
        self._request_restart(_Restart(since, snapshot, "connected"))
        self.tasks = [asyncio.create_task(self._write_loop()), asyncio.create_task(self._heartbeat_loop())]

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.generation += 1
        self.queue.clear()
        self.wakeup.set()
        for task in self.tasks:
            task.cancel()
        self._drop_subscription()

    def _drop_subscription(self) -> None:
        sub, self.subscription = self.subscription, None
        if sub is not None:
            self.loop.run_in_executor(None, sub.close)

    async def send(self, frame: dict[str, Any]) -> None:
        if not self.closed:
            await self._send(frame)

    # ------------------------------------------------------------ store side (event loop thread)

    def _offer(self, generation: int, event: dict[str, Any]) -> None:
        if generation != self.generation or self.stalled or self.closed:
            return
        if len(self.queue) >= self.queue_size:
            self._overflow()
            return
        self.queue.append(event)
        self.wakeup.set()

    def _overflow(self, why: str | None = None) -> None:
        """Stop following the store; tell the client where to come back from."""
        self.stalled = True
        self.queue.clear()
        self._drop_subscription()
        why = why or f"more than {self.queue_size} events were waiting for this connection"
        log.info("event stream stopped at gseq %s: %s", self.last_sent, why)
        asyncio.ensure_future(self.send({
            "type": "replay_required", "since": self.last_sent,
            "message": f"{why}; reconnect (or send request_state) with this `since` to receive the rest",
        }))

    # ------------------------------------------------------------ writer

    def _request_restart(self, restart: _Restart) -> None:
        self.generation += 1
        self.queue.clear()
        self.stalled = False
        self.restart = restart
        self.wakeup.set()

    async def _write_loop(self) -> None:
        try:
            while not self.closed:
                if self.restart is not None:
                    restart, self.restart = self.restart, None
                    await self._begin(restart)
                    continue
                if not self.queue:
                    self.wakeup.clear()
                    await self.wakeup.wait()
                    continue
                event = self.queue.popleft()
                if event["gseq"] <= self.last_sent:
                    continue
                self.last_sent = event["gseq"]
                await self.send(event)
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 - a broken connection ends its stream, nothing else
            log.exception("event stream writer failed")
            self.close()

    async def _begin(self, restart: _Restart) -> None:
        """Send the state frame, subscribe, and replay what the client lacks up to where
        live events begin; live events meanwhile wait in the queue."""
        generation = self.generation
        self._drop_subscription()
        try:
            snapshot = restart.snapshot or await asyncio.to_thread(
                self.api.snapshot, self.scope.session_id, self.scope.run_id)
            sub = await asyncio.to_thread(
                self.api.subscribe, self.scope.session_id, self.scope.run_id,
                lambda ev: self.loop.call_soon_threadsafe(self._offer, generation, ev))
        except Exception as exc:  # noqa: BLE001
            await self._send_error(exc, restart.request_id)
            return
        if generation != self.generation or self.stalled or self.closed:
            self.loop.run_in_executor(None, sub.close)
            return
        self.subscription = sub
        live_from = max(sub.last_gseq or 0, snapshot["gseq"])
        start = restart.since if restart.since is not None else snapshot["gseq"]
        frame = {"type": restart.frame, "session_id": self.scope.session_id, "run_id": self.scope.run_id,
                 "since": restart.since, "gseq": snapshot["gseq"], "state": snapshot}
        if restart.request_id is not None:
            frame["id"] = restart.request_id
        await self.send(frame)
        self.last_sent = start
        try:
            await self._replay(generation, start, live_from)
        except Exception as exc:  # noqa: BLE001 - the store went away mid-replay: the client retries later
            if generation == self.generation and not self.closed:
                await self._send_error(exc, restart.request_id)
                self._overflow(f"the replay stopped ({type(exc).__name__})")

    async def _replay(self, generation: int, start: int, until: int) -> None:
        cursor = start
        while cursor < until:
            page = await asyncio.to_thread(self.api.events, cursor, self.scope.session_id, self.scope.run_id,
                                           self.page_size)
            for event in page:
                if event["gseq"] > until or generation != self.generation or self.stalled or self.closed:
                    return
                self.last_sent = event["gseq"]
                await self.send(event)
            if len(page) < self.page_size:
                return
            cursor = page[-1]["gseq"]

    async def _heartbeat_loop(self) -> None:
        try:
            while not self.closed:
                await asyncio.sleep(self.heartbeat_s)
                await self.send({"type": "heartbeat", "ts": utcnow().isoformat(), "gseq": self.last_sent})
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001
            self.close()

    # ------------------------------------------------------------ client messages

    async def handle(self, raw: str | bytes) -> None:
        request_id = None
        try:
            message = parse_message(raw)
            request_id = message.id
            reply = await self._dispatch(message)
        except Exception as exc:  # noqa: BLE001
            await self._send_error(exc, request_id)
            return
        if reply is not None:
            await self.send(reply)

    async def _dispatch(self, message: Any) -> dict[str, Any] | None:
        if isinstance(message, Ping):
            return {"type": "pong", "id": message.id, "ts": utcnow().isoformat(), "gseq": self.last_sent}
        if isinstance(message, RequestState):
            self._request_restart(_Restart(message.since, None, "state", message.id))
            return None
        session_id = self._session_of(message)
        if isinstance(message, ResumeRun):
            result = await asyncio.to_thread(self.api.resume_run, session_id, message.run_id)
        elif isinstance(message, PauseRun):
            result = await asyncio.to_thread(self.api.pause_run, session_id, message.run_id)
        elif isinstance(message, ResolveApproval):
            result = await asyncio.to_thread(self.api.resolve_approval, session_id, message.approval_id,
                                             message.decision, message.feedback)
        else:  # pragma: no cover - the message union is closed
            raise ApiError(400, f"unhandled message {type(message).__name__}", "invalid_message")
        return {"type": "ack", "id": message.id, "request": message.type, "result": result}

    def _session_of(self, message: PauseRun | ResolveApproval) -> str:
        named, scoped = message.session_id, self.scope.session_id
        if named and scoped and named != scoped:
            raise ApiError(404, f"session {named} is not the session {scoped} this stream follows", "not_found")
        session_id = named or scoped
        if session_id is None:
            raise ApiError(400, f"{message.type} needs a session_id (this stream follows every session)",
                           "missing_session")
        return session_id

    async def _send_error(self, exc: BaseException, request_id: Any) -> None:
        err = api_error(exc)
        if err is None:
            log.exception("event stream request failed", exc_info=exc)
            err = ApiError(500, f"internal error: {type(exc).__name__}", "internal")
        await self.send({"type": "error", "id": request_id, "status": err.status, **err.to_json()})
