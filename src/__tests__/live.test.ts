import assert from 'node:assert/strict';
import { test } from 'node:test';

import { backoffDelay, ITasksSource, LiveTasks, parseMessage } from '../live';
import { TaskStore } from '../store';
import type { ITask, ITaskPage, ITaskQuery } from '../types';
import { makeTask } from './helpers';

/** A stand-in for the browser's WebSocket that tests drive by hand. */
class FakeSocket {
  onopen: (() => void) | null = null;
  onmessage: ((event: { data: string }) => void) | null = null;
  onclose: ((event: { code: number }) => void) | null = null;
  onerror: (() => void) | null = null;
  closed = false;

  open(): void {
    this.onopen?.();
  }
  send(message: object): void {
    this.onmessage?.({ data: JSON.stringify(message) });
  }
  drop(code = 1006): void {
    this.onclose?.({ code });
  }
  close(): void {
    this.closed = true;
  }
}

/** A server holding tasks in memory, counting the calls it gets. */
class FakeSource implements ITasksSource {
  tasks = new Map<string, ITask>();
  sockets: FakeSocket[] = [];
  listCalls: ITaskQuery[] = [];
  getCalls: string[] = [];

  async list(query: ITaskQuery = {}): Promise<ITaskPage> {
    this.listCalls.push(query);
    let tasks = [...this.tasks.values()];
    if (query.status) {
      tasks = tasks.filter(t => query.status!.includes(t.status));
    }
    return { tasks, next: null };
  }
  async get(taskId: string): Promise<ITask> {
    this.getCalls.push(taskId);
    const task = this.tasks.get(taskId);
    if (!task) {
      throw Object.assign(new Error('not found'), { status: 404 });
    }
    return task;
  }
  openEvents(): WebSocket {
    const socket = new FakeSocket();
    this.sockets.push(socket);
    return socket as unknown as WebSocket;
  }
  get socket(): FakeSocket {
    return this.sockets[this.sockets.length - 1];
  }
}

/** Resolve once `check` holds; fail after `timeout` ms. */
async function until(check: () => boolean, timeout = 2000): Promise<void> {
  const end = Date.now() + timeout;
  while (!check()) {
    if (Date.now() > end) {
      throw new Error('condition not met in time');
    }
    await new Promise(resolve => setTimeout(resolve, 2));
  }
}

function setup(): { source: FakeSource; store: TaskStore; live: LiveTasks } {
  const source = new FakeSource();
  const store = new TaskStore();
  const live = new LiveTasks(source, store, {
    baseDelay: 5,
    maxDelay: 20,
    pollInterval: 10,
    connectTimeout: 200,
    gapResyncInterval: 0,
    random: () => 0.5
  });
  return { source, store, live };
}

test('backoff doubles, caps and jitters', () => {
  assert.equal(
    backoffDelay(0, 1000, 30000, () => 0.999999),
    1000
  );
  assert.equal(
    backoffDelay(3, 1000, 30000, () => 0.999999),
    8000
  );
  assert.equal(
    backoffDelay(10, 1000, 30000, () => 0.999999),
    30000
  );
  assert.equal(
    backoffDelay(3, 1000, 30000, () => 0),
    4000
  );
});

test('parseMessage keeps only messages it understands', () => {
  assert.equal(parseMessage('nope'), null);
  assert.equal(parseMessage('{"event": "other"}'), null);
  assert.equal(parseMessage(new ArrayBuffer(1)), null);
  assert.deepEqual(parseMessage('{"event": "snapshot", "tasks": []}'), {
    event: 'snapshot',
    tasks: []
  });
});

test('snapshot then live events update the store; repeats are dropped', async () => {
  const { source, store, live } = setup();
  const task = makeTask({ status: 'running' });
  source.tasks.set(task.task_id, task);
  live.start();
  await until(() => store.loaded);
  source.socket.open();
  assert.equal(live.state, 'live');
  source.socket.send({ event: 'snapshot', tasks: [task] });
  source.socket.send({
    event: 'progress',
    seq: 1,
    task_id: task.task_id,
    task: { ...task, progress: 0.5 }
  });
  source.socket.send({
    event: 'progress',
    seq: 1,
    task_id: task.task_id,
    task: { ...task, progress: 0.1 }
  });
  assert.equal(store.get(task.task_id)?.progress, 0.5);
  live.dispose();
  assert.ok(source.socket.closed);
  assert.equal(live.state, 'stopped');
});

test('a lost socket reconnects and resyncs what changed meanwhile', async () => {
  const { source, store, live } = setup();
  const task = makeTask({ status: 'running' });
  source.tasks.set(task.task_id, task);
  live.start();
  await until(() => store.loaded);
  const first = source.socket;
  first.open();
  first.send({ event: 'snapshot', tasks: [task] });
  first.drop();
  assert.equal(live.state, 'connecting');
  // Meanwhile the task finishes on the server.
  source.tasks.set(task.task_id, { ...task, status: 'completed', progress: 1 });
  await until(() => source.sockets.length === 2);
  const calls = source.listCalls.length;
  source.socket.open();
  source.socket.send({ event: 'snapshot', tasks: [] });
  await until(() => store.get(task.task_id)?.status === 'completed');
  assert.ok(source.listCalls.length > calls, 'a reconnect resyncs over REST');
  live.dispose();
});

test('while the socket keeps failing, REST polling keeps the store fresh', async () => {
  const { source, store, live } = setup();
  live.start();
  await until(() => store.loaded);
  source.socket.drop();
  await until(() => source.sockets.length === 2);
  source.socket.drop();
  assert.equal(live.state, 'polling');
  const task = makeTask({ status: 'created' });
  source.tasks.set(task.task_id, task);
  await until(() => store.get(task.task_id) !== undefined);
  // The socket comes back: polling stops.
  await until(() => source.sockets.length === 3);
  source.socket.open();
  assert.equal(live.state, 'live');
  const calls = source.listCalls.length;
  await new Promise(resolve => setTimeout(resolve, 50));
  assert.ok(source.listCalls.length - calls <= 2, 'no polling once live');
  live.dispose();
});

test('a seq gap triggers a resync; unknown ids are forgotten', async () => {
  const { source, store, live } = setup();
  const kept = makeTask({ status: 'running' });
  const vanished = makeTask({ status: 'running' });
  source.tasks.set(kept.task_id, kept);
  live.start();
  await until(() => store.loaded);
  store.merge([vanished], 'rest');
  source.socket.open();
  source.socket.send({ event: 'snapshot', tasks: [kept, vanished] });
  source.socket.send({
    event: 'progress',
    seq: 1,
    task_id: kept.task_id,
    progress: 0.1
  });
  source.socket.send({
    event: 'progress',
    seq: 5,
    task_id: kept.task_id,
    progress: 0.2
  });
  await until(() => store.get(vanished.task_id) === undefined);
  assert.ok(source.getCalls.includes(vanished.task_id));
  live.dispose();
});
