// Event log widget: shows the run's events (trait `events`) newest last and
// re-renders whenever Python replaces the list.
import { AnyModel, Cleanup, RenderProps, element } from './_anywidget';

export interface LoggedEvent {
  type: string;
  seq: number;
  ts: string | number;
  payload?: unknown;
}

interface EventLogState {
  events: LoggedEvent[];
}

const STYLE = `
.cmbagent-event-log { font-family: var(--jp-code-font-family, monospace); font-size: 12px;
  max-height: 320px; overflow-y: auto; border: 1px solid var(--jp-border-color2, #ddd); }
.cmbagent-event-log table { border-collapse: collapse; width: 100%; }
.cmbagent-event-log td { padding: 2px 6px; border-bottom: 1px solid var(--jp-border-color3, #eee);
  vertical-align: top; }
.cmbagent-event-log .cmbagent-event-seq { color: #888; text-align: right; width: 3em; }
.cmbagent-event-log .cmbagent-event-type { font-weight: 600; white-space: nowrap; }
.cmbagent-event-log .cmbagent-event-payload { color: #555; word-break: break-word; }
.cmbagent-event-log .cmbagent-event-empty { padding: 6px; color: #888; }
`;

function formatTime(ts: string | number): string {
  const date = new Date(typeof ts === 'number' && ts < 1e12 ? ts * 1000 : ts);
  return Number.isNaN(date.getTime()) ? String(ts) : date.toLocaleTimeString();
}

function summarize(payload: unknown): string {
  if (payload === undefined || payload === null) {
    return '';
  }
  const text = typeof payload === 'string' ? payload : JSON.stringify(payload);
  return text.length > 200 ? `${text.slice(0, 197)}...` : text;
}

export function renderEvents(container: HTMLElement, events: LoggedEvent[]): void {
  container.replaceChildren();
  if (!events || events.length === 0) {
    container.appendChild(element('div', 'cmbagent-event-empty', 'No events yet.'));
    return;
  }
  const table = element('table');
  const body = element('tbody');
  for (const event of events) {
    const row = element('tr', 'cmbagent-event');
    row.dataset.seq = String(event.seq);
    row.dataset.type = event.type;
    row.appendChild(element('td', 'cmbagent-event-seq', String(event.seq)));
    row.appendChild(element('td', 'cmbagent-event-ts', formatTime(event.ts)));
    row.appendChild(element('td', 'cmbagent-event-type', event.type));
    row.appendChild(element('td', 'cmbagent-event-payload', summarize(event.payload)));
    body.appendChild(row);
  }
  table.appendChild(body);
  container.appendChild(table);
  container.scrollTop = container.scrollHeight;
}

export function render({ model, el }: RenderProps<EventLogState>): Cleanup {
  const style = element('style', undefined, STYLE);
  const container = element('div', 'cmbagent-event-log');
  el.append(style, container);
  const update = () => renderEvents(container, model.get('events'));
  update();
  model.on('change:events', update);
  return () => model.off('change:events', update);
}

export type EventLogModel = AnyModel<EventLogState>;
export default { render };
