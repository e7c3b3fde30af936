import assert from 'node:assert/strict';
import { test } from 'node:test';

import { parseConfig, pick } from './logic.js';

const member = (id, zone, inflight) => ({
  id,
  inflight,
  weight: 1,
  labels: [{ name: 'zone', value: zone }],
});

test('prefers the least loaded member of the zone', () => {
  const zone = parseConfig('eu-1');
  const members = [member('a', 'us-1', 0), member('b', 'eu-1', 5), member('c', 'eu-1', 2)];
  assert.equal(pick(zone, members), 2);
  assert.equal(pick(zone, members.slice(0, 1)), undefined);
  assert.equal(pick(zone, []), undefined);
});

test('refuses an empty zone', () => {
  assert.throws(() => parseConfig(' '), /must name a zone/);
});
