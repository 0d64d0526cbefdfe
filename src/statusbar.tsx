/**
 * The status bar item: running and queued counts; a click opens the panel.
 */
import { ReactWidget } from '@jupyterlab/ui-components';
import React from 'react';

import { useSignalFrame } from './hooks';
import { tasksIcon } from './icons';
import type { TaskStore } from './store';

function TasksStatusView(props: {
  store: TaskStore;
  onOpen: () => void;
}): JSX.Element {
  useSignalFrame(props.store.changed);
  const { running, queued } = props.store.counts();
  const label = `Tasks: ${running} running, ${queued} queued. Open the Tasks panel.`;
  return (
    <div
      className="jp-TasksStatus"
      role="button"
      tabIndex={0}
      aria-label={label}
      title={label}
      onClick={props.onOpen}
      onKeyDown={event => {
        if (event.key === 'Enter' || event.key === ' ') {
          event.preventDefault();
          props.onOpen();
        }
      }}
    >
      <tasksIcon.react tag="span" className="jp-TasksStatus-icon" />
      <span className="jp-TasksStatus-running">{running} running</span>
      <span className="jp-TasksStatus-queued">{queued} queued</span>
    </div>
  );
}

/** The status bar widget. */
export class TasksStatusItem extends ReactWidget {
  constructor(
    private readonly _store: TaskStore,
    private readonly _onOpen: () => void
  ) {
    super();
    this.addClass('jp-TasksStatusItem');
  }

  protected render(): JSX.Element {
    return <TasksStatusView store={this._store} onOpen={this._onOpen} />;
  }
}
