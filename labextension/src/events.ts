// The live event stream (/cmbagent/api/events): reconnects by itself with
// exponential backoff (1 s doubling to 30 s) and comes back with `since`, so no
// event is lost; pings the server and treats a silent socket as a dead one.
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';
import { Signal } from '@lumino/signaling';
import { API_PATH, Event, Snapshot } from './api';

export type ConnectionStatus = 'connecting' | 'open' | 'waiting' | 'closed';

export interface IStreamOptions {
  sessionId?: string;
  runId?: string;
}

export const FIRST_RETRY_MS = 1000;
export const MAX_RETRY_MS = 30000;
const PING_MS = 20000;
const SILENCE_MS = 60000;

/** The next wait before reconnecting: 1 s, 2 s, 4 s ... capped at 30 s. */
export function nextDelay(delay: number): number {
  return Math.min(delay * 2, MAX_RETRY_MS);
}

export class EventConnection implements IDisposable {
  readonly stateReceived = new Signal<this, Snapshot>(this);
  readonly eventReceived = new Signal<this, Event>(this);
  readonly statusChanged = new Signal<this, ConnectionStatus>(this);

  /** The store-wide position this client is at; sent as `since` on reconnect. */
  lastGseq: number | null = null;
  status: ConnectionStatus = 'closed';
  private socket: WebSocket | null = null;
  private delay = FIRST_RETRY_MS;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private pingTimer: ReturnType<typeof setInterval> | null = null;
  private lastFrameAt = 0;
  private disposed = false;

  constructor(
    private readonly options: IStreamOptions = {},
    private readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()
  ) {}

  get isDisposed(): boolean {
    return this.disposed;
  }

  start(): void {
    if (this.socket === null && this.retryTimer === null) {
      this.connect();
    }
  }

  dispose(): void {
    if (this.disposed) {
      return;
    }
    this.disposed = true;
    this.clearTimers();
    const socket = this.socket;
    this.socket = null;
    socket?.close();
    this.setStatus('closed');
    Signal.clearData(this);
  }

  url(): string {
    const query = new URLSearchParams();
    if (this.options.sessionId) {
      query.set('session_id', this.options.sessionId);
    }
    if (this.options.runId) {
      query.set('run_id', this.options.runId);
    }
    if (this.lastGseq !== null) {
      query.set('since', String(this.lastGseq));
    }
    if (this.settings.appendToken && this.settings.token) {
      query.set('token', this.settings.token);
    }
    return URLExt.join(this.settings.wsUrl, API_PATH, 'events') + `?${query}`;
  }

  private connect(): void {
    this.retryTimer = null;
    if (this.disposed) {
      return;
    }
    this.setStatus('connecting');
    let socket: WebSocket;
    try {
      socket = new this.settings.WebSocket(this.url());
    } catch (reason) {
      console.debug('cmbagent: event socket failed to open', reason);
      this.scheduleRetry();
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      this.lastFrameAt = Date.now();
      this.setStatus('open');
      this.startPings(socket);
    };
    socket.onmessage = message => this.onFrame(message.data);
    socket.onerror = () => console.debug('cmbagent: event socket error');
    socket.onclose = () => {
      if (this.socket === socket) {
        this.socket = null;
        this.stopPings();
        this.scheduleRetry();
      }
    };
  }

  private scheduleRetry(delay?: number): void {
    if (this.disposed) {
      return;
    }
    this.setStatus('waiting');
    const wait = delay ?? this.delay;
    this.delay = nextDelay(this.delay);
    this.retryTimer = setTimeout(() => this.connect(), wait);
  }

  /** Drop the socket and come back at once with `since` (the server asked us to). */
  private reconnectNow(): void {
    const socket = this.socket;
    this.socket = null;
    this.stopPings();
    socket?.close();
    this.scheduleRetry(0);
  }

  private onFrame(data: string): void {
    this.lastFrameAt = Date.now();
    let frame: any;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    switch (frame.type) {
      case 'connected':
      case 'state':
        // A working stream (not merely an open socket) ends the backoff. The state is
        // current up to frame.gseq; replayed events up to there are already in it.
        this.delay = FIRST_RETRY_MS;
        this.lastGseq = Math.max(this.lastGseq ?? 0, frame.gseq ?? 0);
        this.stateReceived.emit(frame.state as Snapshot);
        return;
      case 'replay_required':
        this.lastGseq = frame.since ?? this.lastGseq;
        this.reconnectNow();
        return;
      case 'heartbeat':
      case 'pong':
      case 'ack':
        return;
      case 'error':
        console.debug('cmbagent: event stream error', frame.message);
        return;
    }
    if (typeof frame.gseq === 'number' && frame.payload !== undefined) {
      if (this.lastGseq !== null && frame.gseq <= this.lastGseq) {
        return;
      }
      this.lastGseq = frame.gseq;
      this.eventReceived.emit(frame as Event);
    }
  }

  private startPings(socket: WebSocket): void {
    this.stopPings();
    this.pingTimer = setInterval(() => {
      if (Date.now() - this.lastFrameAt > SILENCE_MS) {
        console.debug('cmbagent: event socket silent; reconnecting');
        this.reconnectNow();
        return;
      }
      if (socket.readyState === WebSocket.OPEN) {
        socket.send(JSON.stringify({ type: 'ping' }));
      }
    }, PING_MS);
  }

  private stopPings(): void {
    if (this.pingTimer !== null) {
      clearInterval(this.pingTimer);
      this.pingTimer = null;
    }
  }

  private clearTimers(): void {
    this.stopPings();
    if (this.retryTimer !== null) {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
    }
  }

  private setStatus(status: ConnectionStatus): void {
    if (status !== this.status) {
      this.status = status;
      this.statusChanged.emit(status);
    }
  }
}
