// REST calls to the server extension under /cmbagent/api/. Every call resolves to
// data or throws an ApiError with the server's message; callers decide how loud
// to be (the sidebar stays quiet when the extension is missing, e.g. in Voila).
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import type { ApprovalRequest, Run, RunStatusReply, Session, SessionSummary } from '@cmbagent-jupyter/core';

export const API_PATH = 'cmbagent/api';

// The shapes are generated from the Python models (see @cmbagent-jupyter/core).
export type {
  ApprovalRequest,
  Event,
  Run,
  RunGraph,
  RunStatusReply,
  RunSummary,
  Session,
  SessionSummary,
  Snapshot,
  Step,
} from '@cmbagent-jupyter/core';

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
  sessions: () => requestAPI<{ sessions: SessionSummary[] }>('sessions'),
  createSession: (name: string) => post<Session>('sessions', { name }),
  runStatus: (sessionId: string, runId: string) =>
    requestAPI<RunStatusReply>(`workflows/${runId}/status`, {}, { session_id: sessionId }),
  pause: (sessionId: string, runId: string) =>
    post<Run>(`workflows/${runId}/pause`, { session_id: sessionId }),
  resume: (sessionId: string, runId: string) =>
    post<{ status: string }>(`workflows/${runId}/resume`, { session_id: sessionId }),
  /** approve and reject have their own endpoints; other options (retry, skip...) go to resolve. */
  decide: (approval: Pick<ApprovalRequest, 'id' | 'session_id'>, decision: string, feedback: string) =>
    decision === 'approve' || decision === 'reject'
      ? post<ApprovalRequest>(`approvals/${approval.id}/${decision}`, {
          session_id: approval.session_id,
          feedback: feedback || null,
        })
      : post<ApprovalRequest>(`approvals/${approval.id}/resolve`, {
          session_id: approval.session_id,
          decision,
          feedback: feedback || null,
        }),
};
