// The decisions of the `filter` plugin, in plain JavaScript: no component
// imports, so that `node --test` runs them.
//
// A message is `{topic, key, headers, payload, timestampMs}` as the host
// passes it: `key` is a string or undefined, `payload` a Uint8Array. A
// decision is `{tag: 'keep'}`, `{tag: 'skip'}` or `{tag: 'transform', val:
// payload}`.

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The word the configuration names (empty: keep every message). */
export function parseConfig(config) {
  return config.trim();
}

/** Keeps a message whose payload, as UTF-8 text, contains `word`. */
export function filter(word, msg) {
  let text = '';
  try {
    text = utf8.decode(msg.payload);
  } catch {
    // Not UTF-8: no text.
  }
  return text.includes(word) ? { tag: 'keep' } : { tag: 'skip' };
}
