// A `filter` plugin: writes to the subscriber only the messages whose
// payload contains the configured word (empty: every message).
//
// Configuration: the word, such as `urgent`. A subscriber may give its own
// with `filter_config`.
// Counters: `kept`, `skipped`.
//
// This module is the component: it exports one object per interface of the
// world `filter-plugin` (wit/plugin.wit) and imports the host's `metrics`.
// The decisions are in logic.js, which `node --test` runs without the
// component runtime.

import { add } from 'switchyard:plugin/metrics@0.1.0';

import { filter as decide, parseConfig } from './logic.js';

// Module state lives as long as the instance.
let word = '';

export const lifecycle = {
  init(config) {
    word = parseConfig(config);
  },
};

export const filter = {
  filter(msg) {
    const decision = decide(word, msg);
    // u64 arguments are BigInts.
    add(decision.tag === 'keep' ? 'kept' : 'skipped', 1n);
    return decision;
  },
};
