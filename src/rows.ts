/**
 * From the set of known tasks to the rows the list shows: filtered, newest
 * first, with each group (a batch or sweep) folded into one aggregate row.
 */
import { isFinished, ITask, TaskStatus } from './types';

/** Which statuses the list shows: all, the unfinished ones, or one status. */
export type StatusFilter = 'all' | 'active' | TaskStatus;

/** The panel's filter. */
export interface IFilter {
  status: StatusFilter;
  /** A tag the task must carry; empty for any. */
  tag: string;
  /** Words that must all appear in the description, type, id or tags. */
  text: string;
}

/** The filter that lets everything through. */
export const EMPTY_FILTER: IFilter = { status: 'all', tag: '', text: '' };

/** What a group row says about its tasks. */
export interface IGroupSummary {
  count: number;
  counts: Record<TaskStatus, number>;
  /** The status the group shows: running, then queued, failed, cancelled, completed. */
  status: TaskStatus;
  /** Mean progress, finished tasks counting as done. */
  progress: number;
  taskTypes: string[];
  /** Earliest creation, earliest start and latest finish (ISO strings). */
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  /** Newest creation, which places the group in the list. */
  newest: string;
}

/** One row of the list. */
export type Row =
  | { kind: 'task'; key: string; task: ITask; level: 1 | 2 }
  | {
      kind: 'group';
      key: string;
      group: string;
      tasks: ITask[];
      summary: IGroupSummary;
      expanded: boolean;
    };

/** Newest first; ties broken by id so the order is stable. */
export function compareNewestFirst(a: ITask, b: ITask): number {
  if (a.created_at !== b.created_at) {
    return a.created_at < b.created_at ? 1 : -1;
  }
  return a.task_id < b.task_id ? 1 : a.task_id > b.task_id ? -1 : 0;
}

/** Newest creation first; 0 for the same creation time. */
function compareCreated(a: ITask, b: ITask): number {
  return a.created_at === b.created_at
    ? 0
    : a.created_at < b.created_at
      ? 1
      : -1;
}

/** True when `task` passes `filter`. */
export function matches(task: ITask, filter: IFilter): boolean {
  if (filter.status === 'active') {
    if (isFinished(task.status)) {
      return false;
    }
  } else if (filter.status !== 'all' && task.status !== filter.status) {
    return false;
  }
  if (filter.tag && !task.tags.includes(filter.tag)) {
    return false;
  }
  const words = filter.text.toLowerCase().split(/\s+/).filter(Boolean);
  if (words.length === 0) {
    return true;
  }
  const haystack = [
    task.description,
    task.task_type,
    task.task_id,
    task.message ?? '',
    ...task.tags
  ]
    .join('\n')
    .toLowerCase();
  return words.every(word => haystack.includes(word));
}

/** The aggregate of a group's tasks. */
export function summarize(tasks: readonly ITask[]): IGroupSummary {
  const counts: Record<TaskStatus, number> = {
    created: 0,
    running: 0,
    completed: 0,
    failed: 0,
    cancelled: 0
  };
  const types = new Set<string>();
  let progress = 0;
  let created = '';
  let newest = '';
  let started: string | null = null;
  let finished: string | null = null;
  let allFinished = true;
  for (const task of tasks) {
    counts[task.status] += 1;
    types.add(task.task_type);
    progress += isFinished(task.status) ? 1 : (task.progress ?? 0);
    if (!created || task.created_at < created) {
      created = task.created_at;
    }
    if (task.created_at > newest) {
      newest = task.created_at;
    }
    if (task.started_at && (!started || task.started_at < started)) {
      started = task.started_at;
    }
    if (!isFinished(task.status)) {
      allFinished = false;
    } else if (task.finished_at && (!finished || task.finished_at > finished)) {
      finished = task.finished_at;
    }
  }
  const order: TaskStatus[] = [
    'running',
    'created',
    'failed',
    'cancelled',
    'completed'
  ];
  const status = order.find(s => counts[s] > 0) ?? 'completed';
  return {
    count: tasks.length,
    counts,
    status,
    progress: tasks.length ? progress / tasks.length : 0,
    taskTypes: [...types].sort(),
    created_at: created,
    started_at: started,
    finished_at: allFinished ? finished : null,
    newest
  };
}

/**
 * The rows to show: tasks passing the filter, newest first; tasks sharing a
 * group fold into one row (placed by its newest task) whose members follow
 * it, indented, when the group is in `expanded`.
 */
export function buildRows(
  tasks: Iterable<ITask>,
  filter: IFilter,
  expanded: ReadonlySet<string>
): Row[] {
  const groups = new Map<string, ITask[]>();
  const top: ITask[] = [];
  for (const task of tasks) {
    if (!matches(task, filter)) {
      continue;
    }
    if (task.group) {
      const members = groups.get(task.group);
      if (members) {
        members.push(task);
      } else {
        groups.set(task.group, [task]);
      }
    } else {
      top.push(task);
    }
  }
  type Entry = { newest: string; id: string; row: Row; members?: ITask[] };
  const entries: Entry[] = top.map(task => ({
    newest: task.created_at,
    id: task.task_id,
    row: { kind: 'task', key: task.task_id, task, level: 1 }
  }));
  for (const [group, members] of groups) {
    // A batch's tasks share one creation time: then list them by description.
    members.sort(
      (a, b) =>
        compareCreated(a, b) ||
        a.description.localeCompare(b.description, undefined, {
          numeric: true
        }) ||
        compareNewestFirst(a, b)
    );
    const summary = summarize(members);
    const isOpen = expanded.has(group);
    entries.push({
      newest: summary.newest,
      id: group,
      members: isOpen ? members : undefined,
      row: {
        kind: 'group',
        key: `group:${group}`,
        group,
        tasks: members,
        summary,
        expanded: isOpen
      }
    });
  }
  entries.sort((a, b) =>
    a.newest !== b.newest
      ? a.newest < b.newest
        ? 1
        : -1
      : a.id < b.id
        ? 1
        : a.id > b.id
          ? -1
          : 0
  );
  const rows: Row[] = [];
  for (const entry of entries) {
    rows.push(entry.row);
    for (const task of entry.members ?? []) {
      rows.push({ kind: 'task', key: task.task_id, task, level: 2 });
    }
  }
  return rows;
}

/** Every tag the tasks carry, sorted. */
export function allTags(tasks: Iterable<ITask>): string[] {
  const tags = new Set<string>();
  for (const task of tasks) {
    for (const tag of task.tags) {
      tags.add(tag);
    }
  }
  return [...tags].sort();
}
