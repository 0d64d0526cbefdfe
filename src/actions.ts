/**
 * What a user can do to a task, with the server's message shown on failure.
 */
import {
  Clipboard,
  Dialog,
  Notification,
  showDialog
} from '@jupyterlab/apputils';

import type { TasksService } from './service';
import type { TaskStore } from './store';
import { isFinished, ITask } from './types';

/** The row and details actions. */
export class TaskActions {
  constructor(
    private readonly _service: TasksService,
    private readonly _store: TaskStore,
    private readonly _onShow: (taskId: string) => void
  ) {}

  /** Whether `cancel` applies (the task has not finished). */
  canCancel(task: ITask): boolean {
    return task.status === 'created' || task.status === 'running';
  }

  /** Whether `remove` applies (the task has finished). */
  canRemove(task: ITask): boolean {
    return isFinished(task.status);
  }

  /** Stop a queued or running task. */
  async cancel(task: ITask): Promise<void> {
    await this._run(`cancel "${task.description}"`, async () => {
      this._store.merge([await this._service.cancel(task.task_id)], 'rest');
    });
  }

  /** Submit the same request again; the new task shows at the top. */
  async rerun(task: ITask): Promise<ITask | null> {
    let created: ITask | null = null;
    await this._run(`re-run "${task.description}"`, async () => {
      created = await this._service.rerun(task.task_id);
      this._store.merge([created], 'rest');
    });
    return created;
  }

  /** Forget a finished task, its result and its log, after asking. */
  async remove(task: ITask): Promise<void> {
    const answer = await showDialog({
      title: 'Delete task',
      body: `Delete "${task.description}" with its result and log?`,
      buttons: [
        Dialog.cancelButton(),
        Dialog.warnButton({ label: 'Delete', ariaLabel: 'Delete task' })
      ]
    });
    if (!answer.button.accept) {
      return;
    }
    await this._run(`delete "${task.description}"`, async () => {
      await this._service.remove(task.task_id);
      this._store.remove(task.task_id);
    });
  }

  /** Put the task id on the clipboard. */
  copyId(task: ITask): void {
    Clipboard.copyToSystem(task.task_id);
    Notification.info(`Copied task id ${task.task_id}`, { autoClose: 2000 });
  }

  /** Open the task's details. */
  show(task: ITask): void {
    this._onShow(task.task_id);
  }

  private async _run(what: string, action: () => Promise<void>): Promise<void> {
    try {
      await action();
    } catch (reason) {
      Notification.error(`Could not ${what}: ${(reason as Error).message}`, {
        autoClose: 10000
      });
    }
  }
}
