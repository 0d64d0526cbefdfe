import type { ITask } from '../types';

let counter = 0;

/** A task with sensible defaults; `overrides` wins. */
export function makeTask(overrides: Partial<ITask> = {}): ITask {
  counter += 1;
  const id = counter.toString(16).padStart(32, '0');
  return {
    task_id: id,
    task_type: 'python',
    description: `task ${counter}`,
    parameters: {},
    priority: 1,
    timeout_seconds: null,
    max_retries: 0,
    tags: [],
    status: 'created',
    group: null,
    attempt: 0,
    created_at: `2026-01-01T00:00:${String(counter % 60).padStart(2, '0')}.000000Z`,
    started_at: null,
    finished_at: null,
    progress: null,
    message: null,
    error: null,
    ...overrides
  };
}
