/**
 * Text for times, durations and statuses, as the panel shows them.
 */
import type { ITask, TaskStatus } from './types';

/** Milliseconds since the epoch of an ISO 8601 time, or null. */
export function parseTime(value: string | null | undefined): number | null {
  if (!value) {
    return null;
  }
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? null : ms;
}

/** A short duration: `850ms`, `12.3s`, `4m 05s`, `2h 03m`, `3d 4h`. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) {
    ms = 0;
  }
  if (ms < 1000) {
    return `${Math.round(ms)}ms`;
  }
  const seconds = ms / 1000;
  if (seconds < 60) {
    return `${seconds < 10 ? seconds.toFixed(1) : Math.floor(seconds)}s`;
  }
  const s = Math.floor(seconds);
  const pad = (n: number) => String(n).padStart(2, '0');
  if (s < 3600) {
    return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  }
  if (s < 86400) {
    return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
  }
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

/** What the time column says: how long it waited, has run, or took. */
export function timeLabel(task: ITask, now: number): string {
  const created = parseTime(task.created_at);
  const started = parseTime(task.started_at);
  const finished = parseTime(task.finished_at);
  switch (task.status) {
    case 'created':
      return created === null
        ? 'queued'
        : `queued ${formatDuration(now - created)}`;
    case 'running':
      return started === null ? 'running' : formatDuration(now - started);
    default: {
      const from = started ?? created;
      return from !== null && finished !== null
        ? formatDuration(finished - from)
        : '';
    }
  }
}

/** A full timestamp in the browser's locale, or a dash. */
export function formatTimestamp(value: string | null): string {
  const ms = parseTime(value);
  return ms === null ? '\u2014' : new Date(ms).toLocaleString();
}

/** What people call each status. */
export const STATUS_LABELS: Readonly<Record<TaskStatus, string>> = {
  created: 'Queued',
  running: 'Running',
  completed: 'Completed',
  failed: 'Failed',
  cancelled: 'Cancelled'
};

/** Progress as a whole percentage, or null when the task reports none. */
export function percent(progress: number | null | undefined): number | null {
  if (progress === null || progress === undefined || Number.isNaN(progress)) {
    return null;
  }
  return Math.round(Math.min(1, Math.max(0, progress)) * 100);
}

/** The first characters of a task id, enough to tell tasks apart. */
export function shortId(taskId: string): string {
  return taskId.slice(0, 8);
}
