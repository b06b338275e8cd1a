// The Node.js versions the console's build and tests run on: Vite 7 needs ^20.19.0 || >=22.12.0
// (it loads ES modules with require()), and playwright-core 1.65 needs >=20. Debian 12's apt
// nodejs is 18.20, which neither runs. Run as a script (by .ci/run before the Maven build, and by
// scripts/build.mjs first), it exits 1 with a message saying so instead of letting npm ci or Vite
// fail later with an error that does not name the cause. It runs on Node 14 and later, 18 included.

/** package.json's engines.node, which test/check-node.test.js keeps equal to this. */
export const SUPPORTED = '^20.19.0 || >=22.12.0';

/** Whether `version` ("20.19.1", "v18.20.4") satisfies SUPPORTED. */
export function supported(version) {
  const m = /^v?(\d+)\.(\d+)\.(\d+)/.exec(version);
  if (!m) return false;
  const [major, minor] = [Number(m[1]), Number(m[2])];
  return (major === 20 && minor >= 19) || (major === 22 && minor >= 12) || major >= 23;
}

export function message(version) {
  return (
    'gpumeter console: Node.js ' + version + ' is too old or unsupported; the console build (Vite 7) ' +
    'and its browser test (playwright-core) need Node.js ' + SUPPORTED + '. Debian 12 (bookworm) ' +
    'apt ships nodejs 18.20, which cannot build it. Put Node.js 20.19 or newer first on the PATH ' +
    '(Debian 13 "trixie" ships nodejs 20.19 in apt; the CI image has Node 20 preinstalled); see ' +
    'server/README.md, "Building the console".'
  );
}

if (process.argv[1] && process.argv[1].endsWith('check-node.mjs')) {
  if (!supported(process.versions.node)) {
    console.error(message(process.versions.node));
    process.exit(1);
  }
  console.log('[console] Node.js ' + process.versions.node + ' satisfies ' + SUPPORTED);
}
