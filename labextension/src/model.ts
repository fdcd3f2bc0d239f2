// What the sidebar shows, kept current from the event stream: a snapshot on
// (re)connect, then each store event applied in order. Rows are the generated
// record types cut to what an event can fill in, so a record's field that changes
// type in Python fails this build.
import { Signal } from '@lumino/signaling';
import {
  inSet,
  RUN_STATUSES,
  SESSION_STATUSES,
  type ApprovalRequest,
  type Event,
  type RunSummary,
  type SessionSummary,
  type Snapshot,
} from '@cmbagent-jupyter/core';

type Row<T, Given extends keyof T, Defaulted extends keyof T> = Pick<T, Given> & Required<Pick<T, Defaulted>>;

/** A session: all of it comes in a snapshot, `session.created` gives its id and name. */
export type SessionRow = Row<SessionSummary, 'id' | 'name', 'status' | 'cost_usd'>;
/** A run: all of it comes in a snapshot, `workflow.created` gives these. */
export type RunRow = Row<RunSummary, 'id' | 'session_id' | 'task' | 'created_at', 'status' | 'pause_requested' | 'cost_usd'>;
/** A pending approval, from a snapshot or from `approval.requested`. */
export type ApprovalRow = Row<
  ApprovalRequest,
  'id' | 'session_id' | 'run_id' | 'step_id' | 'kind' | 'created_at',
  'status' | 'request' | 'options'
>;

// ApprovalRequest's own default in Python, for a snapshot row that omits it
const DEFAULT_OPTIONS = ['approve', 'reject', 'modify'];

export class SidebarModel {
  readonly changed = new Signal<this, void>(this);
  readonly sessions = new Map<string, SessionRow>();
  readonly runs = new Map<string, RunRow>();
  readonly approvals = new Map<string, ApprovalRow>();
  loaded = false;

  reset(state: Snapshot): void {
    this.sessions.clear();
    this.runs.clear();
    this.approvals.clear();
    for (const s of state.sessions) {
      this.sessions.set(s.id, { id: s.id, name: s.name, status: s.status ?? 'active', cost_usd: s.cost_usd ?? 0 });
    }
    for (const r of state.runs) {
      this.runs.set(r.id, {
        id: r.id,
        session_id: r.session_id,
        task: r.task,
        created_at: r.created_at,
        status: r.status ?? 'draft',
        pause_requested: r.pause_requested ?? false,
        cost_usd: r.cost_usd ?? 0,
      });
    }
    for (const a of state.approvals) {
      this.approvals.set(a.id, {
        ...a,
        status: a.status ?? 'pending',
        request: a.request ?? {},
        options: a.options ?? DEFAULT_OPTIONS,
      });
    }
    this.loaded = true;
    this.changed.emit();
  }

  apply(ev: Event): void {
    if (this.reduce(ev)) {
      this.changed.emit();
    }
  }

  /** Apply one event; whether it changed anything the sidebar shows. */
  private reduce(ev: Event): boolean {
    const run = ev.run_id ? this.runs.get(ev.run_id) : undefined;
    switch (ev.type) {
      case 'session.created':
        this.sessions.set(ev.session_id, { id: ev.session_id, name: ev.payload.name, status: 'active', cost_usd: 0 });
        return true;
      case 'session.state_changed': {
        const to = ev.payload.to;
        const session = this.sessions.get(ev.session_id);
        if (to === 'deleted') {
          return this.sessions.delete(ev.session_id);
        }
        if (session && inSet(SESSION_STATUSES, to)) {
          session.status = to;
          return true;
        }
        return false;
      }
      case 'workflow.created':
        if (!ev.run_id) {
          return false;
        }
        this.runs.set(ev.run_id, {
          id: ev.run_id,
          session_id: ev.session_id,
          task: ev.payload.task,
          status: 'draft',
          created_at: ev.ts,
          pause_requested: false,
          cost_usd: 0,
        });
        return true;
      case 'workflow.started':
      case 'workflow.state_changed':
      case 'workflow.paused':
      case 'workflow.resumed':
      case 'workflow.completed':
      case 'workflow.failed':
        if (!run) {
          return false;
        }
        if (inSet(RUN_STATUSES, ev.payload.to)) {
          run.status = ev.payload.to;
        }
        run.pause_requested = Boolean(ev.payload.pause_requested) && run.status !== 'paused';
        return true;
      case 'approval.requested': {
        if (!ev.run_id) {
          return false;
        }
        const p = ev.payload;
        this.approvals.set(p.approval_id, {
          id: p.approval_id,
          session_id: ev.session_id,
          run_id: ev.run_id,
          step_id: p.step_id ?? null,
          kind: p.kind,
          status: 'pending',
          request: p.request ?? {},
          options: p.options,
          created_at: ev.ts,
        });
        return true;
      }
      case 'approval.received':
        return this.approvals.delete(ev.payload.approval_id);
      case 'cost.update': {
        const cost = ev.payload.cost_usd;
        const session = this.sessions.get(ev.session_id);
        if (session) {
          session.cost_usd += cost;
        }
        if (run) {
          run.cost_usd += cost;
        }
        return Boolean(session || run);
      }
      default:
        return false;
    }
  }

  runsOf(sessionId: string): RunRow[] {
    return [...this.runs.values()].filter(r => r.session_id === sessionId);
  }

  sessionName(sessionId: string): string {
    return this.sessions.get(sessionId)?.name ?? sessionId;
  }
}
