import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { SUPPORTED, message, supported } from '../scripts/check-node.mjs';

describe('the Node.js version check', () => {
  it('refuses Debian 12 apt nodejs and versions Vite 7 does not run on', () => {
    for (const v of ['18.20.4', 'v18.19.0', '20.18.3', '21.7.3', '22.11.0', '16.20.2', 'garbage']) {
      expect(supported(v), v).toBe(false);
    }
  });
  it('accepts ^20.19.0 || >=22.12.0', () => {
    for (const v of ['20.19.0', 'v20.20.2', '22.12.0', '22.20.1', '23.0.0', '24.11.1']) {
      expect(supported(v), v).toBe(true);
    }
  });
  it('matches package.json engines.node and names the fix', () => {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
    expect(pkg.engines.node).toBe(SUPPORTED);
    expect(message('18.20.4')).toContain('18.20.4');
    expect(message('18.20.4')).toContain(SUPPORTED);
  });
});
