// Cost chart: totals, bars by agent / model / step, and cumulative cost over
// time, drawn as plain SVG from small aggregated traits computed in Python.
import type { CostBar } from '@cmbagent-jupyter/core';
import { Cleanup, RenderProps, element } from './_anywidget';
import { formatInt, formatUsd, styleElement, svg, truncate } from './_common';

interface CostState {
  total_usd: number;
  total_tokens: number;
  calls: number;
  priced: boolean;
  by_agent: CostBar[];
  by_model: CostBar[];
  by_step: CostBar[];
  timeline: [number, number, number][];
  group: string;
}

type Metric = 'cost_usd' | 'tokens';

const STYLE = `
.cmbagent-cost-head { display: flex; flex-wrap: wrap; gap: 10px; align-items: center; margin-bottom: 4px; }
.cmbagent-cost-total { font-weight: 600; font-size: 14px; }
.cmbagent-cost-head select { font: inherit; }
.cmbagent-cost-charts { display: flex; flex-wrap: wrap; gap: 16px; }
.cmbagent-cost-charts > div { flex: 1 1 320px; min-width: 280px; }
.cmbagent-cost-charts h4 { margin: 4px 0; font-size: 12px; }
.cmbagent-cost-empty { padding: 6px 0; }
`;

const BAR_COLORS = ['#1e88e5', '#43a047', '#8e24aa', '#fb8c00', '#00897b', '#e53935', '#5e35b1', '#6d4c41'];
const MAX_BARS = 25;

function metricText(metric: Metric, value: number): string {
  return metric === 'cost_usd' ? formatUsd(value) : formatInt(value);
}

export function barChart(rows: CostBar[], metric: Metric, width = 420): SVGSVGElement {
  const shown = [...rows].sort((a, b) => b[metric] - a[metric]).slice(0, MAX_BARS);
  const rowH = 20;
  const labelW = 130;
  const valueW = 80;
  const height = shown.length * rowH + 6;
  const root = svg('svg', { width, height, viewBox: `0 0 ${width} ${height}`, class: 'cmbagent-cost-bars' });
  const max = Math.max(...shown.map((r) => r[metric]), 0) || 1;
  shown.forEach((row, i) => {
    const y = i * rowH + 3;
    const barW = Math.max(1, ((width - labelW - valueW) * row[metric]) / max);
    const group = svg('g', { class: 'cmbagent-cost-bar', 'data-label': row.label });
    const label = svg('text', { x: labelW - 6, y: y + rowH / 2, 'text-anchor': 'end', 'dominant-baseline': 'central', 'font-size': 11, fill: 'currentColor' });
    label.textContent = truncate(row.label, 20);
    const bar = svg('rect', { x: labelW, y: y + 2, width: barW, height: rowH - 6, rx: 2, fill: BAR_COLORS[i % BAR_COLORS.length] });
    const value = svg('text', { x: labelW + barW + 4, y: y + rowH / 2, 'dominant-baseline': 'central', 'font-size': 11, fill: 'currentColor' });
    value.textContent = metricText(metric, row[metric]);
    const title = svg('title');
    title.textContent = `${row.label}: ${formatUsd(row.cost_usd)}, ${formatInt(row.tokens)} tokens, ${row.calls} calls`;
    group.append(label, bar, value, title);
    root.appendChild(group);
  });
  return root;
}

/** Cumulative cost (or tokens) over seconds since the first record, as a polyline with axes. */
export function lineChart(points: [number, number, number][], metric: Metric, width = 420, height = 160): SVGSVGElement {
  const root = svg('svg', { width, height, viewBox: `0 0 ${width} ${height}`, class: 'cmbagent-cost-line' });
  const left = 56;
  const bottom = 22;
  const top = 8;
  const right = 10;
  const values = points.map((p) => (metric === 'cost_usd' ? p[1] : p[2]));
  const tMax = Math.max(...points.map((p) => p[0]), 1);
  const vMax = Math.max(...values, 0) || 1;
  const sx = (t: number) => left + ((width - left - right) * t) / tMax;
  const sy = (v: number) => height - bottom - ((height - bottom - top) * v) / vMax;
  root.appendChild(svg('line', { x1: left, y1: height - bottom, x2: width - right, y2: height - bottom, stroke: 'currentColor', 'stroke-opacity': 0.4 }));
  root.appendChild(svg('line', { x1: left, y1: top, x2: left, y2: height - bottom, stroke: 'currentColor', 'stroke-opacity': 0.4 }));
  const yLabel = svg('text', { x: left - 4, y: top + 4, 'text-anchor': 'end', 'font-size': 10, fill: 'currentColor' });
  yLabel.textContent = metricText(metric, vMax);
  const zero = svg('text', { x: left - 4, y: height - bottom, 'text-anchor': 'end', 'font-size': 10, fill: 'currentColor' });
  zero.textContent = '0';
  const tLabel = svg('text', { x: width - right, y: height - 6, 'text-anchor': 'end', 'font-size': 10, fill: 'currentColor' });
  tLabel.textContent = tMax >= 120 ? `${(tMax / 60).toFixed(1)} min` : `${tMax.toFixed(0)} s`;
  root.append(yLabel, zero, tLabel);
  // A step line: cost jumps when a call is recorded.
  let d = `M ${sx(0)} ${sy(0)}`;
  let last = 0;
  points.forEach((p, i) => {
    d += ` L ${sx(p[0])} ${sy(last)} L ${sx(p[0])} ${sy(values[i])}`;
    last = values[i];
  });
  root.appendChild(svg('path', { d, fill: 'none', stroke: '#1e88e5', 'stroke-width': 2, class: 'cmbagent-cost-path' }));
  return root;
}

export function render({ model, el }: RenderProps<CostState>): Cleanup {
  const root = element('div', 'cmbagent-w cmbagent-cost');
  el.append(root);
  let metric: Metric | null = null;

  const update = () => {
    const total = model.get('total_usd') ?? 0;
    const tokens = model.get('total_tokens') ?? 0;
    const calls = model.get('calls') ?? 0;
    // Unpriced (free or scripted) runs still have tokens worth charting.
    const chosen: Metric = metric ?? (total > 0 ? 'cost_usd' : 'tokens');
    root.replaceChildren(styleElement(STYLE));
    const head = element('div', 'cmbagent-cost-head');
    const totalEl = element('span', 'cmbagent-cost-total', `Total ${formatUsd(total)}`);
    head.append(totalEl, element('span', 'cmbagent-muted', `${formatInt(tokens)} tokens · ${calls} model calls`));
    if (!model.get('priced')) {
      head.appendChild(element('span', 'cmbagent-muted', '(some calls have no known price)'));
    }
    const group = element('select', 'cmbagent-cost-group');
    for (const [value, label] of [
      ['agent', 'by agent'],
      ['model', 'by model'],
      ['step', 'by step'],
    ]) {
      const opt = element('option', undefined, label);
      opt.value = value;
      group.appendChild(opt);
    }
    group.value = model.get('group') || 'agent';
    group.addEventListener('change', () => {
      model.set('group', group.value);
      model.save_changes();
    });
    const metricSel = element('select', 'cmbagent-cost-metric');
    for (const [value, label] of [
      ['cost_usd', 'dollars'],
      ['tokens', 'tokens'],
    ]) {
      const opt = element('option', undefined, label);
      opt.value = value;
      metricSel.appendChild(opt);
    }
    metricSel.value = chosen;
    metricSel.addEventListener('change', () => {
      metric = metricSel.value as Metric;
      update();
    });
    head.append(group, metricSel);
    root.appendChild(head);
    if (calls === 0) {
      root.appendChild(element('div', 'cmbagent-cost-empty cmbagent-muted', 'No model calls yet.'));
      return;
    }
    const charts = element('div', 'cmbagent-cost-charts');
    const groupName = model.get('group') || 'agent';
    const rows = groupName === 'model' ? model.get('by_model') : groupName === 'step' ? model.get('by_step') : model.get('by_agent');
    const bars = element('div');
    bars.append(element('h4', undefined, `${chosen === 'cost_usd' ? 'Cost' : 'Tokens'} by ${groupName}`), barChart(rows ?? [], chosen));
    const line = element('div');
    line.append(element('h4', undefined, 'Over time (cumulative)'), lineChart(model.get('timeline') ?? [], chosen));
    charts.append(bars, line);
    root.appendChild(charts);
  };
  // One sync may change several traits: draw once for all of them.
  let scheduled = false;
  const schedule = () => {
    if (!scheduled) {
      scheduled = true;
      Promise.resolve().then(() => {
        scheduled = false;
        update();
      });
    }
  };
  update();
  const names = ['total_usd', 'total_tokens', 'calls', 'priced', 'by_agent', 'by_model', 'by_step', 'timeline', 'group'];
  for (const name of names) {
    model.on(`change:${name}`, schedule);
  }
  return () => {
    for (const name of names) {
      model.off(`change:${name}`, schedule);
    }
  };
}

export default { render };
