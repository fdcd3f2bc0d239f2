import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { CMBAgentSidebar, SIDEBAR_ID } from './sidebar';

export const OPEN_SIDEBAR_COMMAND = 'cmbagent:open-sidebar';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'cmbagent-jupyter:sidebar',
  description: 'CMBAgent sidebar: research workflow runs, approvals and costs.',
  autoStart: true,
  optional: [ICommandPalette],
  activate: (app: JupyterFrontEnd, palette: ICommandPalette | null) => {
    const sidebar = new CMBAgentSidebar();
    app.shell.add(sidebar, 'left', { rank: 900 });
    void sidebar.refresh();

    app.commands.addCommand(OPEN_SIDEBAR_COMMAND, {
      label: 'CMBAgent: open sidebar',
      execute: () => {
        app.shell.activateById(SIDEBAR_ID);
        void sidebar.refresh();
      },
    });
    palette?.addItem({ command: OPEN_SIDEBAR_COMMAND, category: 'CMBAgent' });
  },
};

export default plugin;
