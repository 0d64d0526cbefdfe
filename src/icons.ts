/**
 * Icons: the panel's own and one per task status. Shapes use `currentColor`
 * so that the stylesheet colours them from the theme's variables.
 */
import { LabIcon } from '@jupyterlab/ui-components';

import type { TaskStatus } from './types';

function svg(body: string): string {
  return (
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 16 16" ' +
    `fill="none" stroke="currentColor" stroke-width="1.5" stroke-linecap="round" stroke-linejoin="round">${body}</svg>`
  );
}

/** The sidebar tab: a list with a running clock. */
export const tasksIcon = new LabIcon({
  name: 'jupyter-tasks:tasks',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">' +
    '<g class="jp-icon3" fill="#616161">' +
    '<rect x="2" y="4" width="11" height="2" rx="1"/>' +
    '<rect x="2" y="9" width="8" height="2" rx="1"/>' +
    '<rect x="2" y="14" width="6" height="2" rx="1"/>' +
    '<path d="M16.5 9a5.5 5.5 0 1 0 0 11a5.5 5.5 0 0 0 0-11zm0 1.8a3.7 3.7 0 1 1 0 7.4a3.7 3.7 0 0 1 0-7.4z"/>' +
    '<rect x="15.7" y="11.8" width="1.6" height="3.4" rx=".8"/>' +
    '<rect x="15.7" y="13.6" width="3.2" height="1.6" rx=".8"/>' +
    '</g></svg>'
});

const queuedIcon = new LabIcon({
  name: 'jupyter-tasks:status-created',
  svgstr: svg('<circle cx="8" cy="8" r="6"/><path d="M8 4.8V8l2.2 1.4"/>')
});

const runningIcon = new LabIcon({
  name: 'jupyter-tasks:status-running',
  svgstr: svg(
    '<circle cx="8" cy="8" r="6" opacity=".3"/><path d="M8 2a6 6 0 0 1 6 6"/>'
  )
});

const completedIcon = new LabIcon({
  name: 'jupyter-tasks:status-completed',
  svgstr: svg(
    '<circle cx="8" cy="8" r="6"/><path d="M5.3 8.2l1.8 1.8 3.6-3.8"/>'
  )
});

const failedIcon = new LabIcon({
  name: 'jupyter-tasks:status-failed',
  svgstr: svg(
    '<circle cx="8" cy="8" r="6"/><path d="M5.9 5.9l4.2 4.2M10.1 5.9l-4.2 4.2"/>'
  )
});

const cancelledIcon = new LabIcon({
  name: 'jupyter-tasks:status-cancelled',
  svgstr: svg('<circle cx="8" cy="8" r="6"/><path d="M3.8 12.2l8.4-8.4"/>')
});

/** The icon of each status. */
export const STATUS_ICONS: Readonly<Record<TaskStatus, LabIcon>> = {
  created: queuedIcon,
  running: runningIcon,
  completed: completedIcon,
  failed: failedIcon,
  cancelled: cancelledIcon
};

/** Re-run: a circular arrow. */
export const rerunIcon = new LabIcon({
  name: 'jupyter-tasks:rerun',
  svgstr: svg('<path d="M13 8a5 5 0 1 1-1.5-3.6"/><path d="M11.8 1.8v2.8H9"/>')
});

/** Cancel: a square stop sign. */
export const cancelIcon = new LabIcon({
  name: 'jupyter-tasks:cancel',
  svgstr: svg('<rect x="3.5" y="3.5" width="9" height="9" rx="1.5"/>')
});

/** Delete: a bin. */
export const deleteIcon = new LabIcon({
  name: 'jupyter-tasks:delete',
  svgstr: svg(
    '<path d="M2.5 4.5h11M6 4.5V3h4v1.5M4 4.5l.7 8.5h6.6l.7-8.5M6.8 7v4M9.2 7v4"/>'
  )
});

/** Copy: two sheets. */
export const copyIdIcon = new LabIcon({
  name: 'jupyter-tasks:copy-id',
  svgstr: svg(
    '<rect x="5.5" y="5.5" width="8" height="8" rx="1.2"/><path d="M10.5 5.5V3.7A1.2 1.2 0 0 0 9.3 2.5H3.7a1.2 1.2 0 0 0-1.2 1.2v5.6a1.2 1.2 0 0 0 1.2 1.2h1.8"/>'
  )
});

/** Details: an information mark. */
export const detailsIcon = new LabIcon({
  name: 'jupyter-tasks:details',
  svgstr: svg(
    '<circle cx="8" cy="8" r="6"/><path d="M8 7.3V11"/><path d="M8 5h.01"/>'
  )
});

/** Expand/collapse: a chevron pointing right (rotated by CSS when open). */
export const chevronIcon = new LabIcon({
  name: 'jupyter-tasks:chevron',
  svgstr: svg('<path d="M6 3.5L10.5 8 6 12.5"/>')
});

/** Submit: a plus. */
export const submitIcon = new LabIcon({
  name: 'jupyter-tasks:submit',
  svgstr: svg('<path d="M8 3v10M3 8h10"/>')
});

/** Refresh: two arrows. */
export const refreshIcon = new LabIcon({
  name: 'jupyter-tasks:refresh',
  svgstr: svg(
    '<path d="M13.2 6.5A5.3 5.3 0 0 0 3.3 5.2M2.8 9.5a5.3 5.3 0 0 0 9.9 1.3"/><path d="M3 2.5v2.9h2.9M13 13.5v-2.9h-2.9"/>'
  )
});

/** Back: a chevron pointing left. */
export const backIcon = new LabIcon({
  name: 'jupyter-tasks:back',
  svgstr: svg('<path d="M10 3.5L5.5 8 10 12.5"/>')
});
