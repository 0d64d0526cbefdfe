/**
 * One row of the task list: a task, or a group folded into one aggregate row.
 */
import type { LabIcon } from '@jupyterlab/ui-components';
import React from 'react';

import type { TaskActions } from './actions';
import {
  formatDuration,
  parseTime,
  percent,
  STATUS_LABELS,
  timeLabel
} from './format';
import {
  cancelIcon,
  chevronIcon,
  copyIdIcon,
  deleteIcon,
  detailsIcon,
  rerunIcon,
  STATUS_ICONS
} from './icons';
import type { IGroupSummary } from './rows';
import { isFinished, ITask, TaskStatus } from './types';

/** A progress bar; indeterminate while running without reported progress. */
export function ProgressBar(props: {
  progress: number | null;
  status: TaskStatus;
  label?: string;
}): JSX.Element {
  const value = props.status === 'completed' ? 100 : percent(props.progress);
  const indeterminate = value === null && props.status === 'running';
  return (
    <div
      className={`jp-TasksProgress jp-mod-${props.status}${
        indeterminate ? ' jp-mod-indeterminate' : ''
      }`}
      role="progressbar"
      aria-label={props.label ?? 'Progress'}
      aria-valuemin={0}
      aria-valuemax={100}
      aria-valuenow={value ?? undefined}
    >
      <div
        className="jp-TasksProgress-fill"
        style={{ width: `${value ?? 0}%` }}
      />
    </div>
  );
}

/** A status icon with its name for screen readers. */
export function StatusIcon(props: { status: TaskStatus }): JSX.Element {
  const Icon = STATUS_ICONS[props.status];
  return (
    <span
      className={`jp-TasksStatusIcon jp-mod-${props.status}`}
      title={STATUS_LABELS[props.status]}
      role="img"
      aria-label={STATUS_LABELS[props.status]}
    >
      <Icon.react tag="span" />
    </span>
  );
}

/** A small labelled icon button. */
export function IconButton(props: {
  icon: LabIcon;
  label: string;
  onClick: () => void;
  focusable: boolean;
  className?: string;
}): JSX.Element {
  const Icon = props.icon;
  return (
    <button
      type="button"
      className={`jp-TasksIconButton ${props.className ?? ''}`}
      aria-label={props.label}
      title={props.label}
      tabIndex={props.focusable ? 0 : -1}
      onClick={event => {
        event.stopPropagation();
        props.onClick();
      }}
      onKeyDown={event => event.stopPropagation()}
      onDoubleClick={event => event.stopPropagation()}
    >
      <Icon.react tag="span" />
    </button>
  );
}

/** Common props of both row kinds. */
interface IRowBase {
  index: number;
  top: number;
  height: number;
  setSize: number;
  active: boolean;
  onActivate: (index: number) => void;
}

/** Props of a task row. */
export interface ITaskRowProps extends IRowBase {
  task: ITask;
  level: 1 | 2;
  /** The time to measure running tasks against; 0 for finished tasks. */
  now: number;
  actions: TaskActions;
}

/** A task row: status, description, type, priority, progress, time, actions. */
export const TaskRow = React.memo(function TaskRow(
  props: ITaskRowProps
): JSX.Element {
  const { task, actions, active } = props;
  const detail =
    task.status === 'failed' && task.error
      ? `${task.error.type}: ${task.error.message}`
      : (task.message ?? '');
  return (
    <div
      className={`jp-TasksRow jp-mod-${task.status}${
        active ? ' jp-mod-active' : ''
      }${props.level === 2 ? ' jp-mod-child' : ''}`}
      style={{ top: props.top, height: props.height }}
      role="treeitem"
      aria-level={props.level}
      aria-setsize={props.setSize}
      aria-posinset={props.index + 1}
      aria-selected={active}
      aria-label={`${task.description}, ${STATUS_LABELS[task.status]}`}
      tabIndex={active ? 0 : -1}
      data-index={props.index}
      data-key={task.task_id}
      data-task-id={task.task_id}
      data-status={task.status}
      onClick={() => props.onActivate(props.index)}
      onDoubleClick={() => actions.show(task)}
    >
      <div className="jp-TasksRow-line">
        <StatusIcon status={task.status} />
        <span className="jp-TasksRow-description" title={task.description}>
          {task.description}
        </span>
        <span className="jp-TasksRow-time">
          {timeLabel(task, props.now || Date.now())}
        </span>
      </div>
      <div className="jp-TasksRow-line jp-TasksRow-meta">
        <span className="jp-TasksRow-type">{task.task_type}</span>
        <span className="jp-TasksRow-priority" title="Priority">
          P{task.priority}
        </span>
        <ProgressBar progress={task.progress} status={task.status} />
        <span className="jp-TasksRow-message" title={detail}>
          {detail}
        </span>
      </div>
      <div className="jp-TasksRow-actions">
        {actions.canCancel(task) && (
          <IconButton
            icon={cancelIcon}
            label="Cancel task"
            focusable={active}
            onClick={() => void actions.cancel(task)}
          />
        )}
        {isFinished(task.status) && (
          <IconButton
            icon={rerunIcon}
            label="Re-run task"
            focusable={active}
            onClick={() => void actions.rerun(task)}
          />
        )}
        {actions.canRemove(task) && (
          <IconButton
            icon={deleteIcon}
            label="Delete task"
            focusable={active}
            onClick={() => void actions.remove(task)}
          />
        )}
        <IconButton
          icon={copyIdIcon}
          label="Copy task id"
          focusable={active}
          onClick={() => actions.copyId(task)}
        />
        <IconButton
          icon={detailsIcon}
          label="Show details"
          focusable={active}
          onClick={() => actions.show(task)}
        />
      </div>
    </div>
  );
});

/** Props of a group row. */
export interface IGroupRowProps extends IRowBase {
  group: string;
  summary: IGroupSummary;
  expanded: boolean;
  now: number;
  onToggle: (group: string) => void;
}

/** What a group's counts say, e.g. `2 running · 5 done · 1 failed`. */
export function countsText(summary: IGroupSummary): string {
  const c = summary.counts;
  const parts: string[] = [];
  if (c.running) {
    parts.push(`${c.running} running`);
  }
  if (c.created) {
    parts.push(`${c.created} queued`);
  }
  if (c.completed) {
    parts.push(`${c.completed} done`);
  }
  if (c.failed) {
    parts.push(`${c.failed} failed`);
  }
  if (c.cancelled) {
    parts.push(`${c.cancelled} cancelled`);
  }
  return parts.join(' \u00b7 ');
}

/** How long a group has run, or took. */
function groupTime(summary: IGroupSummary, now: number): string {
  const start = parseTime(summary.started_at ?? summary.created_at);
  if (start === null) {
    return '';
  }
  const end = parseTime(summary.finished_at) ?? now;
  return formatDuration(end - start);
}

/** A folded group: counts, aggregate progress, a toggle to show its tasks. */
export const GroupRow = React.memo(function GroupRow(
  props: IGroupRowProps
): JSX.Element {
  const { summary, active } = props;
  const Chevron = chevronIcon;
  const title = `${summary.count} tasks \u00b7 ${summary.taskTypes.join(', ')}`;
  return (
    <div
      className={`jp-TasksRow jp-TasksGroupRow jp-mod-${summary.status}${
        active ? ' jp-mod-active' : ''
      }${props.expanded ? ' jp-mod-expanded' : ''}`}
      style={{ top: props.top, height: props.height }}
      role="treeitem"
      aria-level={1}
      aria-setsize={props.setSize}
      aria-posinset={props.index + 1}
      aria-selected={active}
      aria-expanded={props.expanded}
      aria-label={`Group of ${summary.count} tasks: ${countsText(summary)}`}
      tabIndex={active ? 0 : -1}
      data-index={props.index}
      data-key={`group:${props.group}`}
      data-group={props.group}
      data-status={summary.status}
      onClick={() => props.onActivate(props.index)}
      onDoubleClick={() => props.onToggle(props.group)}
    >
      <div className="jp-TasksRow-line">
        <button
          type="button"
          className="jp-TasksIconButton jp-TasksGroupRow-toggle"
          aria-label={props.expanded ? 'Collapse group' : 'Expand group'}
          title={props.expanded ? 'Collapse group' : 'Expand group'}
          tabIndex={-1}
          onClick={event => {
            event.stopPropagation();
            props.onToggle(props.group);
          }}
        >
          <Chevron.react tag="span" />
        </button>
        <StatusIcon status={summary.status} />
        <span className="jp-TasksRow-description" title={title}>
          {title}
        </span>
        <span className="jp-TasksRow-time">
          {groupTime(summary, props.now || Date.now())}
        </span>
      </div>
      <div className="jp-TasksRow-line jp-TasksRow-meta">
        <ProgressBar
          progress={summary.progress}
          status={summary.status}
          label="Group progress"
        />
        <span className="jp-TasksRow-message">{countsText(summary)}</span>
      </div>
    </div>
  );
});
