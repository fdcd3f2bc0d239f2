"""A client of the store service: finds it, starts it when there is none, survives its loss.

Thread-safe: many threads may call at once over one connection (replies are matched
by id). Every write carries a request id; when the connection drops mid-call the
client reconnects (starting a new service if needed) and resends with `retry`, so
the service answers from its ledger instead of applying the write twice.
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from cmbagent_jupyter.core import codec
from cmbagent_jupyter.core.home import ensure_home, home_path
from cmbagent_jupyter.core.errors import (
    PayloadTooLarge,
    StoreError,
    StoreUnavailable,
    from_wire,
)
from cmbagent_jupyter.store import port
from cmbagent_jupyter.store.local.protocol import HEADER, MAX_FRAME, encode, error_file, read_runtime, runtime_file
from cmbagent_jupyter.core.threads import in_thread

START_TIMEOUT = 60.0


class ConnectionLost(Exception):
    pass


def _pid_alive(pid: int) -> bool:
    """True for a running process; a zombie (exited, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in (b"Z", b"X")


def _lock_holder_pid(home: Path) -> int | None:
    """The pid a service wrote into its lock file (present even before its runtime file)."""
    try:
        text = (home / "run" / "service.lock").read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _service_lock_free(home: Path) -> bool:
    """True when no service holds this home (the service keeps an exclusive flock)."""
    path = home / "run" / "service.lock"
    if not path.exists():
        return True
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


# requests up to this size are sent from an event loop's own thread (a socket buffer takes them at once)
INLINE_SEND_LIMIT = 128 * 1024


class _Connection:
    def __init__(self, sock: socket.socket, on_push: Callable[[dict], None], on_lost: Callable[["_Connection"], None]):
        self.sock = sock
        self.pending: dict[int, Future] = {}
        self.ids = itertools.count(1)
        self.send_lock = threading.Lock()
        self.alive = True
        self.on_push = on_push
        self.on_lost = on_lost
        self.reader = threading.Thread(target=self._read_loop, name="store-client-reader", daemon=True)

    def start(self) -> None:
        self.reader.start()

    def _recv_exact(self, n: int) -> bytes:
        chunks, got = [], 0
        while got < n:
            chunk = self.sock.recv(min(n - got, 1 << 20))
            if not chunk:
                raise ConnectionLost("store service closed the connection")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _read_loop(self) -> None:
        try:
            while True:
                (length,) = HEADER.unpack(self._recv_exact(HEADER.size))
                msg = codec.loads(self._recv_exact(length))
                if "push" in msg:
                    self.on_push(msg)
                    continue
                fut = self.pending.pop(msg.get("id"), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
                elif msg.get("id") is None and not msg.get("ok", True):
                    for f in list(self.pending.values()):
                        if not f.done():
                            f.set_result(msg)
                    self.pending.clear()
        except (OSError, ConnectionLost, ValueError):
            pass
        finally:
            self.close()
            self.on_lost(self)

    def request(self, obj: dict[str, Any], *, max_inline: int | None = None) -> Future | None:
        """Send one request; its reply arrives on the returned future. With `max_inline`, a
        request larger than that is not sent (None is returned)."""
        frame_id = next(self.ids)
        obj = {**obj, "id": frame_id}
        data = encode(obj)
        if len(data) - HEADER.size > MAX_FRAME:
            raise PayloadTooLarge(
                f"{obj.get('op')} request is {len(data)} bytes; the store accepts at most {MAX_FRAME} bytes per request"
            )
        if max_inline is not None and len(data) > max_inline:
            return None
        fut: Future = Future()
        self.pending[frame_id] = fut
        try:
            with self.send_lock:
                if not self.alive:
                    raise ConnectionLost("connection closed")
                self.sock.sendall(data)
        except OSError as exc:
            self.pending.pop(frame_id, None)
            self.close()
            raise ConnectionLost(str(exc)) from exc
        return fut

    def close(self) -> None:
        if not self.alive:
            return
        self.alive = False
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for fut in list(self.pending.values()):
            if not fut.done():
                fut.set_exception(ConnectionLost("store service connection lost"))
        self.pending.clear()


class Subscription(port.Subscription):
    """Events pushed by the service; iterate, or `get(timeout)`; survives reconnects."""

    def __init__(self, client: "StoreClient", params: dict[str, Any], callback: Callable[[dict], None] | None):
        self.client = client
        self.sub_id = uuid.uuid4().hex[:12]
        self.params = params
        self.callback = callback
        self.queue: queue.Queue[dict] = queue.Queue()
        self.last_gseq: int | None = params.get("since_gseq")
        self.closed = False

    def _deliver(self, event: dict) -> None:
        g = event.get("gseq")
        if g is not None and self.last_gseq is not None and g <= self.last_gseq:
            return
        if g is not None:
            self.last_gseq = g
        if self.callback is not None:
            try:
                self.callback(event)
            except Exception:  # noqa: BLE001 - a faulty callback must not kill the reader
                pass
        else:
            self.queue.put(event)

    def get(self, timeout: float | None = None) -> dict | None:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.closed = True
        self.client._drop_subscription(self)


class StoreClient:
    def __init__(self, home: str | os.PathLike | None = None, *, autostart: bool = True,
                 timeout: float = 120.0, idle_seconds: float | None = None):
        self.home = home_path(home)
        self.autostart = autostart
        self.timeout = timeout
        self.idle_seconds = idle_seconds
        self._conn: _Connection | None = None
        self._lock = threading.RLock()
        self._subs: dict[str, Subscription] = {}
        self._closed = False
        self.service_pid: int | None = None

    # -- connection ------------------------------------------------------------

    def _connect_once(self) -> _Connection | None:
        info = read_runtime(self.home)
        if not info:
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5.0)
        try:
            sock.connect(info["socket"])
            sock.sendall(encode({"op": "hello", "token": info["token"], "id": 0}))
            header = b""
            while len(header) < HEADER.size:
                chunk = sock.recv(HEADER.size - len(header))
                if not chunk:
                    raise ConnectionLost("closed during hello")
                header += chunk
            (length,) = HEADER.unpack(header)
            body = b""
            while len(body) < length:
                chunk = sock.recv(length - len(body))
                if not chunk:
                    raise ConnectionLost("closed during hello")
                body += chunk
            reply = codec.loads(body)
        except (OSError, ConnectionLost, ValueError, KeyError):
            sock.close()
            return None
        if not reply.get("ok"):
            sock.close()
            raise from_wire(reply.get("error") or {})
        sock.settimeout(None)
        self.service_pid = reply["result"]["pid"]
        conn = _Connection(sock, self._on_push, self._on_lost)
        conn.start()
        return conn

    def _ensure(self, deadline: float) -> _Connection:
        with self._lock:
            if self._closed:
                raise StoreUnavailable("store client is closed")
            if self._conn is not None and self._conn.alive:
                return self._conn
            delay = 0.02
            while True:
                conn = self._connect_once()
                if conn is not None:
                    self._conn = conn
                    self._resubscribe(conn)
                    return conn
                if not self.autostart:
                    raise StoreUnavailable(f"no store service is running for {self.home}")
                self._start_service(deadline)
                if time.monotonic() > deadline:
                    raise StoreUnavailable(f"could not reach the store service for {self.home} in time")
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    @contextmanager
    def _start_lock(self) -> Iterator[None]:
        ensure_home(self.home)
        fd = os.open(self.home / "run" / "start.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _start_service(self, deadline: float) -> None:
        with self._start_lock():
            probe = self._connect_once()
            if probe is not None:
                probe.close()
                return
            if not _service_lock_free(self.home):
                self._wait_for_runtime(deadline, proc=None)
                return
            for stale in (runtime_file(self.home),):
                try:
                    stale.unlink()
                except FileNotFoundError:
                    pass
            # -P: the caller's working directory must not put another checkout's code in the service
            cmd = [sys.executable, "-P", "-m", "cmbagent_jupyter.store.local.service", "--home", str(self.home)]
            if self.idle_seconds is not None:
                cmd += ["--idle-seconds", str(self.idle_seconds)]
            env = dict(os.environ)
            env["PYTHONUNBUFFERED"] = "1"
            package_root = str(Path(__file__).resolve().parents[2])
            env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
            with open(self.home / "logs" / "store.stderr", "ab") as errlog:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errlog,
                                        start_new_session=True, close_fds=True, env=env, cwd=self.home)
            threading.Thread(target=proc.wait, name="store-service-reaper", daemon=True).start()
            self._wait_for_runtime(deadline, proc)

    def _wait_for_runtime(self, deadline: float, proc: subprocess.Popen | None) -> None:
        delay = 0.01
        while time.monotonic() < deadline:
            info = read_runtime(self.home)
            if info and (proc is None or info.get("pid") == proc.pid) and _pid_alive(info["pid"]):
                return
            if proc is None and _service_lock_free(self.home):
                return  # the service we waited for is gone (exited or failed to start): the caller retries
            if proc is not None and proc.poll() is not None:
                if proc.returncode == 3:
                    return
                detail = ""
                try:
                    err = json.loads(error_file(self.home).read_text())
                    raise from_wire(err)
                except (OSError, ValueError):
                    detail = f" (exit code {proc.returncode}; see {self.home / 'logs'})"
                raise StoreUnavailable(f"the store service for {self.home} failed to start{detail}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)
        raise StoreUnavailable(f"the store service for {self.home} did not start within {START_TIMEOUT:.0f} s")

    def _on_lost(self, conn: _Connection) -> None:
        with self._lock:
            if self._conn is conn:
                self._conn = None
        if self._subs and not self._closed:
            threading.Thread(target=self._reconnect_for_subs, daemon=True).start()

    def _reconnect_for_subs(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not self._closed and self._subs and time.monotonic() < deadline:
            try:
                self._ensure(deadline)
                return
            except StoreError:
                time.sleep(0.2)

    def _on_push(self, msg: dict) -> None:
        sub = self._subs.get(msg.get("push"))
        if sub is None:
            return
        if msg.get("overflow"):
            threading.Thread(target=self._replay, args=(sub,), daemon=True).start()
            return
        sub._deliver(msg["event"])

    def _replay(self, sub: Subscription) -> None:
        params = {**sub.params, "since_gseq": sub.last_gseq or 0, "sub_id": sub.sub_id}
        try:
            self.call("subscribe", params)
        except StoreError:
            pass

    def _resubscribe(self, conn: _Connection) -> None:
        for sub in list(self._subs.values()):
            params = {**sub.params, "sub_id": sub.sub_id}
            if sub.last_gseq is not None:
                params["since_gseq"] = sub.last_gseq
            conn.request({"op": "subscribe", "args": params})

    # -- calls ---------------------------------------------------------------

    def call(self, op: str, args: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        """Run one store operation; raises the matching StoreError on refusal."""
        return self._call(op, args, timeout, uuid.uuid4().hex, False)

    def _call(self, op: str, args: dict[str, Any] | None, timeout: float | None, rid: str, retry: bool) -> Any:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            conn = self._ensure(deadline)
            try:
                fut = conn.request({"op": op, "args": args or {}, "rid": rid, "retry": retry})
                msg = fut.result(timeout=max(0.1, deadline - time.monotonic()))
            except ConnectionLost:
                retry = True
                if time.monotonic() > deadline:
                    raise StoreUnavailable(f"lost the store service during {op} and could not get it back") from None
                continue
            except TimeoutError:
                raise StoreUnavailable(f"the store service did not answer {op} in time") from None
            if msg.get("ok"):
                return msg.get("result")
            raise from_wire(msg.get("error") or {})

    async def acall(self, op: str, args: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        """`call` for a coroutine. With a live connection the request is sent at once from the
        calling thread, so the requests one event loop makes reach the service in the order it
        made them, and the reply is awaited without a thread; otherwise (no connection yet, a
        large request, the connection lost on the way) `call`'s connect, start and resend path
        runs in a thread, with the same request id so a write is never applied twice."""
        rid = uuid.uuid4().hex
        conn = self._conn
        request = {"op": op, "args": args or {}, "rid": rid, "retry": False}
        if conn is None or not conn.alive or self._closed:
            return await in_thread(self._call, op, args, timeout, rid, False)
        try:
            fut = conn.request(request, max_inline=INLINE_SEND_LIMIT)
        except ConnectionLost:
            return await in_thread(self._call, op, args, timeout, rid, True)
        if fut is None:  # too large to send from the loop's thread
            return await in_thread(self._call, op, args, timeout, rid, False)
        try:
            msg = await asyncio.wait_for(asyncio.wrap_future(fut), timeout or self.timeout)
        except ConnectionLost:
            return await in_thread(self._call, op, args, timeout, rid, True)
        except asyncio.TimeoutError:
            raise StoreUnavailable(f"the store service did not answer {op} in time") from None
        if msg.get("ok"):
            return msg.get("result")
        raise from_wire(msg.get("error") or {})

    def subscribe(self, *, session_id: str | None = None, run_id: str | None = None, types: list[str] | None = None,
                  since_gseq: int | None = None, all_sessions: bool = False,
                  callback: Callable[[dict], None] | None = None) -> Subscription:
        params: dict[str, Any] = {"session_id": session_id, "run_id": run_id, "types": types,
                                  "all_sessions": all_sessions}
        if since_gseq is not None:
            params["since_gseq"] = since_gseq
        sub = Subscription(self, params, callback)
        self._subs[sub.sub_id] = sub
        try:
            result = self.call("subscribe", {**params, "sub_id": sub.sub_id})
        except BaseException:
            self._subs.pop(sub.sub_id, None)
            raise
        if sub.last_gseq is None and isinstance(result, dict) and result.get("gseq") is not None:
            # so that a resubscription after a lost connection replays what came meanwhile
            sub.last_gseq = max(int(result["gseq"]), sub.last_gseq or 0)
        return sub

    def _drop_subscription(self, sub: Subscription) -> None:
        self._subs.pop(sub.sub_id, None)
        conn = self._conn
        if conn is not None and conn.alive:
            try:
                conn.request({"op": "unsubscribe", "args": {"sub_id": sub.sub_id}})
            except (ConnectionLost, StoreError):
                pass

    def close(self) -> None:
        self._closed = True
        self._subs.clear()
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> "StoreClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def service_pid(home: str | os.PathLike | None = None) -> int | None:
    """The pid of the live service of a home, or None (also while it is still starting)."""
    root = home_path(home)
    info = read_runtime(root)
    if info and isinstance(info.get("pid"), int) and _pid_alive(info["pid"]):
        return info["pid"]
    if _service_lock_free(root):
        return None
    pid = _lock_holder_pid(root)
    return pid if pid is not None and _pid_alive(pid) else None


def stop_service(home: str | os.PathLike | None = None, timeout: float = 30.0) -> bool:
    """Ask a running service to exit (SIGTERM) and wait until its process is gone;
    False if none ran. Also stops a service that is still starting (no runtime file yet)."""
    root = home_path(home)
    pid = service_pid(root)
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.02)
    raise StoreUnavailable(f"the store service {pid} for {root} did not exit within {timeout:.0f} s of SIGTERM")
