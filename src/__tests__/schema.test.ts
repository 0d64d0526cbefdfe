import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  fieldsOf,
  parametersOf,
  parseRawParameters,
  parseTags,
  unknownKeys,
  valuesOf
} from '../schema';
import type { IJSONSchema } from '../types';

const shell: IJSONSchema = {
  type: 'object',
  properties: {
    cwd: { anyOf: [{ type: 'string' }, { type: 'null' }], default: null },
    command: {
      anyOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' } }]
    },
    env: { $ref: '#/$defs/Env' },
    retries: { type: 'integer' },
    verbose: { type: 'boolean', default: false },
    mode: { enum: ['fast', 'slow'] }
  },
  required: ['command'],
  $defs: { Env: { type: 'object', additionalProperties: { type: 'string' } } }
};

test('fields follow the schema, required first', () => {
  const fields = fieldsOf(shell);
  assert.deepEqual(
    fields.map(f => [f.name, f.kind, f.required]),
    [
      ['command', 'text-or-json', true],
      ['cwd', 'string', false],
      ['env', 'json', false],
      ['retries', 'integer', false],
      ['verbose', 'boolean', false],
      ['mode', 'enum', false]
    ]
  );
});

test('form values become parameters, JSON where needed', () => {
  const fields = fieldsOf(shell);
  const values = valuesOf(fields);
  values.command = '["echo", "hi"]';
  values.env = '{"A": "1"}';
  values.retries = '3';
  values.mode = '"slow"';
  const result = parametersOf(fields, values);
  assert.deepEqual(result, {
    ok: true,
    parameters: {
      command: ['echo', 'hi'],
      env: { A: '1' },
      retries: 3,
      mode: 'slow'
    }
  });
  values.command = 'echo hi';
  const plain = parametersOf(fields, values);
  assert.ok(plain.ok && plain.parameters.command === 'echo hi');
});

test('errors name the field', () => {
  const fields = fieldsOf(shell);
  const values = valuesOf(fields);
  assert.deepEqual(parametersOf(fields, values), {
    ok: false,
    error: 'command is required.'
  });
  values.command = 'ls';
  values.retries = '1.5';
  const bad = parametersOf(fields, values);
  assert.ok(!bad.ok && bad.error.includes('retries'));
  values.retries = '';
  values.env = '{nope';
  const badJson = parametersOf(fields, values);
  assert.ok(!badJson.ok && badJson.error.startsWith('env is not valid JSON'));
});

test('values round-trip through parameters', () => {
  const fields = fieldsOf(shell);
  const params = { command: ['a', 'b'], cwd: 'sub', retries: 2, verbose: true };
  const back = parametersOf(fields, valuesOf(fields, params));
  assert.deepEqual(back, { ok: true, parameters: params });
  assert.deepEqual(unknownKeys(fields, { command: 'x', extra: 1 }), ['extra']);
});

test('raw mode wants a JSON object', () => {
  assert.deepEqual(parseRawParameters(''), { ok: true, parameters: {} });
  assert.ok(!parseRawParameters('[1]').ok);
  assert.ok(!parseRawParameters('{').ok);
  assert.deepEqual(parseRawParameters('{"a": 1}'), {
    ok: true,
    parameters: { a: 1 }
  });
  assert.deepEqual(parseTags('a, b c,,a'), ['a', 'b', 'c']);
});
