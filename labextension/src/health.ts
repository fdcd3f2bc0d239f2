// Asks the server extension whether it is there. Voila and other hosts load
// every installed labextension without our server extension, so a failure is
// an expected answer ("unavailable"), never an error shown to the user.
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export interface Health {
  status: string;
  version?: string;
}

export const HEALTH_PATH = 'cmbagent/api/health';

export async function fetchHealth(
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<Health | null> {
  const url = URLExt.join(settings.baseUrl, HEALTH_PATH);
  try {
    const response = await ServerConnection.makeRequest(url, {}, settings);
    if (!response.ok) {
      console.debug(`cmbagent: ${url} answered ${response.status}`);
      return null;
    }
    return (await response.json()) as Health;
  } catch (reason) {
    console.debug(`cmbagent: ${url} unreachable`, reason);
    return null;
  }
}
