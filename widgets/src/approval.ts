// Approval card: the run's pending approval requests (trait `approvals`) with
// Approve / Modify / Reject and a feedback box, plus the latest decisions.
// A click sends {type: "resolve", approval_id, decision, feedback}; Python writes
// it to the store (op approval.resolve) and answers with a notice.
import type { ApprovalCard } from '@cmbagent-jupyter/core';
import { Cleanup, RenderProps, element } from './_anywidget';
import { Notice, badge, button, formatTime, isMessage, showNotice, styleElement } from './_common';

interface ApprovalState {
  approvals: ApprovalCard[];
  show_empty: boolean;
}

const STYLE = `
.cmbagent-approval-card { border: 2px solid #8e24aa; border-radius: 6px; padding: 8px 12px; margin: 4px 0;
  background: var(--jp-layout-color1, #fff); }
.cmbagent-approval-card h3 { margin: 0 0 4px; font-size: 14px; display: flex; gap: 8px; align-items: center; }
.cmbagent-approval-card ol { margin: 4px 0 6px 0; padding-left: 22px; }
.cmbagent-approval-actions { display: flex; gap: 6px; margin-top: 6px; }
.cmbagent-approval-resolved { font-size: 12px; margin: 2px 0; }
.cmbagent-approval-empty { font-size: 12px; padding: 2px 0; }
`;

const LABELS: Record<string, [string, string]> = {
  approve: ['Approve', 'primary'],
  modify: ['Modify', 'warn'],
  reject: ['Reject', 'danger'],
  retry: ['Retry', 'primary'],
  skip: ['Skip', 'warn'],
  abort: ['Abort', 'danger'],
};

/** Decisions that need feedback saying what to change (the store refuses them without). */
const NEEDS_FEEDBACK = new Set(['reject', 'modify']);

function renderCard(approval: ApprovalCard, send: (decision: string, feedback: string) => void): HTMLElement {
  const card = element('div', 'cmbagent-approval-card');
  card.dataset.id = approval.id;
  card.dataset.kind = approval.kind;
  const title = element('h3');
  title.append(badge('waiting_approval'), approval.title);
  card.appendChild(title);
  if (approval.step_label) {
    card.appendChild(element('div', 'cmbagent-muted', approval.step_label));
  }
  if (approval.summary) {
    card.appendChild(element('div', 'cmbagent-approval-summary', approval.summary));
  }
  if (approval.plan && approval.plan.length) {
    const list = element('ol', 'cmbagent-approval-plan');
    for (const item of approval.plan) {
      const li = element('li', undefined, `${item.text} `);
      li.appendChild(element('span', 'cmbagent-muted', `(${item.agent})`));
      list.appendChild(li);
    }
    card.appendChild(list);
  }
  if (approval.details) {
    const details = element('details');
    details.append(element('summary', undefined, 'Details'), element('pre', undefined, approval.details));
    card.appendChild(details);
  }
  const feedback = element('textarea', 'cmbagent-approval-feedback');
  feedback.placeholder = 'Feedback for the agents (needed to modify or reject)';
  card.appendChild(feedback);
  const actions = element('div', 'cmbagent-approval-actions');
  const notices = element('div', 'cmbagent-approval-notices');
  const buttons: HTMLButtonElement[] = [];
  for (const option of approval.options) {
    const [label, style] = LABELS[option] ?? [option, ''];
    const b = button(label, `${style} cmbagent-approval-${option}`, () => {
      const text = feedback.value.trim();
      if (NEEDS_FEEDBACK.has(option) && !text) {
        showNotice(notices, `To ${option}, say what to change in the feedback box.`, 'error');
        feedback.focus();
        return;
      }
      for (const other of buttons) {
        other.disabled = true;
      }
      showNotice(notices, `Sending ${option}…`);
      send(option, text);
    });
    b.dataset.decision = option;
    buttons.push(b);
    actions.appendChild(b);
  }
  card.append(actions, notices);
  return card;
}

export function render({ model, el }: RenderProps<ApprovalState>): Cleanup {
  const root = element('div', 'cmbagent-w cmbagent-approvals');
  const cards = element('div', 'cmbagent-approval-cards');
  const notices = element('div', 'cmbagent-approval-global-notices');
  root.append(styleElement(STYLE), cards, notices);
  el.appendChild(root);

  const update = () => {
    const approvals = model.get('approvals') ?? [];
    const pending = approvals.filter((a) => a.status === 'pending');
    const resolved = approvals.filter((a) => a.status !== 'pending');
    // Keep the cards the user may be typing into; rebuild only what changed.
    const existing = new Map<string, HTMLElement>();
    for (const card of Array.from(cards.querySelectorAll<HTMLElement>('.cmbagent-approval-card'))) {
      existing.set(card.dataset.id ?? '', card);
    }
    const next: HTMLElement[] = [];
    for (const a of pending) {
      next.push(
        existing.get(a.id) ??
          renderCard(a, (decision, feedback) => model.send({ type: 'resolve', approval_id: a.id, decision, feedback }))
      );
    }
    for (const a of resolved) {
      const line = element('div', 'cmbagent-approval-resolved');
      line.dataset.id = a.id;
      line.dataset.status = a.status;
      line.append(badge(a.status), ` ${a.title}`);
      const by = a.resolved_by ? ` by ${a.resolved_by}` : '';
      line.appendChild(element('span', 'cmbagent-muted', `${by}${a.created_at ? ` · asked ${formatTime(a.created_at)}` : ''}`));
      if (a.feedback) {
        line.append(`: ${a.feedback}`);
      }
      next.push(line);
    }
    if (next.length === 0 && model.get('show_empty') !== false) {
      next.push(element('div', 'cmbagent-approval-empty cmbagent-muted', 'No approvals waiting.'));
    }
    root.style.display = next.length === 0 ? 'none' : '';
    cards.replaceChildren(...next);
  };
  const onMessage = (msg: unknown) => {
    if (isMessage<Notice>(msg, 'notice')) {
      showNotice(notices, msg.text, msg.level);
      if (msg.level === 'error') {
        // A refused decision: let the user try again.
        for (const b of Array.from(cards.querySelectorAll<HTMLButtonElement>('.cmbagent-approval-actions button'))) {
          b.disabled = false;
        }
      }
    }
  };
  update();
  model.on('change:approvals', update);
  model.on('change:show_empty', update);
  model.on('msg:custom', onMessage);
  return () => {
    model.off('change:approvals', update);
    model.off('change:show_empty', update);
    model.off('msg:custom', onMessage);
  };
}

export default { render };
