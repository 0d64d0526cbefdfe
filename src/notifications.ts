/**
 * Announce finished tasks through JupyterLab's notifications, without
 * flooding: a group (batch or sweep) is announced once, when its last task
 * finishes, and a burst of ungrouped tasks finishing together becomes one
 * summary.
 */
import { Notification } from '@jupyterlab/apputils';

import type { TaskStore } from './store';
import { isFinished, ITask } from './types';

/** Which finished tasks are announced. */
export type NotifyMode = 'all' | 'failures' | 'none';

/** Tasks finishing within this window (ms) are considered together. */
const BURST_WINDOW = 400;

/** More tasks than this in one window are announced as one summary. */
const BURST_LIMIT = 3;

/** Where the "Show" actions lead. */
export interface INotifierTargets {
  showTask: (taskId: string) => void;
  showPanel: () => void;
}

/** Turns the store's `finished` signal into notifications with a "Show" action. */
export class TaskNotifier {
  constructor(
    private readonly _store: TaskStore,
    private readonly _targets: INotifierTargets
  ) {
    _store.finished.connect(this._onFinished, this);
  }

  /** Which tasks to announce; a setting. */
  mode: NotifyMode = 'all';

  /** Stop announcing. */
  dispose(): void {
    this._store.finished.disconnect(this._onFinished, this);
    if (this._timer !== null) {
      clearTimeout(this._timer);
    }
  }

  private _onFinished(_: TaskStore, task: ITask): void {
    if (this.mode === 'none' || this._announced.has(task.task_id)) {
      return;
    }
    this._announced.add(task.task_id);
    if (task.group) {
      this._onGroupMember(task.group);
      return;
    }
    if (!this._wanted(task)) {
      return;
    }
    this._burst.push(task);
    if (this._timer === null) {
      this._timer = setTimeout(() => this._flush(), BURST_WINDOW);
    }
  }

  private _wanted(task: ITask): boolean {
    return (
      task.status === 'failed' ||
      (task.status === 'completed' && this.mode === 'all')
    );
  }

  private _flush(): void {
    this._timer = null;
    const tasks = this._burst;
    this._burst = [];
    if (tasks.length <= BURST_LIMIT) {
      tasks.forEach(task => this._announceTask(task));
    } else {
      this._announceSummary(`${tasks.length} tasks finished`, tasks);
    }
  }

  /** Announce a group once none of its tasks is left unfinished. */
  private _onGroupMember(group: string): void {
    const members: ITask[] = [];
    for (const task of this._store.tasks) {
      if (task.group === group) {
        if (!isFinished(task.status)) {
          return;
        }
        members.push(task);
      }
    }
    if (members.some(t => this._wanted(t))) {
      this._announceSummary(
        `Group of ${members.length} tasks finished`,
        members
      );
    }
  }

  private _announceTask(task: ITask): void {
    const actions = [
      {
        label: 'Show',
        caption: 'Show the task in the Tasks panel',
        callback: () => this._targets.showTask(task.task_id)
      }
    ];
    if (task.status === 'failed') {
      const reason = task.error
        ? `${task.error.type}: ${task.error.message}`
        : 'no error reported';
      Notification.error(`Task failed: ${task.description} (${reason})`, {
        autoClose: 15000,
        actions
      });
    } else {
      Notification.success(`Task completed: ${task.description}`, {
        autoClose: 5000,
        actions
      });
    }
  }

  private _announceSummary(title: string, tasks: ITask[]): void {
    const count = (status: ITask['status']) =>
      tasks.filter(t => t.status === status).length;
    const failed = count('failed');
    const parts = [`${count('completed')} completed`];
    if (failed) {
      parts.push(`${failed} failed`);
    }
    if (count('cancelled')) {
      parts.push(`${count('cancelled')} cancelled`);
    }
    const message = `${title}: ${parts.join(', ')}`;
    const options = {
      autoClose: failed ? 15000 : 5000,
      actions: [
        {
          label: 'Show',
          caption: 'Open the Tasks panel',
          callback: () => this._targets.showPanel()
        }
      ]
    };
    if (failed) {
      Notification.error(message, options);
    } else {
      Notification.success(message, options);
    }
  }

  private _announced = new Set<string>();
  private _burst: ITask[] = [];
  private _timer: ReturnType<typeof setTimeout> | null = null;
}
