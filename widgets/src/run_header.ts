// Run header: the run's task, state, progress and cost, with the controls that
// apply in its state (pause, resume, cancel). A click sends {type: "control",
// action}; Python acts through the engine (or the store) and answers with a notice.
import type { RunHeader } from '@cmbagent-jupyter/core';
import { Cleanup, RenderProps, element } from './_anywidget';
import { Notice, badge, button, formatTime, formatUsd, isMessage, showNotice, statusColor, styleElement, truncate } from './_common';

interface HeaderState {
  /** Empty until the view has a run. */
  run: Partial<RunHeader>;
  controls: string[];
}

const STYLE = `
.cmbagent-run-header { border: 1px solid var(--jp-border-color2, #ddd); border-radius: 6px; padding: 6px 10px; }
.cmbagent-run-line { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; }
.cmbagent-run-task { font-weight: 600; font-size: 14px; flex: 1 1 300px; }
.cmbagent-run-meta { font-size: 12px; margin-top: 2px; }
.cmbagent-run-progress { height: 6px; background: var(--jp-layout-color3, #e0e0e0); border-radius: 3px;
  margin-top: 6px; overflow: hidden; }
.cmbagent-run-progress > div { height: 100%; transition: width 0.3s; }
.cmbagent-run-error { color: #b71c1c; font-size: 12px; margin-top: 4px; white-space: pre-wrap; }
`;

const CONTROL_LABELS: Record<string, [string, string]> = {
  pause: ['Pause', ''],
  resume: ['Resume', 'primary'],
  cancel: ['Cancel', 'danger'],
};

export function render({ model, el }: RenderProps<HeaderState>): Cleanup {
  const root = element('div', 'cmbagent-w cmbagent-run-header');
  const body = element('div');
  const notices = element('div', 'cmbagent-run-notices');
  root.append(styleElement(STYLE), body, notices);
  el.appendChild(root);

  const update = () => {
    const run = model.get('run') ?? {};
    const status = run.status ?? 'draft';
    root.dataset.status = status;
    body.replaceChildren();
    const line = element('div', 'cmbagent-run-line');
    const task = element('span', 'cmbagent-run-task', truncate(run.task ?? '', 200));
    task.title = run.task ?? '';
    line.append(badge(status), task);
    for (const action of model.get('controls') ?? []) {
      const [label, style] = CONTROL_LABELS[action] ?? [action, ''];
      const b = button(label, `${style} cmbagent-run-${action}`, () => {
        b.disabled = true;
        model.send({ type: 'control', action });
      });
      b.dataset.action = action;
      line.appendChild(b);
    }
    body.appendChild(line);
    const total = run.steps_total ?? 0;
    const done = run.steps_done ?? 0;
    const meta = [
      run.id,
      run.session && `session ${run.session}`,
      run.mode,
      run.model && `model ${run.model}`,
      total ? `${done}/${total} steps` : 'no plan yet',
      run.steps_failed ? `${run.steps_failed} failed` : '',
      `cost ${formatUsd(run.cost_usd)}`,
      run.started_at && `started ${formatTime(run.started_at)}`,
      run.completed_at && `ended ${formatTime(run.completed_at)}`,
      run.parent_run_id && `branch of ${run.parent_run_id}`,
    ].filter(Boolean);
    body.appendChild(element('div', 'cmbagent-run-meta cmbagent-muted', meta.join(' · ')));
    const bar = element('div', 'cmbagent-run-progress');
    const fill = element('div');
    fill.style.width = `${total ? Math.round((100 * done) / total) : 0}%`;
    fill.style.background = statusColor(status === 'executing' ? 'completed' : status);
    bar.appendChild(fill);
    body.appendChild(bar);
    if (run.error) {
      body.appendChild(element('div', 'cmbagent-run-error', truncate(run.error, 600)));
    }
  };
  const onMessage = (msg: unknown) => {
    if (isMessage<Notice>(msg, 'notice')) {
      showNotice(notices, msg.text, msg.level);
      update();
    }
  };
  update();
  model.on('change:run', update);
  model.on('change:controls', update);
  model.on('msg:custom', onMessage);
  return () => {
    model.off('change:run', update);
    model.off('change:controls', update);
    model.off('msg:custom', onMessage);
  };
}

export default { render };
