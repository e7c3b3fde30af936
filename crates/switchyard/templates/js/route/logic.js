// The decisions of the `route` plugin, in plain JavaScript: no component
// imports, so that `node --test` runs them.
//
// A message is `{topic, key, headers, payload, timestampMs}` as the host
// passes it: `key` is a string or undefined, `payload` a Uint8Array. A
// decision is `{tag: 'deliver'}`, `{tag: 'drop', val: reason}`,
// `{tag: 'reroute', val: [topics]}` or `{tag: 'replace', val: {headers,
// payload}}`.

/** The topic prefix the configuration names; throws when it is unusable. */
export function parseConfig(config) {
  const prefix = config.trim();
  if (/\s/.test(prefix)) {
    throw new Error(`prefix ${JSON.stringify(prefix)} contains whitespace`);
  }
  return prefix;
}

/** Drops a keyless message whose topic starts with `prefix`; delivers the others. */
export function route(prefix, msg) {
  if (msg.key == null && msg.topic.startsWith(prefix)) {
    return { tag: 'drop', val: `messages on ${msg.topic} need a key` };
  }
  return { tag: 'deliver' };
}
