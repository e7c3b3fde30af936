// Builds app.js into a WebAssembly component for the world `@WORLD@` of
// wit/plugin.wit: @WASM@. Run it with `npm run build` after `npm install`.
import { mkdir, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

import { componentize } from '@bytecodealliance/componentize-js';

const here = (path) => fileURLToPath(new URL(path, import.meta.url));

const { component } = await componentize({
  sourcePath: here('app.js'),
  witPath: here('wit'),
  worldName: '@WORLD@',
  // A node links no wasi:http; stdio, clocks and random stay (stdout and
  // stderr go to the binding's log).
  disableFeatures: ['http', 'fetch-event'],
});
await mkdir(here('dist'), { recursive: true });
await writeFile(here('@WASM@'), component);
console.log(`wrote @WASM@ (${component.length} bytes)`);
