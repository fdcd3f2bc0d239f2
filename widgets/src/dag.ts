// DAG widget: the run's graph (trait `graph`, what run_graph sends) drawn by the
// GraphRenderer of @cmbagent-jupyter/core, the one the sidebar's run view uses too.
// Around it: pan by dragging, zoom with the buttons or Ctrl+wheel, "Fit" shows everything.
// A click sends {type: "node_click", id}; Python answers with the node's detail
// ({type: "detail", id, detail}: output, attempts, code, figures as data URLs,
// cost), shown below the graph. A failed step's detail has a feedback box that
// sends {type: "retry", step_id, feedback}.
import { GraphRenderer, type RunGraph } from '@cmbagent-jupyter/core';
import { Cleanup, RenderProps, element } from './_anywidget';
import {
  Notice,
  badge,
  button,
  formatInt,
  formatTime,
  formatUsd,
  isMessage,
  showNotice,
  statusColor,
  styleElement,
  truncate,
} from './_common';

interface DagState {
  /** `run_graph(...)` as JSON; `{}` before the run has one. */
  graph: RunGraph;
  selected: string;
  height: number;
}

export interface Figure {
  name: string;
  data_url?: string;
  error?: string;
}

export interface Attempt {
  attempt: number;
  status: string;
  error_type?: string | null;
  error?: string | null;
  feedback?: string | null;
  cost_usd?: number;
  started_at?: string | null;
}

export interface CodeFile {
  name: string;
  text: string;
}

export interface NodeDetail {
  id: string;
  kind?: string;
  title?: string;
  status?: string | null;
  agent?: string | null;
  number?: number | null;
  description?: string;
  started_at?: string | null;
  completed_at?: string | null;
  error?: string | null;
  output_html?: string;
  output_text?: string;
  code?: CodeFile[];
  figures?: Figure[];
  files?: string[];
  attempts?: Attempt[];
  cost?: { cost_usd: number; tokens: number; calls: number; by_model?: { model: string; cost_usd: number; tokens: number }[] };
  can_retry?: boolean;
  attempt_count?: number;
  plan?: { number: number; agent: string; text: string }[];
}

interface DetailMessage {
  type: 'detail';
  id: string;
  detail: NodeDetail | null;
}

const MIN_SCALE = 0.01;
const MAX_SCALE = 3;
const READABLE_SCALE = 0.6;
const ATTENTION = ['running', 'waiting_approval', 'failed'];

const STYLE = `
.cmbagent-dag-toolbar { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; margin-bottom: 4px; }
.cmbagent-dag-legend { display: flex; flex-wrap: wrap; gap: 8px; margin-left: auto; font-size: 11px; }
.cmbagent-dag-legend span.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px;
  margin-right: 3px; vertical-align: middle; }
.cmbagent-dag-viewport { position: relative; overflow: hidden; border: 1px solid var(--jp-border-color2, #ddd);
  border-radius: 4px; background: var(--jp-layout-color0, #fff); cursor: grab; user-select: none; }
.cmbagent-dag-viewport.dragging { cursor: grabbing; }
.cmbagent-dag-viewport svg { display: block; width: 100%; height: 100%; }
.cmbagent-dag-empty { padding: 12px; }
.cmbagent-dag-detail { margin-top: 6px; border: 1px solid var(--jp-border-color2, #ddd); border-radius: 4px;
  padding: 6px 10px; }
.cmbagent-dag-detail h4 { margin: 8px 0 4px; font-size: 13px; }
.cmbagent-dag-detail-head { display: flex; gap: 8px; align-items: center; }
.cmbagent-dag-detail-head .title { font-weight: 600; font-size: 14px; }
.cmbagent-dag-detail-head .cmbagent-btn { margin-left: auto; }
.cmbagent-dag-figures { display: flex; flex-wrap: wrap; gap: 8px; }
.cmbagent-dag-figures figure { margin: 0; max-width: 100%; }
.cmbagent-dag-figures img { max-width: 520px; width: 100%; border: 1px solid var(--jp-border-color3, #eee); }
.cmbagent-dag-figures figcaption { font-size: 11px; }
.cmbagent-dag-output { max-height: 420px; overflow: auto; }
.cmbagent-dag-retry { margin-top: 8px; padding: 6px; border-left: 3px solid #e53935;
  background: var(--jp-layout-color2, #fafafa); }
.cmbagent-dag-retry .cmbagent-btn { margin-top: 4px; }
`;

const LEGEND = ['pending', 'running', 'waiting_approval', 'completed', 'failed', 'paused', 'skipped'];

interface View {
  k: number;
  x: number;
  y: number;
}

class DagView {
  private readonly root: HTMLElement;
  private readonly toolbar: HTMLElement;
  private readonly legend: HTMLElement;
  private readonly viewport: HTMLElement;
  private readonly detailHost: HTMLElement;
  private readonly renderer = new GraphRenderer({ onNodeClick: (id) => this.select(id) });
  private view: View = { k: 1, x: 0, y: 0 };
  private detail: NodeDetail | null = null;
  private noticeHost: HTMLElement | null = null;

  constructor(
    el: HTMLElement,
    private readonly model: RenderProps<DagState>['model']
  ) {
    this.root = element('div', 'cmbagent-w cmbagent-dag-widget');
    this.toolbar = element('div', 'cmbagent-dag-toolbar');
    this.legend = element('div', 'cmbagent-dag-legend');
    this.viewport = element('div', 'cmbagent-dag-viewport');
    this.detailHost = element('div', 'cmbagent-dag-detail-host');
    this.toolbar.append(
      button('Fit', 'cmbagent-dag-fit', () => this.fit()),
      button('+', 'cmbagent-dag-zoom-in', () => this.zoomBy(1.25)),
      button('−', 'cmbagent-dag-zoom-out', () => this.zoomBy(0.8)),
      this.jumpInput(),
      this.legend
    );
    this.root.append(styleElement(STYLE), this.toolbar, this.viewport, this.detailHost);
    el.appendChild(this.root);
    this.bindPanZoom();
  }

  private graph(): RunGraph {
    return this.model.get('graph') ?? {};
  }

  private get size(): { width: number; height: number } {
    return { width: this.renderer.width, height: this.renderer.height };
  }

  update(): void {
    const graph = this.graph();
    const nodes = graph.nodes ?? [];
    if (nodes.length === 0) {
      this.viewport.style.height = 'auto';
      this.viewport.replaceChildren(element('div', 'cmbagent-dag-empty cmbagent-muted', 'No plan yet.'));
      this.renderer.render(graph);
    } else {
      const relaid = this.renderer.render(graph);
      if (relaid || this.renderer.svg.parentNode !== this.viewport) {
        const fitted = Math.max(160, Math.min(Number(this.model.get('height')) || 460, this.renderer.height + 8));
        this.viewport.style.height = `${fitted}px`;
        this.viewport.replaceChildren(this.renderer.svg);
        this.initialView();
      }
    }
    this.drawLegend(graph);
    this.markSelected();
  }

  private drawLegend(graph: RunGraph): void {
    const counts = new Map<string, number>();
    for (const n of graph.nodes ?? []) {
      if (n.kind === 'planning' || n.kind === 'terminator') {
        continue;
      }
      const s = n.status || 'pending';
      counts.set(s, (counts.get(s) ?? 0) + 1);
    }
    this.legend.replaceChildren();
    for (const status of LEGEND) {
      const item = element('span', 'cmbagent-dag-legend-item');
      item.dataset.status = status;
      const swatch = element('span', 'swatch');
      swatch.style.background = statusColor(status);
      item.append(swatch, `${status.replace('_', ' ')} ${counts.get(status) ?? 0}`);
      this.legend.appendChild(item);
    }
  }

  private markSelected(): void {
    this.renderer.select(this.model.get('selected') || null);
  }

  // -- pan and zoom --------------------------------------------------------------

  private applyView(): void {
    if (!this.renderer.nodeCount) {
      return;
    }
    const { k, x, y } = this.view;
    this.renderer.scene.setAttribute('transform', `translate(${x}, ${y}) scale(${k})`);
    this.renderer.svg.setAttribute('data-scale', k.toFixed(3));
    this.renderer.setLabelsShown(k >= 0.35);
  }

  fit(): void {
    const width = this.viewport.clientWidth || 600;
    const height = this.viewport.clientHeight || 400;
    const { width: gw, height: gh } = this.size;
    if (!gw || !gh) {
      return;
    }
    const k = Math.max(MIN_SCALE, Math.min(1, width / gw, height / gh));
    this.view = { k, x: (width - gw * k) / 2, y: Math.max(0, (height - gh * k) / 2) };
    this.applyView();
  }

  /**
   * Fit a graph that is legible whole; otherwise keep labels readable (scale >= 0.6)
   * and show the first node that needs attention (running, waiting, failed).
   */
  initialView(): void {
    const width = this.viewport.clientWidth || 600;
    const height = this.viewport.clientHeight || 400;
    const { width: gw, height: gh } = this.size;
    if (!gw || !gh) {
      return;
    }
    const k = Math.min(1, Math.max(READABLE_SCALE, width / gw));
    if (Math.min(1, width / gw, height / gh) >= READABLE_SCALE) {
      this.fit();
      return;
    }
    const graph = this.graph();
    const focus = (graph.nodes ?? []).find((n) => ATTENTION.includes(n.status ?? ''));
    const at = focus ? this.renderer.position(focus.id) : undefined;
    const x = gw * k <= width ? (width - gw * k) / 2 : at ? width / 2 - at.x * k : 0;
    const y = at ? Math.min(0, Math.max(height - gh * k, height / 3 - at.y * k)) : 0;
    this.view = { k, x, y };
    this.applyView();
  }

  /** A "step #" box: Enter centres that step at a readable scale and selects it. */
  private jumpInput(): HTMLInputElement {
    const input = element('input', 'cmbagent-dag-jump');
    input.type = 'number';
    input.min = '1';
    input.placeholder = 'step #';
    input.title = 'Go to step number';
    input.style.width = '6em';
    input.addEventListener('keydown', (ev) => {
      if (ev.key !== 'Enter') {
        return;
      }
      const wanted = Number(input.value);
      const node = (this.graph().nodes ?? []).find((n) => n.number === wanted);
      if (node) {
        this.focusNode(node.id);
        this.select(node.id);
      }
    });
    return input;
  }

  focusNode(id: string): void {
    const at = this.renderer.position(id);
    if (!at) {
      return;
    }
    const width = this.viewport.clientWidth || 600;
    const height = this.viewport.clientHeight || 400;
    const k = Math.max(this.view.k, 1);
    this.view = { k, x: width / 2 - at.x * k, y: height / 2 - at.y * k };
    this.applyView();
  }

  zoomBy(factor: number, cx?: number, cy?: number): void {
    const width = this.viewport.clientWidth || 600;
    const height = this.viewport.clientHeight || 400;
    const px = cx ?? width / 2;
    const py = cy ?? height / 2;
    const k = Math.max(MIN_SCALE, Math.min(MAX_SCALE, this.view.k * factor));
    const ratio = k / this.view.k;
    this.view = { k, x: px - (px - this.view.x) * ratio, y: py - (py - this.view.y) * ratio };
    this.applyView();
  }

  private bindPanZoom(): void {
    let drag: { x: number; y: number; vx: number; vy: number } | null = null;
    this.viewport.addEventListener('pointerdown', (ev) => {
      if ((ev.target as Element).closest('.cmbagent-dag-node')) {
        return;
      }
      drag = { x: ev.clientX, y: ev.clientY, vx: this.view.x, vy: this.view.y };
      this.viewport.classList.add('dragging');
      this.viewport.setPointerCapture?.(ev.pointerId);
    });
    this.viewport.addEventListener('pointermove', (ev) => {
      if (!drag) {
        return;
      }
      this.view = { ...this.view, x: drag.vx + ev.clientX - drag.x, y: drag.vy + ev.clientY - drag.y };
      this.applyView();
    });
    const end = () => {
      drag = null;
      this.viewport.classList.remove('dragging');
    };
    this.viewport.addEventListener('pointerup', end);
    this.viewport.addEventListener('pointercancel', end);
    this.viewport.addEventListener(
      'wheel',
      (ev) => {
        const rect = this.viewport.getBoundingClientRect();
        if (ev.ctrlKey || ev.metaKey) {
          ev.preventDefault();
          this.zoomBy(ev.deltaY < 0 ? 1.15 : 1 / 1.15, ev.clientX - rect.left, ev.clientY - rect.top);
          return;
        }
        // Plain wheel pans a graph larger than the view; otherwise the page scrolls.
        const { k } = this.view;
        const overflowY = this.size.height * k > rect.height + 1;
        const overflowX = this.size.width * k > rect.width + 1;
        if (!overflowX && !overflowY) {
          return;
        }
        ev.preventDefault();
        this.view = {
          ...this.view,
          x: overflowX ? this.view.x - ev.deltaX : this.view.x,
          y: overflowY ? this.view.y - ev.deltaY : this.view.y,
        };
        this.applyView();
      },
      { passive: false }
    );
  }

  // -- node detail -----------------------------------------------------------------

  select(id: string): void {
    this.model.send({ type: 'node_click', id });
  }

  onMessage(msg: unknown): void {
    if (isMessage<DetailMessage>(msg, 'detail')) {
      this.detail = msg.detail;
      this.renderDetail();
    } else if (isMessage<Notice>(msg, 'notice') && this.noticeHost) {
      showNotice(this.noticeHost, msg.text, msg.level);
    }
  }

  /** The detail shown belongs to the selected node; a cleared selection hides it. */
  onSelected(): void {
    // Python answers a selection with its detail; until then, hide the old one.
    this.markSelected();
    this.renderDetail();
  }

  private renderDetail(): void {
    this.detailHost.replaceChildren();
    this.noticeHost = null;
    const d = this.detail;
    if (!d || d.id !== this.model.get('selected')) {
      return;
    }
    const box = element('div', 'cmbagent-dag-detail');
    box.dataset.id = d.id;
    const head = element('div', 'cmbagent-dag-detail-head');
    head.appendChild(element('span', 'title', d.title ?? d.id));
    if (d.status) {
      head.appendChild(badge(d.status));
    }
    if (d.agent) {
      head.appendChild(element('span', 'cmbagent-muted', d.agent));
    }
    head.appendChild(
      button('Close', 'cmbagent-dag-detail-close', () => {
        this.model.set('selected', '');
        this.model.save_changes();
      })
    );
    box.appendChild(head);
    const times = [
      d.attempt_count ? `attempt ${d.attempt_count}` : '',
      d.started_at && `started ${formatTime(d.started_at)}`,
      d.completed_at && `finished ${formatTime(d.completed_at)}`,
    ]
      .filter(Boolean)
      .join(' · ');
    if (times) {
      box.appendChild(element('div', 'cmbagent-muted', times));
    }
    if (d.description) {
      box.appendChild(element('div', 'cmbagent-dag-description', d.description));
    }
    if (d.error) {
      const err = element('pre', 'cmbagent-dag-error', d.error);
      err.style.color = '#b71c1c';
      box.appendChild(err);
    }
    if (d.plan && d.plan.length) {
      box.appendChild(element('h4', undefined, 'Plan'));
      const list = element('ol', 'cmbagent-dag-plan');
      for (const step of d.plan) {
        const li = element('li', undefined, `${step.text} `);
        li.appendChild(element('span', 'cmbagent-muted', `(${step.agent})`));
        list.appendChild(li);
      }
      box.appendChild(list);
    }
    if (d.output_html || d.output_text) {
      box.appendChild(element('h4', undefined, 'Output'));
      const out = element('div', 'cmbagent-dag-output');
      if (d.output_html) {
        // Rendered by Python with raw HTML disabled (markdown-it), so this is markup we made.
        out.innerHTML = d.output_html;
      } else {
        out.appendChild(element('pre', undefined, d.output_text));
      }
      box.appendChild(out);
    }
    if (d.figures && d.figures.length) {
      box.appendChild(element('h4', undefined, `Figures (${d.figures.length})`));
      const figs = element('div', 'cmbagent-dag-figures');
      for (const f of d.figures) {
        const fig = element('figure');
        if (f.data_url) {
          const img = element('img', 'cmbagent-dag-figure');
          img.src = f.data_url;
          img.alt = f.name;
          fig.appendChild(img);
        } else {
          fig.appendChild(element('div', 'cmbagent-muted', f.error ?? 'not shown'));
        }
        fig.appendChild(element('figcaption', 'cmbagent-muted', f.name));
        figs.appendChild(fig);
      }
      box.appendChild(figs);
    }
    for (const code of d.code ?? []) {
      box.appendChild(element('h4', undefined, `Code: ${code.name}`));
      box.appendChild(element('pre', 'cmbagent-dag-code', code.text));
    }
    if (d.files && d.files.length) {
      box.appendChild(element('h4', undefined, 'Files'));
      box.appendChild(element('div', 'cmbagent-muted', d.files.join(', ')));
    }
    if (d.attempts && d.attempts.length) {
      box.appendChild(element('h4', undefined, `Attempts (${d.attempts.length})`));
      const table = element('table', 'cmbagent-dag-attempts');
      const header = element('tr');
      for (const h of ['#', 'status', 'error', 'feedback', 'cost']) {
        header.appendChild(element('th', undefined, h));
      }
      table.appendChild(header);
      for (const a of d.attempts) {
        const row = element('tr');
        row.dataset.status = a.status;
        row.appendChild(element('td', undefined, String(a.attempt)));
        const st = element('td');
        st.appendChild(badge(a.status));
        row.appendChild(st);
        row.appendChild(element('td', undefined, truncate([a.error_type, a.error].filter(Boolean).join(': '), 300)));
        row.appendChild(element('td', undefined, a.feedback ?? ''));
        row.appendChild(element('td', undefined, formatUsd(a.cost_usd)));
        table.appendChild(row);
      }
      box.appendChild(table);
    }
    if (d.cost && d.cost.calls > 0) {
      box.appendChild(element('h4', undefined, 'Cost'));
      const parts = (d.cost.by_model ?? []).map((m) => `${m.model}: ${formatUsd(m.cost_usd)} (${formatInt(m.tokens)} tokens)`);
      box.appendChild(
        element(
          'div',
          'cmbagent-dag-cost',
          `${formatUsd(d.cost.cost_usd)} · ${formatInt(d.cost.tokens)} tokens · ${d.cost.calls} calls` +
            (parts.length ? ` — ${parts.join('; ')}` : '')
        )
      );
    }
    if (d.can_retry) {
      const retry = element('div', 'cmbagent-dag-retry');
      retry.appendChild(element('div', undefined, 'This step failed. Tell the agent what to do differently on the next attempt:'));
      const text = element('textarea', 'cmbagent-dag-retry-feedback');
      text.placeholder = 'e.g. use numpy.fft instead of healpy; save the plot as PNG';
      const send = button('Retry with feedback', 'warn cmbagent-dag-retry-send', () => {
        const feedback = text.value.trim();
        if (!feedback) {
          showNotice(notices, 'Write some feedback first.', 'error');
          return;
        }
        send.disabled = true;
        this.model.send({ type: 'retry', step_id: d.id, feedback });
      });
      retry.append(text, send);
      box.appendChild(retry);
    }
    const notices = element('div', 'cmbagent-dag-notices');
    this.noticeHost = notices;
    box.appendChild(notices);
    this.detailHost.appendChild(box);
  }
}

export function render({ model, el }: RenderProps<DagState>): Cleanup {
  const view = new DagView(el, model);
  const update = () => view.update();
  const onSelected = () => view.onSelected();
  const onMessage = (msg: unknown) => view.onMessage(msg);
  update();
  // The element is measured once it is attached: fit again on the next frame.
  requestAnimationFrame(() => view.initialView());
  if (model.get('selected')) {
    view.select(model.get('selected'));
  }
  model.on('change:graph', update);
  model.on('change:selected', onSelected);
  model.on('msg:custom', onMessage);
  return () => {
    model.off('change:graph', update);
    model.off('change:selected', onSelected);
    model.off('msg:custom', onMessage);
  };
}

export default { render };
