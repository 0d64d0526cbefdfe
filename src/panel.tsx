/**
 * The "Tasks" sidebar panel: a toolbar, the filters, and either the live list
 * or one task's details.
 */
import { ReactWidget } from '@jupyterlab/ui-components';
import { ISignal, Signal } from '@lumino/signaling';
import React, { useCallback, useMemo, useState } from 'react';

import { TaskActions } from './actions';
import { TaskDetails } from './details';
import { STATUS_LABELS } from './format';
import { useNow, useSignalFrame } from './hooks';
import { refreshIcon, submitIcon, tasksIcon } from './icons';
import { TaskList } from './list';
import type { ConnectionState, LiveTasks } from './live';
import {
  allTags,
  buildRows,
  EMPTY_FILTER,
  IFilter,
  Row,
  StatusFilter
} from './rows';
import type { TasksService } from './service';
import type { TaskStore } from './store';
import { TASK_STATUSES } from './types';

/** The DOM id of the panel (and of its sidebar tab's `data-id`). */
export const PANEL_ID = 'jupyter-tasks-panel';

/** What the panel needs. */
export interface ITasksPanelOptions {
  service: TasksService;
  store: TaskStore;
  live: LiveTasks;
  /** Opens the submit dialog. */
  onSubmit: () => void;
}

/** The sidebar panel. */
export class TasksPanel extends ReactWidget {
  constructor(options: ITasksPanelOptions) {
    super();
    this._options = options;
    this.id = PANEL_ID;
    this.addClass('jp-TasksPanel');
    this.title.icon = tasksIcon;
    this.title.caption = 'Tasks';
    this.actions = new TaskActions(options.service, options.store, id =>
      this.showDetails(id)
    );
  }

  /** Row and details actions (shared with commands). */
  readonly actions: TaskActions;

  /** The task whose details show, or null for the list. */
  get detailsId(): string | null {
    return this._detailsId;
  }

  /** Emitted when the view switches between the list and a task. */
  get viewChanged(): ISignal<this, string | null> {
    return this._viewChanged;
  }

  /** Show one task's details. */
  showDetails(taskId: string): void {
    this._detailsId = taskId;
    this._viewChanged.emit(taskId);
  }

  /** Go back to the list. */
  showList(): void {
    this._detailsId = null;
    this._viewChanged.emit(null);
  }

  protected render(): JSX.Element {
    return <TasksView {...this._options} panel={this} actions={this.actions} />;
  }

  private _options: ITasksPanelOptions;
  private _detailsId: string | null = null;
  private _viewChanged = new Signal<this, string | null>(this);
}

const CONNECTION_LABELS: Record<ConnectionState, string> = {
  connecting: 'Connecting\u2026',
  live: 'Live',
  polling: 'Reconnecting (polling)',
  stopped: 'Stopped'
};

function TasksView(
  props: ITasksPanelOptions & { panel: TasksPanel; actions: TaskActions }
): JSX.Element {
  const { store, live, panel } = props;
  useSignalFrame(store.changed);
  useSignalFrame(live.stateChanged);
  useSignalFrame(panel.viewChanged);
  const [filter, setFilter] = useState<IFilter>(EMPTY_FILTER);
  const [expanded, setExpanded] = useState<ReadonlySet<string>>(new Set());
  const [loadingMore, setLoadingMore] = useState(false);

  const version = store.version;
  const rows = useMemo(
    () => buildRows(store.tasks, filter, expanded),
    [version, filter, expanded]
  );
  const tags = useMemo(() => allTags(store.tasks), [version]);
  const counts = useMemo(() => store.counts(), [version]);
  const now = useNow(counts.queued + counts.running > 0);

  const onToggleGroup = useCallback((group: string) => {
    setExpanded(previous => {
      const next = new Set(previous);
      if (!next.delete(group)) {
        next.add(group);
      }
      return next;
    });
  }, []);

  if (panel.detailsId !== null) {
    return (
      <TaskDetails
        key={panel.detailsId}
        taskId={panel.detailsId}
        store={store}
        service={props.service}
        actions={props.actions}
        onBack={() => panel.showList()}
      />
    );
  }

  const loadMore = () => {
    setLoadingMore(true);
    live.loadMore().then(
      () => setLoadingMore(false),
      () => setLoadingMore(false)
    );
  };
  const filtered =
    filter.status !== 'all' || filter.tag !== '' || filter.text !== '';
  const error = live.lastError;

  return (
    <div className="jp-TasksView">
      <div className="jp-TasksToolbar">
        <h2 className="jp-TasksToolbar-title">Tasks</h2>
        <span
          className={`jp-TasksConnection jp-mod-${live.state}`}
          title={CONNECTION_LABELS[live.state]}
          role="status"
          aria-label={`Updates: ${CONNECTION_LABELS[live.state]}`}
        />
        <span className="jp-TasksToolbar-spacer" />
        <button
          type="button"
          className="jp-TasksIconButton"
          aria-label="Refresh"
          title="Refresh"
          onClick={() => void live.refresh()}
        >
          <refreshIcon.react tag="span" />
        </button>
        <button
          type="button"
          className="jp-TasksButton jp-mod-accept jp-TasksSubmitButton"
          aria-label="Submit a task"
          title="Submit a task"
          onClick={props.onSubmit}
        >
          <submitIcon.react tag="span" />
          <span>Submit</span>
        </button>
      </div>
      <FilterBar filter={filter} tags={tags} onChange={setFilter} />
      <div className="jp-TasksSummary">
        {counts.running} running {'\u00b7'} {counts.queued} queued
        {filtered ? ` \u00b7 ${shownCount(rows)} shown` : ''}
      </div>
      {error && (
        <div className="jp-TasksError" role="alert">
          {error.message}
        </div>
      )}
      <TaskList
        rows={rows}
        now={now}
        actions={props.actions}
        onToggleGroup={onToggleGroup}
        empty={
          !store.loaded
            ? 'Loading tasks\u2026'
            : filtered
              ? 'No task matches the filter.'
              : 'No tasks yet. Submit one with the button above or from a notebook.'
        }
        footer={
          live.hasMore && (
            <div className="jp-TasksList-footer">
              <button
                type="button"
                className="jp-TasksButton"
                onClick={loadMore}
                disabled={loadingMore}
              >
                {loadingMore ? 'Loading\u2026' : 'Load older tasks'}
              </button>
            </div>
          )
        }
      />
    </div>
  );
}

/** How many tasks the rows show (a folded group counts all its tasks). */
function shownCount(rows: Row[]): number {
  let count = 0;
  for (const row of rows) {
    if (row.kind === 'group') {
      count += row.tasks.length;
    } else if (row.level === 1) {
      count += 1;
    }
  }
  return count;
}

function FilterBar(props: {
  filter: IFilter;
  tags: string[];
  onChange: (filter: IFilter) => void;
}): JSX.Element {
  const { filter, onChange } = props;
  return (
    <div className="jp-TasksFilters" role="search">
      <input
        type="search"
        className="jp-TasksInput jp-TasksFilters-text"
        placeholder="Filter tasks"
        aria-label="Filter tasks by text"
        value={filter.text}
        onChange={event => onChange({ ...filter, text: event.target.value })}
      />
      <select
        className="jp-TasksInput"
        aria-label="Filter tasks by status"
        value={filter.status}
        onChange={event =>
          onChange({ ...filter, status: event.target.value as StatusFilter })
        }
      >
        <option value="all">All statuses</option>
        <option value="active">Unfinished</option>
        {TASK_STATUSES.map(status => (
          <option key={status} value={status}>
            {STATUS_LABELS[status]}
          </option>
        ))}
      </select>
      <select
        className="jp-TasksInput"
        aria-label="Filter tasks by tag"
        value={filter.tag}
        onChange={event => onChange({ ...filter, tag: event.target.value })}
      >
        <option value="">All tags</option>
        {(filter.tag && !props.tags.includes(filter.tag)
          ? [filter.tag, ...props.tags]
          : props.tags
        ).map(tag => (
          <option key={tag} value={tag}>
            {tag}
          </option>
        ))}
      </select>
    </div>
  );
}
