/**
 * The tasks the browser knows about, merged from REST pages and live events.
 */
import { ISignal, Signal } from '@lumino/signaling';

import { isFinished, ITask, ITaskEvent } from './types';

/**
 * Where a task update came from. Events are ordered and always win; REST
 * answers may be older than an event already applied, so they never move a
 * finished task back to an unfinished state.
 */
export type UpdateSource = 'rest' | 'event';

/** The known tasks by id, with change signals. */
export class TaskStore {
  /** Emitted after any change (possibly many times per frame). */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /**
   * Emitted when a task is seen to reach a final status while the browser
   * watches (not for tasks that were already finished when first loaded).
   */
  get finished(): ISignal<this, ITask> {
    return this._finished;
  }

  /** Bumped on every change: a cheap way for views to know they are stale. */
  get version(): number {
    return this._version;
  }

  /** True once the first page of tasks has arrived. */
  get loaded(): boolean {
    return this._loaded;
  }

  set loaded(value: boolean) {
    if (value !== this._loaded) {
      this._loaded = value;
      this._touch();
    }
  }

  /** The known tasks, in no particular order. */
  get tasks(): IterableIterator<ITask> {
    return this._tasks.values();
  }

  /** How many tasks are known. */
  get size(): number {
    return this._tasks.size;
  }

  /** One task, or undefined. */
  get(taskId: string): ITask | undefined {
    return this._tasks.get(taskId);
  }

  /** Counts of queued (`created`) and running tasks. */
  counts(): { queued: number; running: number } {
    let queued = 0;
    let running = 0;
    for (const task of this._tasks.values()) {
      if (task.status === 'created') {
        queued += 1;
      } else if (task.status === 'running') {
        running += 1;
      }
    }
    return { queued, running };
  }

  /** Ids of the tasks not yet finished. */
  unfinishedIds(): string[] {
    const ids: string[] = [];
    for (const task of this._tasks.values()) {
      if (!isFinished(task.status)) {
        ids.push(task.task_id);
      }
    }
    return ids;
  }

  /** Merge a batch of tasks; returns how many changed. */
  merge(tasks: readonly ITask[], source: UpdateSource): number {
    let changed = 0;
    for (const task of tasks) {
      if (this._put(task, source)) {
        changed += 1;
      }
    }
    if (changed) {
      this._touch();
    }
    return changed;
  }

  /**
   * Apply the socket's snapshot (the unfinished tasks). Returns the ids of
   * tasks the store holds as unfinished that the snapshot lacks: they finished
   * or were deleted while the browser was not listening.
   */
  applySnapshot(tasks: readonly ITask[]): string[] {
    this.merge(tasks, 'event');
    const present = new Set(tasks.map(t => t.task_id));
    return this.unfinishedIds().filter(id => !present.has(id));
  }

  /** Apply one live event. */
  applyEvent(event: ITaskEvent): void {
    if (event.event === 'deleted') {
      this.remove(event.task_id);
      return;
    }
    if (event.task) {
      this.merge([event.task], 'event');
      return;
    }
    const known = this._tasks.get(event.task_id);
    if (!known) {
      return;
    }
    const patched: ITask = { ...known };
    if (event.status !== undefined) {
      patched.status = event.status;
    }
    if (event.progress !== undefined) {
      patched.progress = event.progress;
    }
    if (event.message !== undefined) {
      patched.message = event.message;
    }
    this.merge([patched], 'event');
  }

  /** Forget a task. */
  remove(taskId: string): void {
    if (this._tasks.delete(taskId)) {
      this._touch();
    }
  }

  private _put(task: ITask, source: UpdateSource): boolean {
    const known = this._tasks.get(task.task_id);
    if (known) {
      if (
        source !== 'event' &&
        isFinished(known.status) &&
        !isFinished(task.status)
      ) {
        return false;
      }
      if (sameState(known, task)) {
        return false;
      }
    }
    this._tasks.set(task.task_id, task);
    const wasFinished = known ? isFinished(known.status) : false;
    const seenLive = known !== undefined || source === 'event';
    if (seenLive && !wasFinished && isFinished(task.status)) {
      this._finished.emit(task);
    }
    return true;
  }

  private _touch(): void {
    this._version += 1;
    this._changed.emit();
  }

  private _tasks = new Map<string, ITask>();
  private _version = 0;
  private _loaded = false;
  private _changed = new Signal<this, void>(this);
  private _finished = new Signal<this, ITask>(this);
}

/** True when two versions of a task would render the same. */
function sameState(a: ITask, b: ITask): boolean {
  return (
    a.status === b.status &&
    a.progress === b.progress &&
    a.message === b.message &&
    a.attempt === b.attempt &&
    a.started_at === b.started_at &&
    a.finished_at === b.finished_at &&
    (a.error?.message ?? null) === (b.error?.message ?? null) &&
    a.description === b.description &&
    a.tags.length === b.tags.length
  );
}
