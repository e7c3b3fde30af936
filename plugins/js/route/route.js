// Example plugin (`route`) in JavaScript: reroutes a JSON message to a
// sub-topic named after one of its fields, such as `orders` to `orders.eu`.
//
// Configuration (JSON, all keys optional):
//
//     {"field": "region", "prefix": "orders", "print": false}
//
// * `field`: the top-level payload field to read (default `region`). A
//   string is used as is, an integer in decimal.
// * `prefix`: the topic to append the value to (default: the message's
//   own topic). The message goes to `<prefix>.<value>`.
// * `print`: write each decision to stdout (console.log), which lands in
//   the binding's log.
//
// A payload that is not a JSON object, a missing field, or a value that is
// not a valid topic token (ASCII letters, digits, `-`, `_`) delivers the
// message on its own topic.

const MAX_TOPIC_LEN = 255;
const TOKEN = /^[A-Za-z0-9_-]+$/;
const decoder = new TextDecoder();

let config = { field: 'region', prefix: null, print: false };

function segment(value) {
  if (Number.isInteger(value)) value = String(value);
  return typeof value === 'string' && TOKEN.test(value) ? value : null;
}

export const lifecycle = {
  init(cfg) {
    if (cfg.trim() === '') return;
    let c;
    try {
      c = JSON.parse(cfg);
    } catch (e) {
      throw `the configuration is not JSON: ${e.message}`;
    }
    if (c === null || typeof c !== 'object' || Array.isArray(c)) {
      throw 'the configuration must be a JSON object';
    }
    const unknown = Object.keys(c).filter((k) => !(k in config));
    if (unknown.length > 0) throw `unknown configuration keys: ${unknown.join(', ')}`;
    if ('field' in c && typeof c.field !== 'string') throw '`field` must be a string';
    config = { ...config, ...c };
  },
};

export const route = {
  route(msg) {
    let doc = null;
    try {
      doc = JSON.parse(decoder.decode(msg.payload));
    } catch (_) {
      // Not JSON: no field.
    }
    const seg = doc !== null && typeof doc === 'object' ? segment(doc[config.field]) : null;
    if (seg === null) return { tag: 'deliver' };
    const topic = `${config.prefix || msg.topic}.${seg}`;
    if (topic.length > MAX_TOPIC_LEN) return { tag: 'deliver' };
    if (config.print) console.log(`route: ${msg.topic} -> ${topic}`);
    return { tag: 'reroute', val: [topic] };
  },
};
