// The left-sidebar panel. For now it shows whether the server extension
// answers; runs, approvals and costs will live here.
import { Widget } from '@lumino/widgets';
import { fetchHealth, Health } from './health';

export const SIDEBAR_ID = 'cmbagent-sidebar';

export class CMBAgentSidebar extends Widget {
  private readonly healthNode: HTMLElement;

  constructor() {
    super();
    this.id = SIDEBAR_ID;
    this.addClass('cmbagent-sidebar');
    this.title.label = 'CMBAgent';
    this.title.caption = 'CMBAgent research workflows';

    const heading = document.createElement('h2');
    heading.textContent = 'CMBAgent';
    this.healthNode = document.createElement('div');
    this.healthNode.className = 'cmbagent-sidebar-health';
    this.healthNode.dataset.state = 'checking';
    this.healthNode.textContent = 'Checking server extension...';
    this.node.append(heading, this.healthNode);
  }

  /** Fetch the server health once and show it. */
  async refresh(): Promise<void> {
    this.showHealth(await fetchHealth());
  }

  private showHealth(health: Health | null): void {
    if (health && health.status === 'ok') {
      this.healthNode.dataset.state = 'ok';
      this.healthNode.textContent = `Server: ${health.status} (cmbagent-jupyter ${health.version ?? '?'})`;
    } else {
      this.healthNode.dataset.state = 'unavailable';
      this.healthNode.textContent = 'Server extension unavailable.';
    }
  }
}
