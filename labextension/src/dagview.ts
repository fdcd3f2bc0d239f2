// A run's DAG in the main area: laid out with dagre, drawn as SVG coloured by
// step status, kept current by its own event stream (filtered to the run).
import { MainAreaWidget } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';
import dagre from '@dagrejs/dagre';
import { api, Dag, RunStatus, StoreEvent, StreamState } from './api';
import { EventConnection } from './events';

const SVG_NS = 'http://www.w3.org/2000/svg';
const NODE_WIDTH = 190;
const NODE_HEIGHT = 40;
const LABEL_CHARS = 28;

export const STATUS_COLORS: Record<string, string> = {
  pending: '#9e9e9e',
  running: '#1e88e5',
  completed: '#43a047',
  failed: '#e53935',
  paused: '#ffb300',
  waiting_approval: '#8e24aa',
  skipped: '#bdbdbd',
  cancelled: '#757575',
};

function svg<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | number> = {}
): SVGElementTagNameMap[K] {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    node.setAttribute(name, String(value));
  }
  return node;
}

function truncate(text: string, n: number): string {
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}

/** Draw `dag` into `host` (replacing what was there). */
export function renderDag(host: HTMLElement, dag: Dag): void {
  host.replaceChildren();
  if (!dag.nodes.length) {
    host.textContent = 'No plan yet.';
    return;
  }
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: 'TB', nodesep: 20, ranksep: 36, marginx: 12, marginy: 12 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const node of dag.nodes) {
    g.setNode(node.id, { width: NODE_WIDTH, height: NODE_HEIGHT });
  }
  for (const edge of dag.edges) {
    if (g.hasNode(edge.source) && g.hasNode(edge.target)) {
      g.setEdge(edge.source, edge.target);
    }
  }
  dagre.layout(g);
  const { width = 0, height = 0 } = g.graph();
  const root = svg('svg', { width, height, viewBox: `0 0 ${width} ${height}`, class: 'cmbagent-dag' });
  const marker = svg('marker', {
    id: 'cmbagent-arrow',
    viewBox: '0 0 10 10',
    refX: 10,
    refY: 5,
    markerWidth: 6,
    markerHeight: 6,
    orient: 'auto-start-reverse',
  });
  marker.appendChild(svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: '#888' }));
  const defs = svg('defs');
  defs.appendChild(marker);
  root.appendChild(defs);
  for (const e of g.edges()) {
    const points = g.edge(e).points ?? [];
    const d = points.map((p: { x: number; y: number }, i: number) => `${i ? 'L' : 'M'} ${p.x} ${p.y}`).join(' ');
    root.appendChild(svg('path', { d, class: 'cmbagent-dag-edge', 'marker-end': 'url(#cmbagent-arrow)' }));
  }
  for (const node of dag.nodes) {
    const box = g.node(node.id);
    const status = node.status ?? 'pending';
    const group = svg('g', {
      class: 'cmbagent-dag-node',
      'data-node': node.id,
      'data-status': status,
      transform: `translate(${box.x - NODE_WIDTH / 2}, ${box.y - NODE_HEIGHT / 2})`,
    });
    group.appendChild(
      svg('rect', {
        width: NODE_WIDTH,
        height: NODE_HEIGHT,
        rx: node.kind === 'agent' ? 6 : 20,
        fill: STATUS_COLORS[status] ?? STATUS_COLORS.pending,
      })
    );
    const label = svg('text', { x: NODE_WIDTH / 2, y: NODE_HEIGHT / 2 + 4, 'text-anchor': 'middle' });
    label.textContent = truncate(node.label, LABEL_CHARS);
    const title = svg('title');
    title.textContent = `${node.label} (${status})${node.description ? `\n${node.description}` : ''}`;
    group.append(title, label);
    root.appendChild(group);
  }
  host.appendChild(root);
}

const REFRESH_ON = /^(step\.|dag\.|workflow\.|approval\.)/;

/** The content of a main-area tab showing one run. */
export class RunDagPanel extends Widget {
  private readonly header: HTMLElement;
  private readonly graph: HTMLElement;
  private readonly stream: EventConnection;
  private sessionId: string | null = null;
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
    this.node.append(this.header, this.graph);
    this.stream = new EventConnection({ runId });
    this.stream.stateReceived.connect((_, state) => this.onState(state));
    this.stream.eventReceived.connect((_, ev) => this.onEvent(ev));
    this.stream.start();
  }

  dispose(): void {
    this.stream.dispose();
    super.dispose();
  }

  private onState(state: StreamState): void {
    if (state.run && state.dag) {
      this.sessionId = state.run.session_id;
      this.display({ run: state.run, steps: state.steps ?? [], approvals: [], dag: state.dag });
    }
  }

  private onEvent(ev: StoreEvent): void {
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

  private display(status: RunStatus): void {
    this.node.dataset.status = status.run.status;
    this.header.textContent = `${status.run.task} — ${status.run.status.replace('_', ' ')}`;
    renderDag(this.graph, status.dag);
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
