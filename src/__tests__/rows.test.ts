import assert from 'node:assert/strict';
import { test } from 'node:test';

import { allTags, buildRows, EMPTY_FILTER, matches, summarize } from '../rows';
import { makeTask } from './helpers';

test('rows are newest first', () => {
  const a = makeTask({ created_at: '2026-01-01T00:00:01.000000Z' });
  const b = makeTask({ created_at: '2026-01-01T00:00:03.000000Z' });
  const c = makeTask({ created_at: '2026-01-01T00:00:02.000000Z' });
  const rows = buildRows([a, b, c], EMPTY_FILTER, new Set());
  assert.deepEqual(
    rows.map(r => r.key),
    [b.task_id, c.task_id, a.task_id]
  );
});

test('a group folds into one row placed by its newest task, and expands', () => {
  const solo = makeTask({ created_at: '2026-01-01T00:00:02.000000Z' });
  const g1 = makeTask({
    group: 'g',
    created_at: '2026-01-01T00:00:01.000000Z'
  });
  const g2 = makeTask({
    group: 'g',
    created_at: '2026-01-01T00:00:03.000000Z'
  });
  const folded = buildRows([solo, g1, g2], EMPTY_FILTER, new Set());
  assert.deepEqual(
    folded.map(r => r.key),
    ['group:g', solo.task_id]
  );
  const open = buildRows([solo, g1, g2], EMPTY_FILTER, new Set(['g']));
  assert.deepEqual(
    open.map(r => r.key),
    ['group:g', g2.task_id, g1.task_id, solo.task_id]
  );
  const child = open[1];
  assert.equal(child.kind === 'task' && child.level, 2);
});

test('summaries count statuses and average progress', () => {
  const tasks = [
    makeTask({
      status: 'completed',
      progress: 1,
      started_at: '2026-01-01T00:00:05.000000Z',
      finished_at: '2026-01-01T00:00:09.000000Z'
    }),
    makeTask({
      status: 'running',
      progress: 0.5,
      started_at: '2026-01-01T00:00:04.000000Z'
    }),
    makeTask({ status: 'failed', finished_at: '2026-01-01T00:00:08.000000Z' })
  ];
  const summary = summarize(tasks);
  assert.equal(summary.count, 3);
  assert.equal(summary.status, 'running');
  assert.equal(summary.counts.failed, 1);
  assert.ok(Math.abs(summary.progress - 2.5 / 3) < 1e-9);
  assert.equal(summary.started_at, '2026-01-01T00:00:04.000000Z');
  assert.equal(
    summary.finished_at,
    null,
    'a group with a running task has no finish'
  );
});

test('filters by status, tag and words', () => {
  const t = makeTask({
    description: 'Train the model',
    tags: ['gpu', 'nightly'],
    status: 'running'
  });
  assert.ok(matches(t, { status: 'active', tag: '', text: '' }));
  assert.ok(!matches(t, { status: 'completed', tag: '', text: '' }));
  assert.ok(matches(t, { status: 'all', tag: 'gpu', text: '' }));
  assert.ok(!matches(t, { status: 'all', tag: 'cpu', text: '' }));
  assert.ok(matches(t, { status: 'all', tag: '', text: 'MODEL train' }));
  assert.ok(!matches(t, { status: 'all', tag: '', text: 'model eval' }));
  assert.deepEqual(allTags([t, makeTask({ tags: ['cpu', 'gpu'] })]), [
    'cpu',
    'gpu',
    'nightly'
  ]);
});

test("a batch's tasks, created together, list by description", () => {
  const at = '2026-01-01T00:00:09.000000Z';
  const b10 = makeTask({ group: 'b', created_at: at, description: 'lr=10' });
  const b2 = makeTask({ group: 'b', created_at: at, description: 'lr=2' });
  const rows = buildRows([b10, b2], EMPTY_FILTER, new Set(['b']));
  assert.deepEqual(
    rows.map(r => r.key),
    ['group:b', b2.task_id, b10.task_id]
  );
});
