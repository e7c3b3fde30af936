// The decisions of the `pick` plugin, in plain JavaScript: no component
// imports, so that `node --test` runs them.
//
// A candidate is `{id, inflight, weight, labels}` as the host passes it,
// with `labels` an array of `{name, value}`. The result is an index into
// the candidates, or undefined to let the node choose.

/** The zone the configuration names; throws when there is none. */
export function parseConfig(config) {
  const zone = config.trim();
  if (zone === '') {
    throw new Error('the configuration must name a zone');
  }
  return zone;
}

/** The index of the least loaded candidate in `zone` (the first of equals), or undefined. */
export function pick(zone, candidates) {
  let best;
  candidates.forEach((c, i) => {
    const inZone = c.labels.some((l) => l.name === 'zone' && l.value === zone);
    if (inZone && (best === undefined || c.inflight < candidates[best].inflight)) {
      best = i;
    }
  });
  return best;
}
