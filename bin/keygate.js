#!/usr/bin/env node
// The `keygate` command. The source is TypeScript, run by Node's type stripping, so Node >= 24
// is needed; `npm ci` installs it into node_modules/.bin, which npm scripts and npx put first.
const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  process.stderr.write(
    `keygate: Node.js 24 or newer is needed (this is ${process.version}). Run it through npm ` +
      '(`npx keygate`, `npm start`), which uses the Node 24 installed by `npm ci`.\n',
  );
  process.exit(1);
}
// Everything Keygate writes (database, secrets, certificates) is for its owner only.
process.umask(0o077);
const { main } = await import('../src/cli/main.ts');
await main(process.argv);
