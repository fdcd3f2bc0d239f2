// One colour per run, step and approval state, so the sidebar, the widgets and their
// legends read the same.
import { inSet } from './sets.js';

export const STATUS_COLORS: Readonly<Record<string, string>> = {
  pending: '#9e9e9e',
  draft: '#9e9e9e',
  planning: '#00897b',
  running: '#1e88e5',
  executing: '#1e88e5',
  completed: '#43a047',
  failed: '#e53935',
  paused: '#ffb300',
  interrupted: '#ff7043',
  waiting_approval: '#8e24aa',
  skipped: '#bdbdbd',
  cancelled: '#616161',
  approved: '#43a047',
  modified: '#fb8c00',
  rejected: '#e53935',
  expired: '#757575',
};

/** Fills light enough to need dark text. */
const LIGHT_FILLS = ['pending', 'draft', 'skipped', 'paused'] as const;

export function statusColor(status: string | null | undefined): string {
  return STATUS_COLORS[status ?? 'pending'] ?? STATUS_COLORS.pending;
}

/** Readable text colour on a status fill. */
export function statusTextColor(status: string | null | undefined): string {
  return inSet(LIGHT_FILLS, status ?? 'pending') ? '#212121' : '#ffffff';
}
