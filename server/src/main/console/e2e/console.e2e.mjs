// The console in a real browser: Playwright (playwright-core) driving Debian's chromium, headless,
// against a running gpumeter server. Run by ConsoleBrowserTest (JUnit), which starts the server,
// makes the keys and completions and passes them in the environment:
//   GPUMETER_URL, KEY_A (account_admin key of account A), KEY_A_ID, KEY_B (key of account B),
//   KEY_B_ID, ADMIN_TOKEN, REVOKE_KEY, REVOKE_KEY_ID, ACCOUNT_A, OUT_DIR (screenshots), CHROMIUM.
// Exits 0 and prints "console e2e: PASSED" only when every check passed.
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error('missing environment variable ' + k);
  return v;
};
const base = env('GPUMETER_URL');
const outDir = env('OUT_DIR');
mkdirSync(outDir, { recursive: true });
let checks = 0;
const check = (what, fn) => {
  fn();
  checks++;
  console.log('  ok  ' + what);
};

async function apiTotal(key, params) {
  let total = 0n;
  let page = null;
  for (let i = 0; i < 100; i++) {
    const q = new URLSearchParams(params);
    if (page) q.set('page', page);
    const r = await fetch(base + '/v1/organization/usage/completions?' + q, { headers: { Authorization: 'Bearer ' + key } });
    assert.equal(r.status, 200, 'usage API answered ' + r.status);
    const p = await r.json();
    for (const b of p.data) for (const x of b.results) total += BigInt(x.device_time_ns);
    if (!p.has_more) return total;
    page = p.next_page;
  }
  throw new Error('too many pages');
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
const problems = [];
async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(60000);
  page.on('request', (r) => {
    if (!r.url().startsWith(base + '/') && !r.url().startsWith('data:')) problems.push('request outside the server: ' + r.url());
  });
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 40[134] /.test(m.text())) problems.push('console error: ' + m.text());
  });
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  return { context, page };
}

async function signIn(page, secret, operator) {
  await page.goto(base + '/console/');
  if (operator) await page.getByLabel('the operator\'s admin token').check();
  await page.fill('#secret', secret);
  await page.click('#sign-in-form button[type=submit]');
  await page.waitForSelector('#tabs:not([hidden])');
}

async function chartState(page) {
  await page.waitForSelector('#usage-panel[data-loaded][aria-busy=false]');
  return page.evaluate(() => {
    const card = document.getElementById('usage-panel');
    const t = document.querySelector('#chart-device-time table.data');
    return {
      start: Number(card.dataset.start),
      end: Number(card.dataset.end),
      bucket: card.dataset.bucket,
      group: card.dataset.group,
      total: t ? t.dataset.totalNs : null,
      groups: t ? [...t.querySelectorAll('thead th')].slice(1, -1).map((th) => th.textContent) : [],
      spendNotAvailable: !!document.querySelector('#chart-spend [data-not-available]'),
      spendTotal: (document.querySelector('#chart-spend table.data') || { dataset: {} }).dataset.totalMicros || null,
    };
  });
}

async function reload(page) {
  const before = await page.getAttribute('#usage-panel', 'data-loaded');
  await page.click('#usage-panel form button[type=submit]');
  await page.waitForFunction((b) => {
    const c = document.getElementById('usage-panel');
    return c.dataset.loaded !== b && c.getAttribute('aria-busy') === 'false';
  }, before);
}

try {
  console.log('console e2e against ' + base);
  // ---- a customer signs in with a key; the charts equal the usage API ----
  const a = await newPage();
  await signIn(a.page, env('KEY_A'));
  const who = await a.page.textContent('#who');
  check('signed in as account A', () => assert.match(who, new RegExp('Account ' + env('ACCOUNT_A'))));
  const storage = await a.page.evaluate(() => ({ local: localStorage.length, session: sessionStorage.length, cookie: document.cookie, url: location.href }));
  check('no secret in storage, the URL or a script-readable cookie', () => {
    assert.equal(storage.local, 0);
    assert.equal(storage.session, 0);
    assert.ok(!storage.cookie.includes('gpumeter_session'), 'cookie readable by script: ' + storage.cookie);
    assert.ok(!storage.url.includes(env('KEY_A')));
  });

  for (const [bucket, group] of [['1h', 'model'], ['1m', 'api_key_id'], ['1d', 'session_id']]) {
    await a.page.selectOption('#f-bucket', bucket);
    await a.page.selectOption('#f-group', group);
    await reload(a.page);
    const s = await chartState(a.page);
    const api = await apiTotal(env('KEY_A'), { start_time: s.start, end_time: s.end, bucket_width: s.bucket, group_by: s.group, limit: { '1m': 1440, '1h': 168, '1d': 31 }[s.bucket] });
    check(`chart total (${bucket}, by ${group}) ${s.total} ns = usage API ${api} ns`, () => {
      assert.equal(s.bucket, bucket);
      assert.equal(s.group, group);
      assert.ok(api > 0n, 'no usage in range');
      assert.equal(BigInt(s.total), api);
    });
    if (group === 'api_key_id') {
      check('no key of account B in account A\'s chart', () => {
        assert.ok(s.groups.length >= 2, 'expected A\'s keys, got ' + s.groups);
        assert.ok(!s.groups.includes(env('KEY_B_ID')), 'B\'s key shown: ' + s.groups);
      });
    }
    console.log('      spend panel: ' + (s.spendNotAvailable ? 'not available on this server' : 'total ' + s.spendTotal + ' micros'));
  }
  // the 1h view, by model, for the screenshot
  await a.page.selectOption('#f-bucket', '1m');
  await a.page.selectOption('#f-group', 'api_key_id');
  await reload(a.page);
  await a.page.evaluate(() => document.querySelector('#chart-device-time details').setAttribute('open', ''));
  await a.page.screenshot({ path: join(outDir, 'console-usage.png'), fullPage: true });

  // ---- another account's data is unreachable from A's session ----
  const crossing = await a.page.evaluate(async (bId) => {
    const now = Math.floor(Date.now() / 1000);
    const r = await fetch('/v1/organization/usage/completions?bucket_width=1h&group_by=api_key_id&start_time=' + (now - 7200) + '&api_key_ids=' + bId);
    const j = await r.json();
    return { status: r.status, results: j.data ? j.data.flatMap((b) => b.results).length : -1 };
  }, env('KEY_B_ID'));
  check('asking for account B\'s key from A\'s session matches nothing', () => assert.deepEqual(crossing, { status: 200, results: 0 }));
  const adminFromKey = await a.page.evaluate(async () => (await fetch('/admin/keys?account=x')).status);
  check('a key session cannot reach the admin API', () => assert.equal(adminFromKey, 401));
  const noCsrf = await a.page.evaluate(async () => (await fetch('/v1/completions', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"model":"demo-byte-lm","prompt":"x","max_tokens":1}' })).status);
  check('a POST with the cookie but without the CSRF token is refused', () => assert.equal(noCsrf, 403));

  const b = await newPage();
  await signIn(b.page, env('KEY_B'));
  const sb = await chartState(b.page);
  const apiB = await apiTotal(env('KEY_B'), { start_time: sb.start, end_time: sb.end, bucket_width: sb.bucket, group_by: sb.group, limit: 168 });
  check(`account B sees only its own usage (${sb.total} ns)`, () => {
    assert.equal(BigInt(sb.total), apiB);
    assert.ok(apiB > 0n);
  });

  // ---- keyboard: the tabs move with the arrow keys ----
  await a.page.focus('#tab-usage');
  await a.page.keyboard.press('ArrowRight');
  const afterRight = await a.page.getAttribute('#tab-requests', 'aria-selected');
  check('ArrowRight moves to the Requests tab', () => assert.equal(afterRight, 'true'));
  await a.page.keyboard.press('ArrowRight');
  const focused = await a.page.evaluate(() => document.activeElement.id);
  check('the next ArrowRight selects and focuses Allowance & credits', () => assert.equal(focused, 'tab-balance'));
  const panels = await a.page.evaluate(() => [...document.querySelectorAll('[data-not-available]')].map((e) => e.dataset.notAvailable));
  console.log('      balance panel: ' + (panels.length ? 'not available on this server' : 'shown'));
  await a.page.keyboard.press('End');
  const atEnd = await a.page.getAttribute('#tab-invoices', 'aria-selected');
  check('End selects the last tab', () => assert.equal(atEnd, 'true'));

  // ---- sign out; the cookie is dead ----
  await a.page.click('#sign-out');
  await a.page.waitForSelector('#sign-in:not([hidden])');
  const after = await a.page.evaluate(async () => (await fetch('/console/session')).status);
  check('signed out: the session answers 401', () => assert.equal(after, 401));

  // ---- the operator revokes a key; the next request with it is 401 ----
  const before = await fetch(base + '/v1/models', { headers: { Authorization: 'Bearer ' + env('REVOKE_KEY') } });
  check('the key to revoke works before', () => assert.equal(before.status, 200));
  const op = await newPage();
  await signIn(op.page, env('ADMIN_TOKEN'), true);
  await op.page.click('#tab-keys');
  await op.page.fill('#op-account', env('ACCOUNT_A'));
  await op.page.click('form[aria-label="Show keys"] button[type=submit]');
  const revoke = `[data-revoke="${env('REVOKE_KEY_ID')}"]`;
  await op.page.waitForSelector(revoke);
  await op.page.click(revoke);
  await op.page.waitForSelector(revoke, { state: 'detached' });
  const gone = await fetch(base + '/v1/models', { headers: { Authorization: 'Bearer ' + env('REVOKE_KEY') } });
  check('after the operator revoked it, the key gets 401', () => assert.equal(gone.status, 401));
  await op.page.screenshot({ path: join(outDir, 'console-operator-keys.png'), fullPage: true });

  check('nothing loaded from outside the server, no script errors', () => assert.deepEqual(problems, []));
  console.log(`console e2e: PASSED (${checks} checks; screenshots in ${outDir})`);
} catch (e) {
  console.error('console e2e: FAILED: ' + (e.stack || e));
  if (problems.length) console.error(problems.join('\n'));
  process.exitCode = 1;
} finally {
  await browser.close();
}
