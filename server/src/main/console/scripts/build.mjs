// Called by the Maven build (server/pom.xml, generate-resources): installs the locked npm
// dependencies when package-lock.json changed since the last install (`npm ci --prefer-offline`,
// so a warm npm cache needs no network), then builds the console with Vite into
// server/target/classes/console unless that build is newer than every source file.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { message, supported } from './check-node.mjs';

if (!supported(process.versions.node)) {
  console.error(message(process.versions.node));
  process.exit(1);
}

const root = fileURLToPath(new URL('..', import.meta.url));
const out = fileURLToPath(new URL('../../../../target/classes/console/index.html', import.meta.url));

function run(cmd, args) {
  console.log('[console] ' + cmd + ' ' + args.join(' '));
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error('[console] ' + cmd + ' failed with status ' + r.status + (r.error ? ': ' + r.error.message : ''));
    process.exit(r.status || 1);
  }
}

const lockHash = createHash('sha256').update(readFileSync(join(root, 'package-lock.json'))).digest('hex');
const stamp = join(root, 'node_modules', '.gpumeter-lock-sha256');
if (!existsSync(stamp) || readFileSync(stamp, 'utf8') !== lockHash) {
  run(process.platform === 'win32' ? 'npm.cmd' : 'npm', ['ci', '--prefer-offline', '--no-audit', '--no-fund']);
  writeFileSync(stamp, lockHash);
} else {
  console.log('[console] node_modules matches package-lock.json');
}

function newest(path) {
  const s = statSync(path);
  if (!s.isDirectory()) return s.mtimeMs;
  return Math.max(0, ...readdirSync(path).map((f) => newest(join(path, f))));
}
const inputs = ['index.html', 'vite.config.js', 'package-lock.json', 'src'].map((f) => newest(join(root, f)));
if (existsSync(out) && statSync(out).mtimeMs > Math.max(...inputs) && process.env.CONSOLE_FORCE_BUILD !== 'true') {
  console.log('[console] build is up to date: ' + out);
} else {
  run(process.execPath, [join(root, 'node_modules', 'vite', 'bin', 'vite.js'), 'build', '--logLevel', 'warn']);
  console.log('[console] built into ' + out);
}
