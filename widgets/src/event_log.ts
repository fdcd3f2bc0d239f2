// Event log: the run's events, newest last. Events arrive as custom messages
// ({type: "events", events, reset}); a new view asks for the recent window with
// {type: "history"}. Only small counters are traits, so a long run never grows
// the widget state. A filter box narrows the rows by event type or text.
import { AnyModel, Cleanup, RenderProps, element } from './_anywidget';
import { formatTime, isMessage, styleElement, truncate } from './_common';

export interface LoggedEvent {
  type: string;
  seq: number | null;
  ts: string | number;
  payload?: unknown;
  summary?: string;
}

interface EventLogState {
  total: number;
  window: number;
}

interface EventsMessage {
  type: 'events';
  events: LoggedEvent[];
  reset?: boolean;
}

const STYLE = `
.cmbagent-event-log-head { display: flex; gap: 8px; align-items: center; margin-bottom: 4px; }
.cmbagent-event-log-head input { font: inherit; flex: 0 1 240px; }
.cmbagent-event-log { font-family: var(--jp-code-font-family, monospace); font-size: 12px;
  max-height: 320px; overflow-y: auto; border: 1px solid var(--jp-border-color2, #ddd); }
.cmbagent-event-log table { width: 100%; }
.cmbagent-event-log .cmbagent-event-seq { color: #888; text-align: right; width: 3em; }
.cmbagent-event-log .cmbagent-event-ts { color: #888; white-space: nowrap; }
.cmbagent-event-log .cmbagent-event-type { font-weight: 600; white-space: nowrap; }
.cmbagent-event-log tr[data-level="error"] .cmbagent-event-type { color: #c62828; }
.cmbagent-event-log tr[data-level="ok"] .cmbagent-event-type { color: #2e7d32; }
.cmbagent-event-log tr[data-level="attention"] .cmbagent-event-type { color: #8e24aa; }
.cmbagent-event-log .cmbagent-event-payload { color: var(--jp-ui-font-color2, #555); word-break: break-word; }
.cmbagent-event-log .cmbagent-event-empty { padding: 6px; color: #888; }
`;

export function summarize(event: LoggedEvent): string {
  if (event.summary) {
    return event.summary;
  }
  const payload = event.payload;
  if (payload === undefined || payload === null) {
    return '';
  }
  return truncate(typeof payload === 'string' ? payload : JSON.stringify(payload), 200);
}

function level(type: string): string {
  if (type.endsWith('failed') || type === 'error' || type === 'retry.exhausted' || type === 'budget.alert') {
    return 'error';
  }
  if (type.endsWith('completed') || type === 'retry.succeeded') {
    return 'ok';
  }
  if (type.startsWith('approval.')) {
    return 'attention';
  }
  return '';
}

export function eventRow(event: LoggedEvent): HTMLTableRowElement {
  const row = element('tr', 'cmbagent-event');
  row.dataset.seq = String(event.seq ?? '');
  row.dataset.type = event.type;
  row.dataset.level = level(event.type);
  row.appendChild(element('td', 'cmbagent-event-seq', String(event.seq ?? '')));
  row.appendChild(element('td', 'cmbagent-event-ts', formatTime(event.ts)));
  row.appendChild(element('td', 'cmbagent-event-type', event.type));
  row.appendChild(element('td', 'cmbagent-event-payload', summarize(event)));
  return row;
}

export function render({ model, el }: RenderProps<EventLogState>): Cleanup {
  const root = element('div', 'cmbagent-w cmbagent-event-log-widget');
  const head = element('div', 'cmbagent-event-log-head');
  const filter = element('input', 'cmbagent-event-filter');
  filter.type = 'search';
  filter.placeholder = 'filter: type or text';
  const count = element('span', 'cmbagent-muted cmbagent-event-count');
  head.append(filter, count);
  const container = element('div', 'cmbagent-event-log');
  const table = element('table');
  const body = element('tbody');
  table.appendChild(body);
  const empty = element('div', 'cmbagent-event-empty', 'No events yet.');
  container.append(empty, table);
  root.append(styleElement(STYLE), head, container);
  el.appendChild(root);

  const matches = (row: HTMLElement): boolean => {
    const q = filter.value.trim().toLowerCase();
    return !q || (row.textContent ?? '').toLowerCase().includes(q);
  };
  const updateCount = () => {
    const shown = body.children.length;
    const total = model.get('total') ?? shown;
    count.textContent = total > shown ? `last ${shown} of ${total} events` : `${shown} events`;
    empty.style.display = shown ? 'none' : '';
  };
  // Follow new events while the user is at the bottom; stop following once they scroll up.
  let follow = true;
  container.addEventListener('scroll', () => {
    follow = container.scrollTop + container.clientHeight >= container.scrollHeight - 8;
  });
  const append = (events: LoggedEvent[], reset: boolean) => {
    const atBottom = follow;
    if (reset) {
      body.replaceChildren();
    }
    const seen = new Set(Array.from(body.children).map((r) => (r as HTMLElement).dataset.seq));
    for (const event of events) {
      if (event.seq !== null && seen.has(String(event.seq))) {
        continue;
      }
      const row = eventRow(event);
      row.style.display = matches(row) ? '' : 'none';
      body.appendChild(row);
    }
    const limit = Math.max(10, model.get('window') || 500);
    while (body.children.length > limit) {
      body.firstElementChild?.remove();
    }
    updateCount();
    if (atBottom || reset) {
      container.scrollTop = container.scrollHeight;
    }
  };
  filter.addEventListener('input', () => {
    for (const row of Array.from(body.children) as HTMLElement[]) {
      row.style.display = matches(row) ? '' : 'none';
    }
  });
  const onMessage = (msg: unknown) => {
    if (isMessage<EventsMessage>(msg, 'events')) {
      append(msg.events ?? [], Boolean(msg.reset));
    }
  };
  model.on('msg:custom', onMessage);
  model.on('change:total', updateCount);
  updateCount();
  model.send({ type: 'history' });
  return () => {
    model.off('msg:custom', onMessage);
    model.off('change:total', updateCount);
  };
}

export type EventLogModel = AnyModel<EventLogState>;
export default { render };
