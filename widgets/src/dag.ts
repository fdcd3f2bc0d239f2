// DAG widget: lays out the plan graph (trait `graph`) with dagre, draws it as
// SVG coloured by node status and reports clicks to Python as
// {type: "node_click", id}.
import dagre, {
  type EdgeLabel,
  type Graph as LayoutGraph,
  type GraphLabel,
  type NodeLabel,
} from '@dagrejs/dagre';
import { Cleanup, RenderProps, element } from './_anywidget';

export type NodeStatus =
  | 'pending'
  | 'running'
  | 'completed'
  | 'failed'
  | 'paused'
  | 'waiting_approval';

export interface GraphNode {
  id: string;
  label?: string;
  status?: NodeStatus | string;
}

export interface GraphEdge {
  source: string;
  target: string;
}

export interface Graph {
  nodes?: GraphNode[];
  edges?: GraphEdge[];
}

interface DagState {
  graph: Graph;
}

export const STATUS_COLORS: Record<NodeStatus, string> = {
  pending: '#9e9e9e',
  running: '#1e88e5',
  completed: '#43a047',
  failed: '#e53935',
  paused: '#ffb300',
  waiting_approval: '#8e24aa',
};

const SVG_NS = 'http://www.w3.org/2000/svg';
const NODE_HEIGHT = 36;
const CHAR_WIDTH = 7;
const MARGIN = 12;

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

export function statusColor(status: string | undefined): string {
  return STATUS_COLORS[(status ?? 'pending') as NodeStatus] ?? STATUS_COLORS.pending;
}

export type Layout = LayoutGraph<GraphLabel, NodeLabel, EdgeLabel>;

export function layout(graph: Graph): Layout {
  const g: Layout = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: 'TB', nodesep: 24, ranksep: 36, marginx: MARGIN, marginy: MARGIN });
  g.setDefaultEdgeLabel(() => ({}));
  for (const node of graph.nodes ?? []) {
    const label = node.label ?? node.id;
    g.setNode(node.id, {
      label,
      width: Math.max(80, label.length * CHAR_WIDTH + 24),
      height: NODE_HEIGHT,
    });
  }
  for (const edge of graph.edges ?? []) {
    if (g.hasNode(edge.source) && g.hasNode(edge.target)) {
      g.setEdge(edge.source, edge.target);
    }
  }
  dagre.layout(g);
  return g;
}

export function draw(
  container: HTMLElement,
  graph: Graph,
  onClick: (id: string) => void
): void {
  container.replaceChildren();
  const nodes = graph.nodes ?? [];
  if (nodes.length === 0) {
    container.appendChild(element('div', 'cmbagent-dag-empty', 'No plan yet.'));
    return;
  }
  const g = layout(graph);
  const { width = 0, height = 0 } = g.graph();
  const root = svg('svg', {
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    class: 'cmbagent-dag',
  });
  const defs = svg('defs');
  const marker = svg('marker', {
    id: 'cmbagent-dag-arrow',
    viewBox: '0 0 10 10',
    refX: 10,
    refY: 5,
    markerWidth: 6,
    markerHeight: 6,
    orient: 'auto-start-reverse',
  });
  marker.appendChild(svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: '#616161' }));
  defs.appendChild(marker);
  root.appendChild(defs);

  for (const e of g.edges()) {
    const points = g.edge(e).points ?? [];
    const d = points.map((p, i) => `${i === 0 ? 'M' : 'L'} ${p.x} ${p.y}`).join(' ');
    root.appendChild(
      svg('path', {
        d,
        fill: 'none',
        stroke: '#616161',
        'stroke-width': 1.5,
        'marker-end': 'url(#cmbagent-dag-arrow)',
        class: 'cmbagent-dag-edge',
      })
    );
  }

  for (const node of nodes) {
    const placed = g.node(node.id);
    if (!placed) {
      continue;
    }
    const x = (placed.x ?? 0) - placed.width / 2;
    const y = (placed.y ?? 0) - placed.height / 2;
    const group = svg('g', {
      class: 'cmbagent-dag-node',
      transform: `translate(${x}, ${y})`,
      'data-id': node.id,
      'data-status': node.status ?? 'pending',
      cursor: 'pointer',
    });
    group.appendChild(
      svg('rect', {
        width: placed.width,
        height: placed.height,
        rx: 6,
        ry: 6,
        fill: statusColor(node.status),
        stroke: '#424242',
      })
    );
    const text = svg('text', {
      x: placed.width / 2,
      y: placed.height / 2,
      'text-anchor': 'middle',
      'dominant-baseline': 'central',
      fill: '#ffffff',
      'font-size': 12,
      'font-family': 'sans-serif',
    });
    text.textContent = placed.label ?? node.id;
    group.appendChild(text);
    const title = svg('title');
    title.textContent = `${node.id}: ${node.status ?? 'pending'}`;
    group.appendChild(title);
    group.addEventListener('click', () => onClick(node.id));
    root.appendChild(group);
  }
  container.appendChild(root);
}

export function render({ model, el }: RenderProps<DagState>): Cleanup {
  const container = element('div', 'cmbagent-dag-container');
  container.style.overflow = 'auto';
  el.appendChild(container);
  const onClick = (id: string) => model.send({ type: 'node_click', id });
  const update = () => draw(container, model.get('graph') ?? {}, onClick);
  update();
  model.on('change:graph', update);
  return () => model.off('change:graph', update);
}

export default { render };
