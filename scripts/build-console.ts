/**
 * Builds the web console (console/) into console/dist/, which the gateway serves at /console.
 * Run by `npm install`/`npm ci` (prepare), `npm start` and `npm test`; it takes a second or two.
 */
import { fileURLToPath } from 'node:url';
import { build } from 'vite';

const configFile = fileURLToPath(new URL('../console/vite.config.ts', import.meta.url));
const started = performance.now();
await build({ configFile, logLevel: 'warn' });
console.log(`console built into console/dist in ${Math.round(performance.now() - started)} ms`);
