import assert from 'node:assert/strict';
import { test } from 'node:test';

import { TaskStore } from '../store';
import type { ITask } from '../types';
import { makeTask } from './helpers';

function finishedOf(store: TaskStore): ITask[] {
  const seen: ITask[] = [];
  store.finished.connect((_, task) => seen.push(task));
  return seen;
}

test('tasks already finished when listed do not count as finishing', () => {
  const store = new TaskStore();
  const seen = finishedOf(store);
  store.merge([makeTask({ status: 'completed' })], 'rest');
  assert.equal(seen.length, 0);
});

test('a task seen running and then completed is announced once', () => {
  const store = new TaskStore();
  const seen = finishedOf(store);
  const task = makeTask({ status: 'running' });
  store.merge([task], 'rest');
  const done = { ...task, status: 'completed' as const, progress: 1 };
  store.applyEvent({
    event: 'transition',
    seq: 1,
    task_id: task.task_id,
    task: done
  });
  store.applyEvent({
    event: 'transition',
    seq: 2,
    task_id: task.task_id,
    task: done
  });
  assert.equal(seen.length, 1);
  assert.equal(store.get(task.task_id)?.status, 'completed');
});

test('a stale REST answer never moves a finished task back', () => {
  const store = new TaskStore();
  const task = makeTask({ status: 'running' });
  store.merge([{ ...task, status: 'failed' }], 'event');
  store.merge([task], 'rest');
  assert.equal(store.get(task.task_id)?.status, 'failed');
});

test('progress events without a task patch the known one', () => {
  const store = new TaskStore();
  const task = makeTask({ status: 'running' });
  store.merge([task], 'rest');
  const before = store.version;
  store.applyEvent({
    event: 'progress',
    seq: 3,
    task_id: task.task_id,
    progress: 0.25,
    message: 'step 1/4'
  });
  assert.equal(store.get(task.task_id)?.progress, 0.25);
  assert.equal(store.get(task.task_id)?.message, 'step 1/4');
  assert.ok(store.version > before);
});

test('snapshot reports the unfinished tasks it no longer lists', () => {
  const store = new TaskStore();
  const gone = makeTask({ status: 'running' });
  const still = makeTask({ status: 'created' });
  store.merge([gone, still], 'rest');
  const stale = store.applySnapshot([{ ...still, status: 'running' }]);
  assert.deepEqual(stale, [gone.task_id]);
  assert.deepEqual(store.counts(), { queued: 0, running: 2 });
});

test('deleted events forget the task', () => {
  const store = new TaskStore();
  const task = makeTask({ status: 'completed' });
  store.merge([task], 'rest');
  store.applyEvent({ event: 'deleted', seq: 9, task_id: task.task_id });
  assert.equal(store.get(task.task_id), undefined);
});
