// REST calls to the server extension under /cmbagent/api/. Every call resolves to
// data or throws an ApiError with the server's message; callers decide how loud
// to be (the sidebar stays quiet when the extension is missing, e.g. in Voila).
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export const API_PATH = 'cmbagent/api';

export interface Session {
  id: string;
  name: string;
  status: string;
  cost_usd?: number;
  runs_by_status?: Record<string, number>;
}

export interface Run {
  id: string;
  session_id: string;
  task: string;
  mode: string;
  status: string;
  created_at: string;
  pause_requested?: boolean;
  cost_usd?: number;
}

export interface Step {
  id: string;
  key: string;
  number: number;
  agent: string;
  status: string;
  description: string;
  depends_on: string[];
}

export interface Approval {
  id: string;
  session_id: string;
  run_id: string;
  step_id: string | null;
  kind: string;
  status: string;
  request: Record<string, unknown>;
  options: string[];
  created_at: string;
}

export interface DagNode {
  id: string;
  label: string;
  status?: string;
  kind?: string;
  description?: string;
}

export interface Dag {
  nodes: DagNode[];
  edges: { source: string; target: string }[];
}

export interface RunStatus {
  run: Run;
  steps: Step[];
  approvals: Approval[];
  dag: Dag;
}

/** What the event socket sends on connect (and on request_state). */
export interface StreamState {
  sessions: Session[];
  runs: Run[];
  approvals: Approval[];
  gseq: number;
  run?: Run;
  steps?: Step[];
  dag?: Dag;
}

/** The shared event envelope (see cmbagent_jupyter.models.Event). */
export interface StoreEvent {
  id: string;
  type: string;
  session_id: string;
  run_id: string | null;
  seq: number;
  gseq: number;
  ts: string;
  payload: Record<string, any>;
}

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly reason: string
  ) {
    super(message);
  }
}

export async function requestAPI<T>(
  path: string,
  init: RequestInit = {},
  query: Record<string, string | undefined> = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  const params = Object.entries(query)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v as string)}`)
    .join('&');
  const url = URLExt.join(settings.baseUrl, API_PATH, path) + (params ? `?${params}` : '');
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (reason) {
    throw new ApiError(`cannot reach the server: ${reason}`, 0, 'network');
  }
  const text = await response.text();
  let data: any = {};
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    data = { message: text };
  }
  if (!response.ok) {
    throw new ApiError(data.message ?? response.statusText, response.status, data.reason ?? '');
  }
  return data as T;
}

function post<T>(path: string, body: object): Promise<T> {
  return requestAPI<T>(path, { method: 'POST', body: JSON.stringify(body) });
}

export const api = {
  sessions: () => requestAPI<{ sessions: Session[] }>('sessions'),
  createSession: (name: string) => post<Session>('sessions', { name }),
  runStatus: (sessionId: string, runId: string) =>
    requestAPI<RunStatus>(`workflows/${runId}/status`, {}, { session_id: sessionId }),
  pause: (sessionId: string, runId: string) =>
    post<Run>(`workflows/${runId}/pause`, { session_id: sessionId }),
  resume: (sessionId: string, runId: string) =>
    post<{ status: string }>(`workflows/${runId}/resume`, { session_id: sessionId }),
  /** approve and reject have their own endpoints; other options (retry, skip...) go to resolve. */
  decide: (approval: Approval, decision: string, feedback: string) =>
    decision === 'approve' || decision === 'reject'
      ? post<Approval>(`approvals/${approval.id}/${decision}`, {
          session_id: approval.session_id,
          feedback: feedback || null,
        })
      : post<Approval>(`approvals/${approval.id}/resolve`, {
          session_id: approval.session_id,
          decision,
          feedback: feedback || null,
        }),
};
