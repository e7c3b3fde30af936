// Builds one JavaScript plugin into a component with componentize-js.
// Usage: node build.mjs <source.js> <world> <out.wasm> <wit dir>
import { writeFile } from 'node:fs/promises';
import { componentize } from '@bytecodealliance/componentize-js';

const [sourcePath, worldName, out, witPath] = process.argv.slice(2);
const { component } = await componentize({
  sourcePath,
  witPath,
  worldName,
  // The node links no wasi:http; stdio, clocks and random stay (stdout
  // and stderr go to the binding's log).
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(out, component);
