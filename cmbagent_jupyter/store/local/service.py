"""The store service: the one process per CMBAGENT_HOME that owns the DuckDB file.

Clients talk to it over a Unix socket (0600, in a 0700 directory, plus a token from a
0600 runtime file). One database thread runs every operation; consecutive writes
that arrive together share one transaction (group commit), and a retried request
whose first try committed is answered from the idempotency ledger instead of being
applied twice. Committed events are pushed to subscribers. The service exits after
a quiet period with no clients.

Run by clients as `python -m cmbagent_jupyter.store.local.service --home HOME`.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import hmac
import json
import logging
import os
import queue
import secrets
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from cmbagent_jupyter.core import codec
from cmbagent_jupyter.core.home import ensure_home
from cmbagent_jupyter.core import utcnow
from cmbagent_jupyter.store.local import ops as store_ops
from cmbagent_jupyter.store.local.database import Database, dumps, loads, to_db_time
from cmbagent_jupyter.core.errors import StoreError, Unauthorized
from cmbagent_jupyter.store.local.protocol import (
    HEADER,
    MAX_FRAME,
    PROTOCOL_VERSION,
    encode,
    error_file,
    runtime_file,
    socket_path,
    write_private,
)

log = logging.getLogger("cmbagent.store")

DEFAULT_IDLE_SECONDS = 600.0
MAX_BATCH = 256
SUBSCRIBER_BUFFER_BYTES = 8 * 1024 * 1024
REPLAY_PAGE = 5_000


@dataclass
class Job:
    op: str
    args: dict[str, Any]
    rid: str | None
    retry: bool
    done: Any  # callable(ok: bool, value) run on the loop thread
    write: bool = False


@dataclass
class Subscription:
    sub_id: str
    session_id: str | None
    run_id: str | None
    types: set[str] | None
    buffering: bool = False
    buffer: list[dict[str, Any]] = field(default_factory=list)
    last_gseq: int = 0

    def matches(self, ev: dict[str, Any]) -> bool:
        if self.session_id and ev["session_id"] != self.session_id:
            return False
        if self.run_id and ev["run_id"] != self.run_id:
            return False
        if self.types and ev["type"] not in self.types:
            return False
        return True


class Connection:
    def __init__(self, service: "StoreService", reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.service = service
        self.reader = reader
        self.writer = writer
        self.subs: dict[str, Subscription] = {}
        self.closed = False

    def send(self, obj: Any) -> None:
        if self.closed:
            return
        try:
            self.writer.write(encode(obj))
        except (ConnectionError, RuntimeError):
            self.closed = True

    def buffered(self) -> int:
        transport = self.writer.transport
        return transport.get_write_buffer_size() if transport else 0


class StoreService:
    def __init__(self, home: Path, idle_seconds: float = DEFAULT_IDLE_SECONDS):
        self.home = home
        self.idle_seconds = idle_seconds
        self.token = secrets.token_hex(32)
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self.connections: set[Connection] = set()
        self.last_activity = time.monotonic()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.db: Database | None = None
        self.seqs: store_ops.SeqAllocator | None = None
        self.stopping: asyncio.Event | None = None
        self.sock_path = socket_path(home)
        self.tasks: set[asyncio.Task] = set()

    # -- database thread -----------------------------------------------------

    def db_thread(self) -> None:
        assert self.db is not None
        while True:
            job = self.jobs.get()
            if job is None:
                break
            batch = [job]
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self.jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self.jobs.put(None)
                    break
                batch.append(nxt)
            segment: list[Job] = []
            for j in batch:
                if j.write:
                    segment.append(j)
                    continue
                if segment:
                    self.run_writes(segment)
                    segment = []
                self.run_read(j)
            if segment:
                self.run_writes(segment)

    def reply(self, job: Job, ok: bool, value: Any) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(job.done, ok, value)

    def run_read(self, job: Job) -> None:
        self.db.tune(writing=False)
        ctx = store_ops.OpContext(self.db, self.home, self.seqs)
        try:
            self.reply(job, True, store_ops.dispatch(ctx, job.op, job.args))
        except StoreError as exc:
            self.reply(job, False, exc.to_wire())
        except Exception as exc:  # noqa: BLE001 - reported to the caller, service keeps going
            log.exception("read %s failed", job.op)
            self.reply(job, False, {"code": "store_error", "message": f"{job.op} failed: {exc}"})

    def run_writes(self, jobs: list[Job]) -> None:
        outcome = self.try_transaction(jobs)
        if outcome is None:
            for j in jobs:
                single = self.try_transaction([j], report_errors=True)
                assert single is not None
        else:
            pass

    def try_transaction(self, jobs: list[Job], report_errors: bool = False, remembered_steps: bool = True
                        ) -> list | None:
        """Apply jobs in one transaction. On an op error: with several jobs, roll back and
        return None (the caller retries them one by one); with one, report it. A journal
        batch that found a step changed behind the service's memory of it is applied again,
        reading the steps."""
        db, seqs = self.db, self.seqs
        ctx = store_ops.OpContext(db, self.home, seqs, remembered_steps=remembered_steps)
        results: list[tuple[Job, bool, Any]] = []
        try:
            db.begin()
            retry_rids = [j.rid for j in jobs if j.retry and j.rid]
            applied: dict[str, Any] = {}
            if retry_rids:
                rows = db.fetch(
                    f"SELECT rid, result FROM applied_requests WHERE rid IN ({', '.join('?' * len(retry_rids))})",
                    retry_rids,
                )
                applied = {r["rid"]: loads(r["result"]) for r in rows}
            ledger = []
            now = to_db_time(utcnow())
            for j in jobs:
                if j.rid and j.rid in applied:
                    results.append((j, True, applied[j.rid]))
                    continue
                ctx.rid, ctx.retry, ctx.ledger = j.rid, j.retry, True
                value = store_ops.dispatch(ctx, j.op, j.args)
                results.append((j, True, value))
                if j.rid:
                    if ctx.ledger:
                        ledger.append((j.rid, dumps(value), now))
                    # a retry can share a batch with its first try (connection lost, service alive)
                    applied[j.rid] = value
            ctx.flush()
            db.insert_rows("applied_requests", ("rid", "result", "at"), ledger)
            db.commit()
        except Exception as exc:  # noqa: BLE001
            db.rollback()
            seqs.rollback()
            if isinstance(exc, store_ops.StaleSteps) and remembered_steps:
                seqs.forget_steps(exc.run_id)
                seqs.forget_head(exc.run_id)
                return self.try_transaction(jobs, report_errors, remembered_steps=False)
            if len(jobs) > 1 and not report_errors:
                return None
            wire = exc.to_wire() if isinstance(exc, StoreError) else {
                "code": "store_error", "message": f"{jobs[0].op} failed: {exc}"}
            if not isinstance(exc, StoreError):
                log.exception("write %s failed", jobs[0].op)
            for j in jobs:
                self.reply(j, False, wire)
            return []
        seqs.commit()
        for j, ok, value in results:
            self.reply(j, ok, value)
        if ctx.events:
            assert self.loop is not None
            self.loop.call_soon_threadsafe(self.publish, ctx.events)
        ctx.write_files()  # while the replies go out
        return results

    # -- event loop side ---------------------------------------------------------

    def submit(self, op: str, args: dict[str, Any], rid: str | None = None, retry: bool = False) -> asyncio.Future:
        assert self.loop is not None
        fut = self.loop.create_future()

        def done(ok: bool, value: Any) -> None:
            if not fut.done():
                fut.set_result((ok, value))

        spec = store_ops.OPS.get(op)
        self.jobs.put(Job(op, args, rid, retry, done, write=bool(spec and spec.write)))
        return fut

    def publish(self, events: list[dict[str, Any]]) -> None:
        for conn in list(self.connections):
            for sub in list(conn.subs.values()):
                matching = [e for e in events if sub.matches(e)]
                if not matching:
                    continue
                if sub.buffering:
                    sub.buffer.extend(matching)
                    continue
                self.deliver(conn, sub, matching)

    def deliver(self, conn: Connection, sub: Subscription, events: list[dict[str, Any]]) -> None:
        if conn.buffered() > SUBSCRIBER_BUFFER_BYTES:
            conn.send({"push": sub.sub_id, "overflow": True, "last_gseq": sub.last_gseq})
            conn.subs.pop(sub.sub_id, None)
            return
        for e in events:
            if e["gseq"] <= sub.last_gseq:
                continue
            sub.last_gseq = e["gseq"]
            conn.send({"push": sub.sub_id, "event": e})

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(self, reader, writer)
        self.connections.add(conn)
        self.last_activity = time.monotonic()
        try:
            hello = await self.read_frame(conn)
            if not isinstance(hello, dict) or hello.get("op") != "hello" or not hmac.compare_digest(
                str(hello.get("token", "")), self.token
            ):
                conn.send({"id": hello.get("id") if isinstance(hello, dict) else None, "ok": False,
                           "error": Unauthorized("bad or missing store token").to_wire()})
                await writer.drain()
                return
            conn.send({"id": hello.get("id"), "ok": True,
                       "result": {"pid": os.getpid(), "protocol": PROTOCOL_VERSION, "schema": self.db.version}})
            while True:
                msg = await self.read_frame(conn)
                if msg is None:
                    break
                self.last_activity = time.monotonic()
                if isinstance(msg, dict) and msg.get("error_frame"):
                    conn.send({"id": None, "ok": False, "error": msg["error_frame"]})
                    await writer.drain()
                    break
                task = asyncio.create_task(self.serve_request(conn, msg))
                self.tasks.add(task)  # the loop keeps only weak references to tasks
                task.add_done_callback(self.tasks.discard)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            conn.closed = True
            self.connections.discard(conn)
            self.last_activity = time.monotonic()
            try:
                writer.close()
            except Exception:  # noqa: BLE001
                pass

    async def read_frame(self, conn: Connection) -> Any:
        try:
            header = await conn.reader.readexactly(HEADER.size)
        except asyncio.IncompleteReadError:
            return None
        (length,) = HEADER.unpack(header)
        if length > MAX_FRAME:
            return {"error_frame": {"code": "too_large",
                                    "message": f"request of {length} bytes exceeds the {MAX_FRAME} byte limit"}}
        body = await conn.reader.readexactly(length)
        try:
            return codec.loads(body)
        except ValueError:
            return {"error_frame": {"code": "invalid", "message": "request is not valid JSON"}}

    async def serve_request(self, conn: Connection, msg: Any) -> None:
        if not isinstance(msg, dict):
            conn.send({"id": None, "ok": False, "error": {"code": "invalid", "message": "request must be an object"}})
            return
        req_id = msg.get("id")
        op = msg.get("op")
        args = msg.get("args") or {}
        if op == "subscribe":
            await self.subscribe(conn, req_id, args)
            return
        if op == "unsubscribe":
            conn.subs.pop(str(args.get("sub_id")), None)
            conn.send({"id": req_id, "ok": True, "result": True})
            return
        if not isinstance(op, str) or not isinstance(args, dict):
            conn.send({"id": req_id, "ok": False, "error": {"code": "invalid", "message": "op must be a name and args an object"}})
            return
        ok, value = await self.submit(op, args, msg.get("rid"), bool(msg.get("retry")))
        conn.send({"id": req_id, "ok": ok, ("result" if ok else "error"): value})

    async def subscribe(self, conn: Connection, req_id: Any, args: dict[str, Any]) -> None:
        sub = Subscription(
            sub_id=str(args.get("sub_id") or secrets.token_hex(6)),
            session_id=args.get("session_id"),
            run_id=args.get("run_id"),
            types=set(args["types"]) if args.get("types") else None,
            buffering=True,
        )
        if not sub.session_id and not args.get("all_sessions"):
            conn.send({"id": req_id, "ok": False,
                       "error": {"code": "invalid", "message": "subscribe needs a session_id, or all_sessions"}})
            return
        conn.subs[sub.sub_id] = sub
        since = args.get("since_gseq")
        replayed = 0
        if since is not None:
            # page through the history (live events meanwhile wait in sub.buffer)
            high = int(since)
            while True:
                list_args = {"session_id": sub.session_id, "run_id": sub.run_id, "since_gseq": high,
                             "all_sessions": not sub.session_id, "types": list(sub.types) if sub.types else None,
                             "limit": REPLAY_PAGE}
                ok, value = await self.submit("event.list", list_args)
                if not ok:
                    conn.subs.pop(sub.sub_id, None)
                    conn.send({"id": req_id, "ok": False, "error": value})
                    return
                if conn.subs.get(sub.sub_id) is not sub:  # dropped: overflow, unsubscribe, or subscribed anew
                    conn.send({"id": req_id, "ok": True, "result": {"sub_id": sub.sub_id, "replayed": replayed,
                                                                    "gseq": high, "dropped": True}})
                    return
                self.deliver(conn, sub, value)
                replayed += len(value)
                if value:
                    high = value[-1]["gseq"]
                if len(value) < REPLAY_PAGE:
                    break
        else:
            ok, value = await self.submit("store.ping", {})
            high = value.get("gseq", 0) if ok else 0
        # `gseq`: the client resumes from here after a reconnect, even if no event came yet
        conn.send({"id": req_id, "ok": True, "result": {"sub_id": sub.sub_id, "replayed": replayed, "gseq": high}})
        sub.buffering = False
        pending = sorted(sub.buffer, key=lambda e: e["gseq"])
        sub.buffer = []
        self.deliver(conn, sub, pending)

    async def watch_idle(self) -> None:
        assert self.stopping is not None
        while not self.stopping.is_set():
            await asyncio.sleep(min(1.0, self.idle_seconds / 4))
            if not self.connections and time.monotonic() - self.last_activity > self.idle_seconds:
                log.info("quiet for %.0f s with no clients: exiting", self.idle_seconds)
                self.stopping.set()

    async def main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.stopping.set)
        worker = threading.Thread(target=self.db_thread, name="store-db", daemon=True)
        worker.start()
        if self.sock_path.exists():
            self.sock_path.unlink()
        old_umask = os.umask(0o177)
        try:
            server = await asyncio.start_unix_server(self.handle, path=str(self.sock_path), limit=MAX_FRAME)
        finally:
            os.umask(old_umask)
        os.chmod(self.sock_path, 0o600)
        write_private(runtime_file(self.home), json.dumps({
            "pid": os.getpid(), "socket": str(self.sock_path), "token": self.token,
            "protocol": PROTOCOL_VERSION, "schema": self.db.version, "home": str(self.home),
            "started_at": utcnow().isoformat(),
        }))
        log.info("store service %d listening on %s", os.getpid(), self.sock_path)
        idle = asyncio.create_task(self.watch_idle())
        await self.stopping.wait()
        idle.cancel()
        server.close()
        for conn in list(self.connections):
            conn.writer.close()
        self.jobs.put(None)
        await asyncio.to_thread(worker.join, 30)


def prune_ledger(db: Database) -> None:
    cutoff = to_db_time(utcnow() - timedelta(days=2))
    db.execute('DELETE FROM applied_requests WHERE "at" < ?', [cutoff])


def run_service(home: Path, idle_seconds: float) -> int:
    home = ensure_home(home)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s",
        handlers=[logging.FileHandler(home / "logs" / "store.log")],
    )
    lock_fd = os.open(home / "run" / "service.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.info("another store service owns %s", home)
        return 3
    os.ftruncate(lock_fd, 0)
    os.pwrite(lock_fd, str(os.getpid()).encode(), 0)
    err = error_file(home)
    if err.exists():
        err.unlink()
    service = StoreService(home, idle_seconds)
    try:
        service.db = Database(home / "store.duckdb")
        prune_ledger(service.db)
        service.seqs = store_ops.SeqAllocator(service.db)
    except StoreError as exc:
        write_private(err, json.dumps(exc.to_wire()))
        log.error("cannot start: %s", exc.message)
        return 2
    try:
        asyncio.run(service.main())
    finally:
        try:
            service.db.checkpoint()
        except Exception:  # noqa: BLE001
            pass
        service.db.close()
        info = None
        try:
            info = json.loads(runtime_file(home).read_text())
        except (OSError, ValueError):
            pass
        if info and info.get("pid") == os.getpid():
            for p in (runtime_file(home), Path(info["socket"])):
                try:
                    p.unlink()
                except OSError:
                    pass
        os.close(lock_fd)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cmbagent-store", description="Run the store service for one CMBAGENT_HOME.")
    parser.add_argument("--home", required=True)
    parser.add_argument("--idle-seconds", type=float,
                        default=float(os.environ.get("CMBAGENT_STORE_IDLE_SECONDS", DEFAULT_IDLE_SECONDS)))
    ns = parser.parse_args(argv)
    return run_service(Path(ns.home), ns.idle_seconds)


if __name__ == "__main__":
    sys.exit(main())
