import { ILabShell, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, InputDialog, showErrorMessage } from '@jupyterlab/apputils';
import { api } from './api';
import { createDagPanel } from './dagview';
import { CMBAgentSidebar, SIDEBAR_ID } from './sidebar';

export const OPEN_SIDEBAR_COMMAND = 'cmbagent:open-sidebar';
export const NEW_SESSION_COMMAND = 'cmbagent:new-session';
export const OPEN_RUN_COMMAND = 'cmbagent:open-run';
const RUN_ID = /^run_[0-9a-f]{12,32}$/;

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'cmbagent-jupyter:sidebar',
  description: 'CMBAgent sidebar: research workflow runs, approvals and costs.',
  autoStart: true,
  // Optional, not required: Voila loads every installed labextension but has no
  // JupyterLab shell (no left area, often no server extension). There the plugin
  // stays idle instead of failing or calling the server.
  optional: [ILabShell, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    labShell: ILabShell | null,
    palette: ICommandPalette | null
  ) => {
    if (!labShell) {
      console.debug(`cmbagent: no JupyterLab shell in ${app.name}; sidebar not added`);
      return;
    }
    const openRun = (runId: string) => {
      const existing = [...labShell.widgets('main')].find(w => w.id === `cmbagent-run-${runId}`);
      if (existing) {
        labShell.activateById(existing.id);
        return;
      }
      const panel = createDagPanel(runId);
      labShell.add(panel, 'main');
      labShell.activateById(panel.id);
    };
    const sidebar = new CMBAgentSidebar({
      openRun,
      newSession: () => void app.commands.execute(NEW_SESSION_COMMAND),
    });
    labShell.add(sidebar, 'left', { rank: 900 });
    void sidebar.refresh();

    app.commands.addCommand(OPEN_SIDEBAR_COMMAND, {
      label: 'CMBAgent: open sidebar',
      execute: () => {
        labShell.activateById(SIDEBAR_ID);
        void sidebar.refresh();
      },
    });
    app.commands.addCommand(NEW_SESSION_COMMAND, {
      label: 'CMBAgent: new session',
      execute: async () => {
        const result = await InputDialog.getText({ title: 'New CMBAgent session', label: 'Session name' });
        const name = result.value?.trim();
        if (!result.button.accept || !name) {
          return;
        }
        try {
          await api.createSession(name);
          labShell.activateById(SIDEBAR_ID);
        } catch (reason) {
          await showErrorMessage('Could not create the session', String((reason as Error).message ?? reason));
        }
      },
    });
    app.commands.addCommand(OPEN_RUN_COMMAND, {
      label: 'CMBAgent: open run',
      execute: async args => {
        let runId = typeof args.runId === 'string' ? args.runId : '';
        if (!runId) {
          const result = await InputDialog.getText({ title: 'Open CMBAgent run', label: 'Run id', placeholder: 'run_...' });
          if (!result.button.accept || !result.value) {
            return;
          }
          runId = result.value.trim();
        }
        if (!RUN_ID.test(runId)) {
          await showErrorMessage('Not a run id', `"${runId}" is not a run id (run_ followed by hex digits).`);
          return;
        }
        openRun(runId);
      },
    });
    for (const command of [OPEN_SIDEBAR_COMMAND, NEW_SESSION_COMMAND, OPEN_RUN_COMMAND]) {
      palette?.addItem({ command, category: 'CMBAgent' });
    }
  },
};

export default plugin;
