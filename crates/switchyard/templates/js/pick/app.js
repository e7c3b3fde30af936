// A `pick` plugin: gives a message to the least loaded member whose `zone`
// label is the configured zone, or lets the node choose (the member with
// the fewest unacknowledged messages) when none is in that zone.
//
// Configuration: the zone, such as `eu-1`.
// Counters: `in_zone`, `elsewhere`.
//
// This module is the component: it exports one object per interface of the
// world `pick-plugin` (wit/plugin.wit) and imports the host's `metrics`.
// The decisions are in logic.js, which `node --test` runs without the
// component runtime.

import { add } from 'switchyard:plugin/metrics@0.1.0';

import { parseConfig, pick as choose } from './logic.js';

// Module state lives as long as the instance.
let zone = '';

export const lifecycle = {
  init(config) {
    try {
      zone = parseConfig(config);
    } catch (e) {
      // A thrown string is the error result: the node refuses the binding.
      throw e.message;
    }
  },
};

export const pick = {
  pick(msg, candidates) {
    const index = choose(zone, candidates);
    // u64 arguments are BigInts.
    add(index === undefined ? 'elsewhere' : 'in_zone', 1n);
    return index;
  },
};
