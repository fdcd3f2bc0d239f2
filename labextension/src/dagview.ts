// A run's DAG in the main area, drawn by the GraphRenderer of @cmbagent-jupyter/core
// (the notebook's DAG widget uses the same one) and kept current by its own event
// stream, filtered to the run. A click on a node shows what the run's status says
// about it below the graph.
import { MainAreaWidget } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';
import { GraphRenderer } from '@cmbagent-jupyter/core';
import { api, Event, RunStatusReply, Snapshot } from './api';
import { EventConnection } from './events';

const REFRESH_ON = /^(step\.|dag\.|workflow\.|approval\.)/;

/** The content of a main-area tab showing one run. */
export class RunDagPanel extends Widget {
  private readonly header: HTMLElement;
  private readonly graph: HTMLElement;
  private readonly detail: HTMLElement;
  private readonly renderer = new GraphRenderer({ naturalSize: true, onNodeClick: id => this.choose(id) });
  private readonly stream: EventConnection;
  private sessionId: string | null = null;
  private shown: RunStatusReply | null = null;
  private selected: string | null = null;
  private refreshing: Promise<void> | null = null;
  private stale = false;

  constructor(readonly runId: string) {
    super();
    this.addClass('cmbagent-dag-panel');
    this.header = document.createElement('div');
    this.header.className = 'cmbagent-dag-header';
    this.header.textContent = `Run ${runId}: connecting...`;
    this.graph = document.createElement('div');
    this.graph.className = 'cmbagent-dag-graph';
    this.detail = document.createElement('div');
    this.detail.className = 'cmbagent-dag-panel-detail';
    this.node.append(this.header, this.graph, this.detail);
    this.stream = new EventConnection({ runId });
    this.stream.stateReceived.connect((_, state) => this.onState(state));
    this.stream.eventReceived.connect((_, ev) => this.onEvent(ev));
    this.stream.start();
  }

  dispose(): void {
    this.stream.dispose();
    super.dispose();
  }

  private onState(state: Snapshot): void {
    if (state.run && state.dag) {
      this.sessionId = state.run.session_id;
      this.display({ run: state.run, steps: state.steps ?? [], approvals: [], dag: state.dag });
    }
  }

  private onEvent(ev: Event): void {
    if (ev.run_id === this.runId && REFRESH_ON.test(ev.type)) {
      void this.refresh();
    }
  }

  /** Re-read the run's status; events arriving meanwhile cause one more read, not many. */
  private async refresh(): Promise<void> {
    if (this.refreshing) {
      this.stale = true;
      return;
    }
    if (!this.sessionId) {
      return;
    }
    this.refreshing = api
      .runStatus(this.sessionId, this.runId)
      .then(status => this.display(status))
      .catch(reason => console.debug('cmbagent: run status unavailable', reason));
    await this.refreshing;
    this.refreshing = null;
    if (this.stale) {
      this.stale = false;
      await this.refresh();
    }
  }

  private display(status: RunStatusReply): void {
    const state = status.run.status ?? 'draft';
    this.shown = status;
    this.node.dataset.status = state;
    this.header.textContent = `${status.run.task} — ${state.replace('_', ' ')}`;
    if (!status.dag.nodes?.length) {
      this.graph.replaceChildren('No plan yet.');
      return;
    }
    this.renderer.render(status.dag);
    if (this.renderer.svg.parentNode !== this.graph) {
      this.graph.replaceChildren(this.renderer.svg);
    }
    this.showDetail();
  }

  /** A second click on the same node hides its detail. */
  private choose(id: string): void {
    this.selected = this.selected === id ? null : id;
    this.renderer.select(this.selected);
    this.showDetail();
  }

  private showDetail(): void {
    const node = this.shown?.dag.nodes?.find(n => n.id === this.selected);
    if (!node) {
      this.detail.replaceChildren();
      delete this.detail.dataset.selected;
      return;
    }
    const step = this.shown?.steps.find(s => s.id === node.id);
    const line = (cls: string, text: string) => {
      const el = document.createElement('div');
      el.className = cls;
      el.textContent = text;
      return el;
    };
    this.detail.dataset.selected = node.id;
    const head = step ? `${step.number}. ${step.key} (${step.agent})` : node.label;
    const parts = [line('cmbagent-dag-panel-detail-title', `${head}: ${(node.status || 'pending').replace(/_/g, ' ')}`)];
    if (step?.description) {
      parts.push(line('cmbagent-dag-panel-detail-description', step.description));
    }
    if (step?.error) {
      parts.push(line('cmbagent-dag-panel-detail-error', step.error));
    }
    this.detail.replaceChildren(...parts);
  }
}

export function createDagPanel(runId: string): MainAreaWidget<RunDagPanel> {
  const content = new RunDagPanel(runId);
  const panel = new MainAreaWidget({ content });
  panel.id = `cmbagent-run-${runId}`;
  panel.title.label = `Run ${runId.slice(0, 12)}`;
  panel.title.caption = `CMBAgent run ${runId}`;
  panel.title.closable = true;
  return panel;
}
