// What the sidebar shows, kept current from the event stream: a snapshot on
// (re)connect, then each store event applied in order.
import { Signal } from '@lumino/signaling';
import { Approval, Run, Session, StoreEvent, StreamState } from './api';

const RUN_EVENTS = new Set([
  'workflow.started',
  'workflow.state_changed',
  'workflow.paused',
  'workflow.resumed',
  'workflow.completed',
  'workflow.failed',
]);

export class SidebarModel {
  readonly changed = new Signal<this, void>(this);
  readonly sessions = new Map<string, Session>();
  readonly runs = new Map<string, Run>();
  readonly approvals = new Map<string, Approval>();
  loaded = false;

  reset(state: StreamState): void {
    this.sessions.clear();
    this.runs.clear();
    this.approvals.clear();
    for (const s of state.sessions) {
      this.sessions.set(s.id, { ...s, cost_usd: s.cost_usd ?? 0 });
    }
    for (const r of state.runs) {
      this.runs.set(r.id, { ...r, cost_usd: r.cost_usd ?? 0 });
    }
    for (const a of state.approvals) {
      this.approvals.set(a.id, a);
    }
    this.loaded = true;
    this.changed.emit();
  }

  apply(ev: StoreEvent): void {
    const p = ev.payload ?? {};
    const run = ev.run_id ? this.runs.get(ev.run_id) : undefined;
    if (ev.type === 'session.created') {
      this.sessions.set(ev.session_id, { id: ev.session_id, name: p.name, status: 'active', cost_usd: 0 });
    } else if (ev.type === 'session.state_changed') {
      if (p.to === 'deleted') {
        this.sessions.delete(ev.session_id);
      } else if (this.sessions.has(ev.session_id)) {
        this.sessions.get(ev.session_id)!.status = p.to;
      }
    } else if (ev.type === 'workflow.created' && ev.run_id) {
      this.runs.set(ev.run_id, {
        id: ev.run_id,
        session_id: ev.session_id,
        task: p.task ?? '',
        mode: p.mode ?? '',
        status: 'draft',
        created_at: ev.ts,
        cost_usd: 0,
      });
    } else if (RUN_EVENTS.has(ev.type) && run) {
      if (p.to) {
        run.status = p.to;
      }
      run.pause_requested = Boolean(p.pause_requested) && run.status !== 'paused';
    } else if (ev.type === 'approval.requested' && ev.run_id) {
      this.approvals.set(p.approval_id, {
        id: p.approval_id,
        session_id: ev.session_id,
        run_id: ev.run_id,
        step_id: p.step_id ?? null,
        kind: p.kind,
        status: 'pending',
        request: p.request ?? {},
        options: p.options ?? ['approve', 'reject'],
        created_at: ev.ts,
      });
    } else if (ev.type === 'approval.received') {
      this.approvals.delete(p.approval_id);
    } else if (ev.type === 'cost.update') {
      const session = this.sessions.get(ev.session_id);
      const cost = Number(p.cost_usd ?? 0);
      if (session) {
        session.cost_usd = (session.cost_usd ?? 0) + cost;
      }
      if (run) {
        run.cost_usd = (run.cost_usd ?? 0) + cost;
      }
    } else {
      return;
    }
    this.changed.emit();
  }

  runsOf(sessionId: string): Run[] {
    return [...this.runs.values()].filter(r => r.session_id === sessionId);
  }

  sessionName(sessionId: string): string {
    return this.sessions.get(sessionId)?.name ?? sessionId;
  }
}
