// The one drawing of a run's graph (what cmbagent_jupyter.core.graph.run_graph sends):
// laid out top to bottom with dagre and drawn as SVG, each node filled by its status,
// each edge solid green once its source has completed and dashed grey before. The
// notebook's DAG widget puts pan, zoom and a detail panel around it; the sidebar's run
// view shows it at its own size in a scrolling panel.
import dagre, { type EdgeLabel, type Graph as LayoutGraph, type GraphLabel, type NodeLabel } from '@dagrejs/dagre';
import type { GraphNode, RunGraph } from './schema.js';
import { svgElement, truncate } from './dom.js';
import { statusColor, statusTextColor } from './status.js';

export const NODE_WIDTH = 190;
export const NODE_HEIGHT = 40;
const MARGIN = 16;
const LABEL_CHARS = 26;
const MET = '#2e7d32';
const UNMET = '#9e9e9e';
const SELECTED = '#1976d2';
const OUTLINE = '#424242';

export type Layout = LayoutGraph<GraphLabel, NodeLabel, EdgeLabel>;

export interface Point {
  x: number;
  y: number;
}

/** A node's words in its box: "3. " before a step's label, cut to fit. */
export function nodeText(node: GraphNode): string {
  const prefix = node.number ? `${node.number}. ` : '';
  return truncate(prefix + node.label.replace(/\s+/g, ' '), LABEL_CHARS);
}

/** A node's tooltip: its whole label, its agent and its status. */
export function nodeTitle(node: GraphNode): string {
  const who = node.agent ? ` (${node.agent})` : '';
  const prefix = node.number ? `${node.number}. ` : '';
  return `${prefix}${node.label}${who}: ${(node.status || 'pending').replace(/_/g, ' ')}`;
}

export function layoutGraph(graph: RunGraph): Layout {
  const g: Layout = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: 'TB', nodesep: 20, ranksep: 34, marginx: MARGIN, marginy: MARGIN });
  g.setDefaultEdgeLabel(() => ({}));
  for (const node of graph.nodes ?? []) {
    g.setNode(node.id, { width: NODE_WIDTH, height: NODE_HEIGHT });
  }
  for (const edge of graph.edges ?? []) {
    if (g.hasNode(edge.source) && g.hasNode(edge.target)) {
      g.setEdge(edge.source, edge.target);
    }
  }
  dagre.layout(g);
  return g;
}

/** What decides the layout: node ids and edges (a status only recolours). */
export function structureKey(graph: RunGraph): string {
  const nodes = (graph.nodes ?? []).map((n) => n.id).join('\u0001');
  const edges = (graph.edges ?? []).map((e) => `${e.source}>${e.target}`).join('\u0001');
  return `${nodes}\u0002${edges}`;
}

export interface GraphRendererOptions {
  /** Called with the node's id (a step's id, "planning" or "end") when it is clicked. */
  onNodeClick?: (id: string, node: GraphNode) => void;
  /**
   * Give the SVG the graph's own size, for a host that scrolls. Without it the SVG
   * fills its host and the caller pans and zooms by transforming `scene`.
   */
  naturalSize?: boolean;
}

interface DrawnNode {
  group: SVGGElement;
  node: GraphNode;
}

// Marker ids are document-wide: each renderer gets its own, so that removing one view
// never takes the arrowheads of another.
let renderers = 0;

export class GraphRenderer {
  /** The root element to put in the page. */
  readonly svg: SVGSVGElement;
  /** Holds the nodes and edges; pan and zoom transform it. */
  readonly scene: SVGGElement;
  /** The laid-out graph's size, margins included. */
  width = 0;
  height = 0;
  private readonly markers: { met: string; unmet: string };
  private structure: string | null = null;
  private readonly drawn = new Map<string, DrawnNode>();
  private readonly positions = new Map<string, Point>();
  private edges: { path: SVGPathElement; source: string }[] = [];
  private selected: string | null = null;
  private labelsShown = true;

  constructor(private readonly options: GraphRendererOptions = {}) {
    renderers += 1;
    this.markers = { met: `cmbagent-arrow-met-${renderers}`, unmet: `cmbagent-arrow-${renderers}` };
    this.svg = svgElement('svg', { class: 'cmbagent-dag', 'data-nodes': 0 });
    const defs = svgElement('defs');
    for (const [id, colour] of [
      [this.markers.met, MET],
      [this.markers.unmet, UNMET],
    ]) {
      const marker = svgElement('marker', {
        id,
        viewBox: '0 0 10 10',
        refX: 10,
        refY: 5,
        markerWidth: 6,
        markerHeight: 6,
        orient: 'auto-start-reverse',
      });
      marker.appendChild(svgElement('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: colour }));
      defs.appendChild(marker);
    }
    this.scene = svgElement('g', { class: 'cmbagent-dag-scene' });
    this.svg.append(defs, this.scene);
  }

  get nodeCount(): number {
    return this.drawn.size;
  }

  /** The centre of a node in scene coordinates. */
  position(id: string): Point | undefined {
    return this.positions.get(id);
  }

  /**
   * Show `graph`. It is laid out again only when its nodes or edges changed, so a
   * status change keeps the positions (and the caller's pan and zoom). Returns
   * whether it was laid out again.
   */
  render(graph: RunGraph): boolean {
    const key = structureKey(graph);
    const relayout = key !== this.structure;
    if (relayout) {
      this.structure = key;
      this.draw(graph);
    }
    this.refresh(graph);
    return relayout;
  }

  /** Outline one node as selected (null: none). */
  select(id: string | null): void {
    this.selected = id;
    for (const [nodeId, { group }] of this.drawn) {
      const on = nodeId === id;
      group.classList.toggle('selected', on);
      const rect = group.querySelector('rect');
      rect?.setAttribute('stroke', on ? SELECTED : OUTLINE);
      rect?.setAttribute('stroke-width', on ? '3' : '1');
    }
  }

  /** Hide the words when zoomed out too far to read them. */
  setLabelsShown(shown: boolean): void {
    if (shown === this.labelsShown) {
      return;
    }
    this.labelsShown = shown;
    this.scene.classList.toggle('cmbagent-dag-compact', !shown);
    for (const text of Array.from(this.scene.querySelectorAll('text'))) {
      text.style.display = shown ? '' : 'none';
    }
  }

  private draw(graph: RunGraph): void {
    this.scene.replaceChildren();
    this.drawn.clear();
    this.positions.clear();
    this.edges = [];
    const nodes = graph.nodes ?? [];
    const g = layoutGraph(graph);
    const { width = 0, height = 0 } = nodes.length ? g.graph() : {};
    this.width = width;
    this.height = height;
    this.svg.setAttribute('data-nodes', String(nodes.length));
    if (this.options.naturalSize) {
      this.svg.setAttribute('width', String(width));
      this.svg.setAttribute('height', String(height));
      this.svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
    }
    for (const e of g.edges()) {
      const points = g.edge(e).points ?? [];
      const d = points.map((p, i) => `${i === 0 ? 'M' : 'L'} ${p.x} ${p.y}`).join(' ');
      const path = svgElement('path', { d, fill: 'none', class: 'cmbagent-dag-edge', 'data-source': e.v, 'data-target': e.w });
      this.scene.appendChild(path);
      this.edges.push({ path, source: e.v });
    }
    for (const node of nodes) {
      const placed = g.node(node.id);
      if (!placed) {
        continue;
      }
      const cx = placed.x ?? 0;
      const cy = placed.y ?? 0;
      this.positions.set(node.id, { x: cx, y: cy });
      const group = this.nodeGroup(node, cx - placed.width / 2, cy - placed.height / 2);
      this.scene.appendChild(group);
      this.drawn.set(node.id, { group, node });
    }
    this.select(this.selected);
  }

  private nodeGroup(node: GraphNode, x: number, y: number): SVGGElement {
    const group = svgElement('g', {
      class: 'cmbagent-dag-node',
      transform: `translate(${x}, ${y})`,
      'data-node': node.id,
      'data-kind': node.kind,
    });
    if (node.key) {
      group.dataset.key = node.key;
    }
    // Planning and the end are rounded like terminals of a flow chart; steps are boxes.
    const round = node.kind === 'agent' ? 6 : NODE_HEIGHT / 2;
    group.appendChild(
      svgElement('rect', { width: NODE_WIDTH, height: NODE_HEIGHT, rx: round, ry: round, stroke: OUTLINE, 'stroke-width': 1 })
    );
    const text = (cls: string, dy: number, size: number) =>
      svgElement('text', {
        x: NODE_WIDTH / 2,
        y: NODE_HEIGHT / 2 + dy,
        'text-anchor': 'middle',
        'dominant-baseline': 'central',
        'font-size': size,
        'font-family': 'sans-serif',
        class: cls,
      });
    group.appendChild(text('cmbagent-dag-label', node.agent ? -6 : 0, 12));
    if (node.agent) {
      group.appendChild(text('cmbagent-dag-agent', 9, 10));
    }
    if (!this.labelsShown) {
      group.querySelectorAll('text').forEach((t) => (t.style.display = 'none'));
    }
    group.appendChild(svgElement('title'));
    if (this.options.onNodeClick) {
      group.style.cursor = 'pointer';
      group.addEventListener('click', (ev) => {
        ev.stopPropagation();
        const drawn = this.drawn.get(node.id);
        this.options.onNodeClick?.(node.id, drawn ? drawn.node : node);
      });
    }
    return group;
  }

  /** Statuses, words and edge colours from `graph`, whose structure is the one drawn. */
  private refresh(graph: RunGraph): void {
    const status = new Map<string, string>();
    for (const node of graph.nodes ?? []) {
      const s = node.status || 'pending';
      status.set(node.id, s);
      const drawn = this.drawn.get(node.id);
      if (!drawn) {
        continue;
      }
      drawn.node = node;
      const { group } = drawn;
      group.dataset.status = s;
      group.querySelector('rect')?.setAttribute('fill', statusColor(s));
      for (const t of Array.from(group.querySelectorAll('text'))) {
        t.setAttribute('fill', statusTextColor(s));
      }
      const label = group.querySelector('.cmbagent-dag-label');
      if (label) {
        label.textContent = nodeText(node);
      }
      const agent = group.querySelector('.cmbagent-dag-agent');
      if (agent) {
        agent.textContent = node.agent ?? '';
      }
      const title = group.querySelector('title');
      if (title) {
        title.textContent = nodeTitle(node);
      }
    }
    for (const { path, source } of this.edges) {
      const met = status.get(source) === 'completed';
      path.setAttribute('stroke', met ? MET : UNMET);
      path.setAttribute('stroke-width', met ? '1.8' : '1.3');
      path.setAttribute('stroke-dasharray', met ? '' : '4 3');
      path.setAttribute('marker-end', `url(#${met ? this.markers.met : this.markers.unmet})`);
      path.dataset.met = String(met);
    }
  }
}
