import assert from 'node:assert/strict';
import { test } from 'node:test';

import { parseConfig, route } from './logic.js';

const message = (topic, key) => ({
  topic,
  key,
  headers: [],
  payload: new Uint8Array(),
  timestampMs: 0n,
});

test('refuses keyless messages under the prefix', () => {
  const prefix = parseConfig('orders');
  assert.deepEqual(route(prefix, message('orders.eu')), {
    tag: 'drop',
    val: 'messages on orders.eu need a key',
  });
  assert.deepEqual(route(prefix, message('orders.eu', 'customer-7')), { tag: 'deliver' });
  assert.deepEqual(route(prefix, message('audit')), { tag: 'deliver' });
});

test('an empty prefix covers every topic', () => {
  assert.equal(route(parseConfig(''), message('audit')).tag, 'drop');
});

test('refuses a prefix with whitespace', () => {
  assert.throws(() => parseConfig('a b'), /contains whitespace/);
});
