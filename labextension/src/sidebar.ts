// The left-sidebar panel: server health, sessions with their runs and cost,
// pending approvals with Approve / Reject and a feedback box, all kept live by
// the event stream. Nothing here shouts when the server extension is missing.
import { Widget } from '@lumino/widgets';
import { inSet, RUNNING_RUN_STATES, STOPPED_RUN_STATES } from '@cmbagent-jupyter/core';
import { api, ApiError } from './api';
import { ConnectionStatus, EventConnection } from './events';
import { fetchHealth, Health } from './health';
import { ApprovalRow, RunRow, SessionRow, SidebarModel } from './model';

export const SIDEBAR_ID = 'cmbagent-sidebar';

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className = '',
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

function button(label: string, className: string, onClick: () => void): HTMLButtonElement {
  const b = el('button', `jp-Button cmbagent-button ${className}`, label);
  b.type = 'button';
  b.addEventListener('click', onClick);
  return b;
}

export function usd(value: number | undefined): string {
  return `$${(value ?? 0).toFixed(4)}`;
}

/** The engine's gates say `title` and `summary`; other callers may ask a `question`. */
function describeRequest(request: Record<string, unknown>): string {
  const text = [request.summary, request.question].find(v => typeof v === 'string') as string | undefined;
  const shown = text ?? (request.title ? '' : JSON.stringify(request));
  return shown.length > 300 ? `${shown.slice(0, 299)}…` : shown;
}

const OPTION_LABELS: Record<string, string> = {
  approve: 'Approve',
  reject: 'Reject',
  modify: 'Modify',
  retry: 'Retry',
  skip: 'Skip',
  abort: 'Abort',
};

export interface ISidebarActions {
  openRun(runId: string): void;
  newSession(): void;
}

export class CMBAgentSidebar extends Widget {
  readonly model = new SidebarModel();
  private readonly healthNode: HTMLElement;
  private readonly connectionNode: HTMLElement;
  private readonly approvalsNode: HTMLElement;
  private readonly sessionsNode: HTMLElement;
  private readonly approvalNodes = new Map<string, HTMLElement>();
  private stream: EventConnection | null = null;
  private renderQueued = false;

  constructor(private readonly actions: ISidebarActions | null = null) {
    super();
    this.id = SIDEBAR_ID;
    this.addClass('cmbagent-sidebar');
    this.title.label = 'CMBAgent';
    this.title.caption = 'CMBAgent research workflows';

    this.healthNode = el('div', 'cmbagent-sidebar-health', 'Checking server extension...');
    this.healthNode.dataset.state = 'checking';
    this.connectionNode = el('div', 'cmbagent-connection');
    this.connectionNode.dataset.state = 'closed';
    const toolbar = el('div', 'cmbagent-toolbar');
    if (actions) {
      toolbar.append(button('New session', 'cmbagent-new-session', () => actions.newSession()));
    }
    this.approvalsNode = el('section', 'cmbagent-approvals');
    this.sessionsNode = el('section', 'cmbagent-sessions');
    this.node.append(el('h2', '', 'CMBAgent'), this.healthNode, this.connectionNode, toolbar,
      this.approvalsNode, this.sessionsNode);
    this.model.changed.connect(() => this.queueRender());
  }

  /** Check the server extension; when it answers, follow the event stream. */
  async refresh(): Promise<void> {
    const health = await fetchHealth();
    this.showHealth(health);
    if (health?.status === 'ok') {
      this.follow();
    }
  }

  dispose(): void {
    this.stream?.dispose();
    super.dispose();
  }

  private follow(): void {
    if (this.stream) {
      return;
    }
    this.stream = new EventConnection();
    this.stream.stateReceived.connect((_, state) => this.model.reset(state));
    this.stream.eventReceived.connect((_, ev) => this.model.apply(ev));
    this.stream.statusChanged.connect((_, status) => this.showConnection(status));
    this.stream.start();
  }

  private showHealth(health: Health | null): void {
    if (health && health.status === 'ok') {
      this.healthNode.dataset.state = 'ok';
      this.healthNode.textContent = `Server: ${health.status} (cmbagent-jupyter ${health.version ?? '?'})`;
    } else {
      this.healthNode.dataset.state = 'unavailable';
      this.healthNode.textContent = 'Server extension unavailable.';
    }
  }

  private showConnection(status: ConnectionStatus): void {
    this.connectionNode.dataset.state = status;
    this.connectionNode.textContent = {
      connecting: 'Connecting to live updates...',
      open: 'Live',
      waiting: 'Reconnecting...',
      closed: '',
    }[status];
  }

  private queueRender(): void {
    if (this.renderQueued) {
      return;
    }
    this.renderQueued = true;
    requestAnimationFrame(() => {
      this.renderQueued = false;
      this.render();
    });
  }

  private render(): void {
    this.renderApprovals();
    this.renderSessions();
  }

  // ---------------------------------------------------------------- approvals

  private renderApprovals(): void {
    const pending = [...this.model.approvals.values()];
    for (const [id, node] of this.approvalNodes) {
      if (!this.model.approvals.has(id)) {
        node.remove();
        this.approvalNodes.delete(id);
      }
    }
    let heading = this.approvalsNode.querySelector('h3');
    if (!heading) {
      heading = el('h3');
      this.approvalsNode.prepend(heading);
    }
    heading.textContent = `Pending approvals (${pending.length})`;
    this.approvalsNode.dataset.count = String(pending.length);
    for (const approval of pending) {
      if (!this.approvalNodes.has(approval.id)) {
        const node = this.approvalItem(approval);
        this.approvalNodes.set(approval.id, node);
        this.approvalsNode.appendChild(node);
      }
    }
  }

  private approvalItem(approval: ApprovalRow): HTMLElement {
    const item = el('div', 'cmbagent-approval');
    item.dataset.approvalId = approval.id;
    item.dataset.runId = approval.run_id;
    const title = el('div', 'cmbagent-approval-title');
    const heading = typeof approval.request.title === 'string' ? approval.request.title : approval.kind.replace(/_/g, ' ');
    title.append(el('span', 'cmbagent-approval-kind', heading), ` · ${this.model.sessionName(approval.session_id)}`);
    const run = this.model.runs.get(approval.run_id);
    const what = el('div', 'cmbagent-approval-run', run ? run.task : approval.run_id);
    const request = el('div', 'cmbagent-approval-request', describeRequest(approval.request));
    const feedback = el('textarea', 'cmbagent-feedback');
    feedback.placeholder = 'Feedback for the agents (required to reject or modify)';
    feedback.rows = 2;
    const error = el('div', 'cmbagent-approval-error');
    const decide = async (decision: string) => {
      buttons.forEach(b => (b.disabled = true));
      error.textContent = '';
      try {
        await api.decide(approval, decision, feedback.value.trim());
        item.dataset.state = decision;
      } catch (reason) {
        error.textContent = reason instanceof ApiError ? reason.message : String(reason);
        buttons.forEach(b => (b.disabled = false));
      }
    };
    const buttons = approval.options.map(option =>
      button(OPTION_LABELS[option] ?? option, `cmbagent-${option}`, () => void decide(option))
    );
    const row = el('div', 'cmbagent-approval-buttons');
    row.append(...buttons);
    item.append(title, what, request, feedback, row, error);
    return item;
  }

  // ---------------------------------------------------------------- sessions and runs

  private renderSessions(): void {
    this.sessionsNode.replaceChildren(el('h3', '', 'Sessions'));
    const sessions = [...this.model.sessions.values()];
    if (!sessions.length) {
      this.sessionsNode.append(el('div', 'cmbagent-empty', this.model.loaded ? 'No sessions yet.' : 'Loading...'));
      return;
    }
    const list = el('ul', 'cmbagent-session-list');
    for (const session of sessions) {
      list.appendChild(this.sessionItem(session));
    }
    this.sessionsNode.appendChild(list);
  }

  private sessionItem(session: SessionRow): HTMLElement {
    const item = el('li', 'cmbagent-session');
    item.dataset.sessionId = session.id;
    const head = el('div', 'cmbagent-session-head');
    head.append(el('span', 'cmbagent-session-name', session.name), el('span', 'cmbagent-cost', usd(session.cost_usd)));
    item.appendChild(head);
    const runs = this.model.runsOf(session.id).reverse();
    const list = el('ul', 'cmbagent-run-list');
    for (const run of runs) {
      list.appendChild(this.runItem(run));
    }
    if (!runs.length) {
      list.appendChild(el('li', 'cmbagent-empty', 'No runs.'));
    }
    item.appendChild(list);
    return item;
  }

  private runItem(run: RunRow): HTMLElement {
    const item = el('li', 'cmbagent-run');
    item.dataset.runId = run.id;
    item.dataset.status = run.status;
    const status = el('span', 'cmbagent-status', run.status.replace('_', ' '));
    status.dataset.status = run.status;
    const task = el('span', 'cmbagent-run-task', run.task);
    task.title = `${run.task}\n${run.id}`;
    const row = el('div', 'cmbagent-run-actions');
    row.append(el('span', 'cmbagent-cost', usd(run.cost_usd)));
    if (this.actions) {
      row.append(button('DAG', 'cmbagent-open-run', () => this.actions!.openRun(run.id)));
    }
    // Pause while a process runs it; resume once it stopped with steps left (a run
    // waiting on an approval goes on when the approval is answered, not resumed).
    if (inSet(RUNNING_RUN_STATES, run.status) && !run.pause_requested) {
      row.append(button('Pause', 'cmbagent-pause', () => void this.act(item, () => api.pause(run.session_id, run.id))));
    }
    if (inSet(STOPPED_RUN_STATES, run.status)) {
      row.append(button('Resume', 'cmbagent-resume', () => void this.act(item, () => api.resume(run.session_id, run.id))));
    }
    item.append(status, task, row);
    return item;
  }

  private async act(item: HTMLElement, call: () => Promise<unknown>): Promise<void> {
    item.querySelectorAll('button').forEach(b => (b.disabled = true));
    try {
      await call();
    } catch (reason) {
      item.title = reason instanceof ApiError ? reason.message : String(reason);
      item.querySelectorAll('button').forEach(b => (b.disabled = false));
    }
  }
}
