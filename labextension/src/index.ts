import { ILabShell, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { CMBAgentSidebar, SIDEBAR_ID } from './sidebar';

export const OPEN_SIDEBAR_COMMAND = 'cmbagent:open-sidebar';

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
    const sidebar = new CMBAgentSidebar();
    labShell.add(sidebar, 'left', { rank: 900 });
    void sidebar.refresh();

    app.commands.addCommand(OPEN_SIDEBAR_COMMAND, {
      label: 'CMBAgent: open sidebar',
      execute: () => {
        labShell.activateById(SIDEBAR_ID);
        void sidebar.refresh();
      },
    });
    palette?.addItem({ command: OPEN_SIDEBAR_COMMAND, category: 'CMBAgent' });
  },
};

export default plugin;
