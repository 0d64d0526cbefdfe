import assert from 'node:assert/strict';
import { test } from 'node:test';

import { formatDuration, percent, timeLabel } from '../format';
import { makeTask } from './helpers';

test('formatDuration picks a unit that reads well', () => {
  assert.equal(formatDuration(850), '850ms');
  assert.equal(formatDuration(1234), '1.2s');
  assert.equal(formatDuration(42000), '42s');
  assert.equal(formatDuration(245000), '4m 05s');
  assert.equal(formatDuration(2 * 3600000 + 3 * 60000), '2h 03m');
  assert.equal(formatDuration(-5), '0ms');
});

test('timeLabel says waited, running or took', () => {
  const created_at = '2026-01-01T00:00:00.000000Z';
  const t0 = Date.parse(created_at);
  assert.equal(timeLabel(makeTask({ created_at }), t0 + 3000), 'queued 3.0s');
  const running = makeTask({
    created_at,
    status: 'running',
    started_at: '2026-01-01T00:00:10.000000Z'
  });
  assert.equal(timeLabel(running, t0 + 75000), '1m 05s');
  const done = makeTask({
    ...running,
    status: 'completed',
    finished_at: '2026-01-01T00:00:22.500000Z'
  });
  assert.equal(timeLabel(done, t0 + 999999), '12s');
});

test('percent clamps and rounds', () => {
  assert.equal(percent(null), null);
  assert.equal(percent(0.456), 46);
  assert.equal(percent(1.5), 100);
});
