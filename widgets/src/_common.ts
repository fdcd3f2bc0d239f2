// Helpers shared by the widget bundles: DOM builders, number formatting, a style
// sheet injected once per widget view, and (from @cmbagent-jupyter/core) the status
// colours and the SVG builder.
// (Files starting with "_" are shared modules, not bundle entries.)
import { statusColor, statusTextColor } from '@cmbagent-jupyter/core';
import { element } from './_anywidget';

export {
  SVG_NS,
  STATUS_COLORS,
  statusColor,
  statusTextColor,
  svgElement as svg,
  truncate,
} from '@cmbagent-jupyter/core';

export function button(label: string, className: string, onClick: () => void): HTMLButtonElement {
  const b = element('button', `cmbagent-btn ${className}`, label);
  b.type = 'button';
  b.addEventListener('click', onClick);
  return b;
}

export function formatUsd(value: number | null | undefined): string {
  const v = value ?? 0;
  if (v === 0) {
    return '$0';
  }
  if (Math.abs(v) < 0.01) {
    return `$${v.toFixed(4)}`;
  }
  return `$${v.toFixed(2)}`;
}

export function formatInt(value: number | null | undefined): string {
  return Math.round(value ?? 0).toLocaleString('en-US');
}

export function formatTime(ts: string | number | null | undefined): string {
  if (ts === null || ts === undefined || ts === '') {
    return '';
  }
  const date = new Date(typeof ts === 'number' && ts < 1e12 ? ts * 1000 : ts);
  return Number.isNaN(date.getTime()) ? String(ts) : date.toLocaleTimeString();
}


/** A status pill: coloured background, the state name as text. */
export function badge(status: string): HTMLSpanElement {
  const b = element('span', 'cmbagent-badge', status.replace(/_/g, ' '));
  b.dataset.status = status;
  b.style.background = statusColor(status);
  b.style.color = statusTextColor(status);
  return b;
}

export const BASE_STYLE = `
.cmbagent-w { font-family: var(--jp-ui-font-family, system-ui, sans-serif); font-size: 13px;
  color: var(--jp-ui-font-color1, #212121); }
.cmbagent-w .cmbagent-btn { font: inherit; padding: 3px 10px; border-radius: 4px; cursor: pointer;
  border: 1px solid var(--jp-border-color1, #bdbdbd); background: var(--jp-layout-color1, #fff);
  color: var(--jp-ui-font-color1, #212121); }
.cmbagent-w .cmbagent-btn:hover:not(:disabled) { background: var(--jp-layout-color2, #eee); }
.cmbagent-w .cmbagent-btn:disabled { opacity: 0.5; cursor: default; }
.cmbagent-w .cmbagent-btn.primary { background: #43a047; border-color: #2e7d32; color: #fff; }
.cmbagent-w .cmbagent-btn.danger { background: #e53935; border-color: #c62828; color: #fff; }
.cmbagent-w .cmbagent-btn.warn { background: #fb8c00; border-color: #ef6c00; color: #fff; }
.cmbagent-w .cmbagent-badge { display: inline-block; padding: 1px 8px; border-radius: 10px;
  font-size: 11px; font-weight: 600; white-space: nowrap; }
.cmbagent-w .cmbagent-muted { color: var(--jp-ui-font-color2, #757575); }
.cmbagent-w .cmbagent-notice { margin: 4px 0; padding: 4px 8px; border-radius: 4px;
  background: var(--jp-layout-color2, #f5f5f5); }
.cmbagent-w .cmbagent-notice[data-level="error"] { background: #ffebee; color: #b71c1c; }
.cmbagent-w textarea { font: inherit; width: 100%; box-sizing: border-box; min-height: 3.5em;
  border: 1px solid var(--jp-border-color1, #bdbdbd); border-radius: 4px; padding: 4px;
  background: var(--jp-layout-color0, #fff); color: var(--jp-ui-font-color1, #212121); }
.cmbagent-w pre { background: var(--jp-layout-color2, #f5f5f5); padding: 6px; overflow: auto;
  max-height: 360px; font-family: var(--jp-code-font-family, monospace); font-size: 12px; margin: 4px 0; }
.cmbagent-w table { border-collapse: collapse; }
.cmbagent-w th, .cmbagent-w td { text-align: left; padding: 2px 8px;
  border-bottom: 1px solid var(--jp-border-color3, #eee); vertical-align: top; }
`;

/** A <style> element holding the base style plus the widget's own rules. */
export function styleElement(css: string): HTMLStyleElement {
  return element('style', undefined, BASE_STYLE + css);
}

/** A notice line ("approved", "error: ...") that replaces the previous one in `host`. */
export function showNotice(host: HTMLElement, text: string, level = 'info'): void {
  host.replaceChildren();
  if (!text) {
    return;
  }
  const n = element('div', 'cmbagent-notice', text);
  n.dataset.level = level;
  host.appendChild(n);
}

export interface Notice {
  type: 'notice';
  text: string;
  level?: string;
}

export function isMessage<T extends { type: string }>(msg: unknown, type: T['type']): msg is T {
  return typeof msg === 'object' && msg !== null && (msg as { type?: unknown }).type === type;
}
