// A `route` plugin: refuses messages without a key on the topics whose name
// starts with the configured prefix (empty: every topic), and delivers the
// others unchanged.
//
// Configuration: the topic prefix, such as `orders`.
// Counters: `refused`.
//
// This module is the component: it exports one object per interface of the
// world `route-plugin` (wit/plugin.wit) and imports the host's `log` and
// `metrics`. The decisions are in logic.js, which `node --test` runs
// without the component runtime.

import { log } from 'switchyard:plugin/log@0.1.0';
import { add } from 'switchyard:plugin/metrics@0.1.0';

import { parseConfig, route as decide } from './logic.js';

// Module state lives as long as the instance.
let prefix = '';

export const lifecycle = {
  init(config) {
    try {
      prefix = parseConfig(config);
    } catch (e) {
      // A thrown string is the error result: the node refuses the binding.
      throw e.message;
    }
    log('info', `requiring keys on topics starting with ${JSON.stringify(prefix)}`);
  },
};

export const route = {
  route(msg) {
    const decision = decide(prefix, msg);
    if (decision.tag === 'drop') {
      // u64 arguments are BigInts.
      add('refused', 1n);
    }
    return decision;
  },
};
