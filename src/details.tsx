/**
 * One task in full: parameters, timestamps, error and traceback, the log tail
 * (followed while the task runs) and the result preview.
 */
import type { LabIcon } from '@jupyterlab/ui-components';
import React, { useEffect, useRef, useState } from 'react';

import type { TaskActions } from './actions';
import {
  formatDuration,
  formatTimestamp,
  parseTime,
  percent,
  STATUS_LABELS
} from './format';
import { useNow, useSignalFrame } from './hooks';
import {
  backIcon,
  cancelIcon,
  copyIdIcon,
  deleteIcon,
  rerunIcon
} from './icons';
import { ProgressBar, StatusIcon } from './row';
import type { TasksService } from './service';
import type { TaskStore } from './store';
import { IResultPreview, isFinished, ITask } from './types';

/** How often the log is read while the task runs (ms). */
const LOG_POLL_INTERVAL = 1000;

/** The most log text kept in the view: its tail. */
const LOG_TAIL_CHARS = 200_000;

/** Props of the details view. */
export interface ITaskDetailsProps {
  taskId: string;
  store: TaskStore;
  service: TasksService;
  actions: TaskActions;
  onBack: () => void;
}

/** The details of one task. */
export function TaskDetails(props: ITaskDetailsProps): JSX.Element {
  const { store, service, taskId } = props;
  useSignalFrame(store.changed);
  const task = store.get(taskId);
  const [missing, setMissing] = useState<string | null>(null);
  const heading = useRef<HTMLHeadingElement>(null);
  const seen = useRef(false);

  // A task deleted while shown (here or elsewhere): back to the list.
  useEffect(() => {
    if (task) {
      seen.current = true;
    } else if (seen.current) {
      seen.current = false;
      props.onBack();
    }
  }, [task]);

  useEffect(() => {
    heading.current?.focus();
  }, [taskId]);

  useEffect(() => {
    setMissing(null);
    if (store.get(taskId)) {
      return;
    }
    let live = true;
    service.get(taskId).then(
      t => store.merge([t], 'rest'),
      (reason: Error) => live && setMissing(reason.message)
    );
    return () => {
      live = false;
    };
  }, [taskId]);

  return (
    <div
      className="jp-TasksDetails"
      onKeyDown={event => {
        if (event.key === 'Escape') {
          event.stopPropagation();
          props.onBack();
        }
      }}
    >
      <div className="jp-TasksDetails-header">
        <button
          type="button"
          className="jp-TasksButton"
          onClick={props.onBack}
          aria-label="Back to the task list"
          title="Back to the task list"
        >
          <backIcon.react tag="span" />
          <span>Tasks</span>
        </button>
      </div>
      {task ? (
        <DetailsBody
          task={task}
          service={service}
          actions={props.actions}
          heading={heading}
        />
      ) : (
        <div className="jp-TasksDetails-missing" role="status">
          <h2 ref={heading} tabIndex={-1}>
            Task {taskId}
          </h2>
          <p>{missing ?? 'Loading\u2026'}</p>
        </div>
      )}
    </div>
  );
}

function DetailsBody(props: {
  task: ITask;
  service: TasksService;
  actions: TaskActions;
  heading: React.RefObject<HTMLHeadingElement>;
}): JSX.Element {
  const { task, actions } = props;
  const finished = isFinished(task.status);
  const now = useNow(!finished);
  const started = parseTime(task.started_at);
  const end = parseTime(task.finished_at) ?? now;
  const pct = percent(task.progress);
  return (
    <div className="jp-TasksDetails-body">
      <h2 className="jp-TasksDetails-title" ref={props.heading} tabIndex={-1}>
        <StatusIcon status={task.status} />
        <span>{task.description}</span>
      </h2>
      <div className="jp-TasksDetails-status" data-status={task.status}>
        <span className="jp-TasksDetails-statusLabel">
          {STATUS_LABELS[task.status]}
        </span>
        {(task.status === 'running' || task.progress !== null) && (
          <ProgressBar progress={task.progress} status={task.status} />
        )}
        <span>
          {pct !== null ? `${pct}%` : ''} {task.message ?? ''}
        </span>
      </div>
      <div className="jp-TasksDetails-actions">
        {actions.canCancel(task) && (
          <ActionButton
            icon={cancelIcon}
            label="Cancel"
            onClick={() => void actions.cancel(task)}
          />
        )}
        {finished && (
          <ActionButton
            icon={rerunIcon}
            label="Re-run"
            onClick={() =>
              void actions.rerun(task).then(created => {
                if (created) {
                  actions.show(created);
                }
              })
            }
          />
        )}
        {actions.canRemove(task) && (
          <ActionButton
            icon={deleteIcon}
            label="Delete"
            onClick={() => void actions.remove(task)}
          />
        )}
        <ActionButton
          icon={copyIdIcon}
          label="Copy id"
          onClick={() => actions.copyId(task)}
        />
      </div>
      {task.error && (
        <Section title="Error" className="jp-TasksDetails-error">
          <p className="jp-TasksDetails-errorLine">
            <strong>{task.error.type}</strong>: {task.error.message}
          </p>
          {task.error.traceback && (
            <pre className="jp-TasksDetails-traceback">
              {task.error.traceback}
            </pre>
          )}
        </Section>
      )}
      <Section title="Summary">
        <dl className="jp-TasksDetails-facts">
          <Fact name="Id" value={task.task_id} />
          <Fact name="Type" value={task.task_type} />
          <Fact name="Priority" value={String(task.priority)} />
          <Fact name="Attempt" value={String(task.attempt)} />
          <Fact name="Retries" value={String(task.max_retries)} />
          <Fact
            name="Timeout"
            value={
              task.timeout_seconds === null
                ? 'default'
                : `${task.timeout_seconds}s`
            }
          />
          <Fact name="Tags" value={task.tags.join(', ') || '\u2014'} />
          {task.group && <Fact name="Group" value={task.group} />}
          <Fact name="Created" value={formatTimestamp(task.created_at)} />
          <Fact name="Started" value={formatTimestamp(task.started_at)} />
          <Fact name="Finished" value={formatTimestamp(task.finished_at)} />
          <Fact
            name={finished ? 'Took' : 'Running for'}
            value={started === null ? '\u2014' : formatDuration(end - started)}
          />
        </dl>
      </Section>
      <Section title="Parameters">
        <pre className="jp-TasksDetails-json">
          {JSON.stringify(task.parameters, null, 2)}
        </pre>
      </Section>
      {task.status === 'completed' && (
        <Section title="Result">
          <ResultView service={props.service} taskId={task.task_id} />
        </Section>
      )}
      <Section title={finished ? 'Log' : 'Log (following)'}>
        <LogView
          service={props.service}
          taskId={task.task_id}
          following={!finished}
        />
      </Section>
    </div>
  );
}

function ActionButton(props: {
  icon: LabIcon;
  label: string;
  onClick: () => void;
}): JSX.Element {
  const Icon = props.icon;
  return (
    <button
      type="button"
      className="jp-TasksButton"
      onClick={props.onClick}
      aria-label={`${props.label} task`}
    >
      <Icon.react tag="span" />
      <span>{props.label}</span>
    </button>
  );
}

function Section(props: {
  title: string;
  className?: string;
  children: React.ReactNode;
}): JSX.Element {
  return (
    <section className={`jp-TasksDetails-section ${props.className ?? ''}`}>
      <h3>{props.title}</h3>
      {props.children}
    </section>
  );
}

function Fact(props: { name: string; value: string }): JSX.Element {
  return (
    <>
      <dt>{props.name}</dt>
      <dd>{props.value}</dd>
    </>
  );
}

/** The result preview: its type, its repr, and its JSON value if any. */
function ResultView(props: {
  service: TasksService;
  taskId: string;
}): JSX.Element {
  const [result, setResult] = useState<IResultPreview | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    setResult(null);
    setError(null);
    props.service.result(props.taskId).then(
      r => live && setResult(r),
      (reason: Error) => live && setError(reason.message)
    );
    return () => {
      live = false;
    };
  }, [props.taskId]);
  if (error) {
    return <p className="jp-TasksDetails-note">{error}</p>;
  }
  if (!result) {
    return <p className="jp-TasksDetails-note">Loading{'\u2026'}</p>;
  }
  return (
    <div className="jp-TasksDetails-result">
      <p className="jp-TasksDetails-note">
        Type <code>{result.type}</code>
      </p>
      <pre className="jp-TasksDetails-json">
        {'value' in result && result.value !== undefined
          ? JSON.stringify(result.value, null, 2)
          : result.repr}
      </pre>
    </div>
  );
}

/**
 * The log's tail, read from `offset` on; while `following`, read again every
 * second, and once more after the task finishes.
 */
function LogView(props: {
  service: TasksService;
  taskId: string;
  following: boolean;
}): JSX.Element {
  const { service, taskId, following } = props;
  const [text, setText] = useState('');
  const [error, setError] = useState<string | null>(null);
  const offset = useRef(0);
  const pre = useRef<HTMLPreElement>(null);
  const stick = useRef(true);

  useEffect(() => {
    offset.current = 0;
    setText('');
  }, [taskId]);

  useEffect(() => {
    let live = true;
    let timer: ReturnType<typeof setTimeout> | null = null;
    const read = async (): Promise<void> => {
      try {
        // Drain what is there now (the server sends at most a chunk per call).
        for (let i = 0; i < 50 && live; i++) {
          const chunk = await service.logs(taskId, offset.current);
          if (!live) {
            return;
          }
          const moved = chunk.nextOffset !== offset.current;
          offset.current = chunk.nextOffset;
          if (chunk.text) {
            setText(t => (t + chunk.text).slice(-LOG_TAIL_CHARS));
          }
          if (!moved || !chunk.text) {
            break;
          }
        }
        setError(null);
      } catch (reason) {
        if (live) {
          setError((reason as Error).message);
        }
      }
      if (live && following) {
        timer = setTimeout(() => void read(), LOG_POLL_INTERVAL);
      }
    };
    void read();
    return () => {
      live = false;
      if (timer !== null) {
        clearTimeout(timer);
      }
    };
  }, [taskId, following]);

  useEffect(() => {
    const node = pre.current;
    if (node && stick.current) {
      node.scrollTop = node.scrollHeight;
    }
  }, [text]);

  return (
    <>
      {error && <p className="jp-TasksDetails-note">{error}</p>}
      <pre
        ref={pre}
        className="jp-TasksDetails-log"
        aria-label="Task log"
        tabIndex={0}
        onScroll={event => {
          const node = event.currentTarget;
          stick.current =
            node.scrollTop + node.clientHeight >= node.scrollHeight - 8;
        }}
      >
        {text || (following ? 'Waiting for output\u2026' : 'No output.')}
      </pre>
    </>
  );
}
