import assert from 'node:assert/strict';
import { test } from 'node:test';

import { filter, parseConfig } from './logic.js';

const message = (payload) => ({
  topic: 'alerts',
  key: undefined,
  headers: [],
  payload: typeof payload === 'string' ? new TextEncoder().encode(payload) : payload,
  timestampMs: 0n,
});

test('keeps messages with the word', () => {
  const word = parseConfig(' urgent ');
  assert.deepEqual(filter(word, message('urgent: disk full')), { tag: 'keep' });
  assert.deepEqual(filter(word, message('all quiet')), { tag: 'skip' });
  assert.deepEqual(filter(word, message(new Uint8Array([0xff, 0xfe]))), { tag: 'skip' });
});

test('an empty word keeps every message', () => {
  assert.deepEqual(filter(parseConfig(''), message('anything')), { tag: 'keep' });
});
