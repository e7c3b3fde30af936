// Example plugin (`filter`) in JavaScript: keeps the messages whose JSON
// payload has a field equal to a configured value, and skips the others.
//
// Configuration (JSON):
//
//     {"field": "level", "value": "error"}
//
// * `field` (required): the top-level payload field to compare.
// * `value` (required): the value to keep (a JSON value, compared as JSON).
//
// A payload that is not a JSON object, or that lacks the field, is skipped.

const decoder = new TextDecoder();
let field = null;
let wanted = null;

export const lifecycle = {
  init(cfg) {
    let c;
    try {
      c = JSON.parse(cfg);
    } catch (e) {
      throw `the configuration is not JSON: ${e.message}`;
    }
    if (c === null || typeof c !== 'object' || typeof c.field !== 'string' || !('value' in c)) {
      throw 'the configuration must be {"field": "<name>", "value": <JSON value>}';
    }
    field = c.field;
    wanted = JSON.stringify(c.value);
  },
};

export const filter = {
  filter(msg) {
    let doc;
    try {
      doc = JSON.parse(decoder.decode(msg.payload));
    } catch (_) {
      return { tag: 'skip' };
    }
    if (doc !== null && typeof doc === 'object' && field in doc && JSON.stringify(doc[field]) === wanted) {
      return { tag: 'keep' };
    }
    return { tag: 'skip' };
  },
};
