// The console in a real browser: Playwright (playwright-core) driving Debian's chromium, headless,
// against a running gpumeter server. Run by ConsoleBrowserTest (JUnit), which starts the server,
// makes the keys and completions and passes them in the environment:
//   GPUMETER_URL, KEY_A (account_admin key of account A), KEY_A_ID, KEY_B (key of account B),
//   KEY_B_ID, ADMIN_TOKEN, REVOKE_KEY, REVOKE_KEY_ID, ACCOUNT_A, ACCOUNT_B, DEVICE_CLASS,
//   OUT_DIR (screenshots), CHROMIUM.
// Every panel is checked against the API it reads, fetched here with the same credentials: what
// the user sees (the decimal strings, the rows) must be the API's figures. One browser, one
// server for all checks. Exits 0 and prints "console e2e: PASSED" only when every check passed.
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { formatMicros, formatNs } from '../src/shape.js';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error('missing environment variable ' + k);
  return v;
};
const base = env('GPUMETER_URL');
const outDir = env('OUT_DIR');
mkdirSync(outDir, { recursive: true });
let checks = 0;
const t0 = Date.now();
let lap = t0;
// Where the time goes (ConsoleBrowserTest prints it; server/README.md "Building the console").
const timing = (what) => {
  const now = Date.now();
  console.log(`console timing: ${what} ${now - lap} ms`);
  lap = now;
};
const check = (what, fn) => {
  fn();
  checks++;
  console.log('  ok  ' + what);
};

async function api(path, bearer, init = {}) {
  const r = await fetch(base + path, { ...init, headers: { Authorization: 'Bearer ' + bearer, ...(init.headers || {}) } });
  const body = await r.json();
  assert.equal(r.status, 200, path + ' answered ' + r.status + ': ' + JSON.stringify(body));
  return body;
}
const admin = (path) => api(path, env('ADMIN_TOKEN'));

/** The sum over every page of a bucketed report: device_time_ns (usage) or value_micros (costs). */
async function apiTotal(path, key, params, value) {
  let total = 0n;
  let page = null;
  for (let i = 0; i < 100; i++) {
    const q = new URLSearchParams(params);
    if (page) q.set('page', page);
    const p = await api(path + '?' + q, key);
    for (const b of p.data) for (const x of b.results) total += BigInt(value(x));
    if (!p.has_more) return total;
    page = p.next_page;
  }
  throw new Error('too many pages');
}
const usageTotal = (key, params) => apiTotal('/v1/organization/usage/completions', key, params, (x) => x.device_time_ns);
const costTotal = (key, params) => apiTotal('/v1/organization/costs', key, params, (x) => x.amount.value_micros);

/** The text of every body row of a table: [[cell, cell, ...], ...]. */
function rows(page, selector) {
  return page.$$eval(selector + ' tbody tr', (trs) => trs.map((tr) => [...tr.cells].map((td) => td.textContent.trim())));
}

/**
 * Accessibility basics on what is on screen now: every form control has a label, every button a
 * name, ids are unique, and visible text has WCAG AA contrast against its background (4.5:1, 3:1
 * for large text). Returns the problems found.
 */
function audit(page) {
  return page.evaluate(() => {
    const out = [];
    const parse = (c) => {
      const m = /rgba?\(([^)]+)\)/.exec(c);
      if (!m) return null;
      const p = m[1].split(/[\s,/]+/).filter(Boolean).map(Number);
      return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
    };
    const lum = ({ r, g, b }) => {
      const f = (v) => ((v /= 255) <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4));
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const background = (e) => {
      for (let n = e; n; n = n.parentElement) {
        const c = parse(getComputedStyle(n).backgroundColor);
        if (c && c.a >= 0.9) return c;
      }
      return { r: 255, g: 255, b: 255, a: 1 };
    };
    for (const e of document.querySelectorAll('body *')) {
      const box = e.getBoundingClientRect();
      const cs = getComputedStyle(e);
      if (box.width === 0 || box.height === 0 || box.right < 0 || box.bottom < 0 || cs.visibility === 'hidden') continue;
      if (e.closest('[hidden], button:disabled, .uplot')) continue;
      if (![...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())) continue;
      const fg = parse(cs.color);
      const bg = background(e);
      const a = lum(fg);
      const b = lum(bg);
      const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
      const size = parseFloat(cs.fontSize);
      const large = size >= 24 || (Number(cs.fontWeight) >= 700 && size >= 18.66);
      if (ratio < (large ? 3 : 4.5)) out.push(`contrast ${ratio.toFixed(2)}:1 of "${e.textContent.trim().slice(0, 40)}" (${cs.color} on rgb(${bg.r}, ${bg.g}, ${bg.b}))`);
    }
    for (const e of document.querySelectorAll('input, select, textarea')) {
      if (e.type === 'hidden') continue;
      if (!(e.labels && e.labels.length) && !e.getAttribute('aria-label')) out.push('form control without a label: ' + (e.id || e.name));
    }
    for (const b of document.querySelectorAll('button')) {
      if (!b.textContent.trim() && !b.getAttribute('aria-label')) out.push('button without a name: ' + b.outerHTML.slice(0, 80));
    }
    const ids = new Map();
    for (const e of document.querySelectorAll('[id]')) ids.set(e.id, (ids.get(e.id) || 0) + 1);
    for (const [id, n] of ids) if (n > 1) out.push(`id "${id}" used ${n} times`);
    for (const t of document.querySelectorAll('table')) if (!t.querySelector('caption')) out.push('table without a caption');
    return out;
  });
}
async function accessible(page, where) {
  const found = await audit(page);
  check('accessibility basics on ' + where, () => assert.deepEqual(found, []));
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

/** Signs in with the keyboard alone: Tab to the secret, type it, Enter. */
async function signInByKeyboard(page, secret) {
  await page.goto(base + '/console/');
  await page.waitForSelector('#sign-in:not([hidden])');
  await page.focus('#sign-in-form input[value=key]');
  await page.keyboard.press('Tab');
  const focused = await page.evaluate(() => document.activeElement.id);
  check('Tab moves from the sign-in choice to the secret field', () => assert.equal(focused, 'secret'));
  await page.keyboard.type(secret);
  await page.keyboard.press('Enter');
  await page.waitForSelector('#tabs:not([hidden])');
}

/** Opens a tab and waits until its panel has its table or its heading (loaded). */
async function openTab(page, id, ready) {
  await page.click('#tab-' + id);
  await page.waitForSelector(ready);
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
  timing('chromium start');
  // The audit can fail: a page with the old 4.34:1 grey on the page background, an unlabelled
  // input, a repeated id, a table without a caption and a button without a name gives exactly
  // those five problems.
  {
    const probe = await newPage();
    await probe.page.setContent('<style>html{background:#f1f5f9}</style><p style="color:#64748b">grey text</p><input id="x"><span id="x">y</span><table><tr><td>1</td></tr></table><button></button>');
    const found = await audit(probe.page);
    check('the accessibility audit finds each kind of problem it looks for', () => {
      assert.equal(found.length, 5, found.join('; '));
      assert.match(found[0], /^contrast 4\.3\d:1 of "grey text"/);
      assert.deepEqual(found.slice(1).map((f) => f.split(':')[0].split(' "')[0]), ['form control without a label', 'button without a name', 'id', 'table without a caption']);
    });
    await probe.context.close();
  }
  // ---- a customer signs in with a key (keyboard only); the charts equal the usage and costs APIs ----
  const keyA = env('KEY_A');
  const a = await newPage();
  await a.page.goto(base + '/console/');
  await a.page.waitForSelector('#sign-in:not([hidden])');
  await accessible(a.page, 'the sign-in page');
  await signInByKeyboard(a.page, keyA);
  const who = await a.page.textContent('#who');
  check('signed in as account A', () => assert.match(who, new RegExp('Account ' + env('ACCOUNT_A'))));
  const storage = await a.page.evaluate(() => ({ local: localStorage.length, session: sessionStorage.length, cookie: document.cookie, url: location.href }));
  check('no secret in storage, the URL or a script-readable cookie', () => {
    assert.equal(storage.local, 0);
    assert.equal(storage.session, 0);
    assert.ok(!storage.cookie.includes('gpumeter_session'), 'cookie readable by script: ' + storage.cookie);
    assert.ok(!storage.url.includes(keyA));
  });
  timing('page load and sign-in');

  for (const [bucket, group] of [['1h', 'model'], ['1m', 'api_key_id'], ['1d', 'session_id']]) {
    await a.page.selectOption('#f-bucket', bucket);
    await a.page.selectOption('#f-group', group);
    await reload(a.page);
    const s = await chartState(a.page);
    const params = { start_time: s.start, end_time: s.end, bucket_width: s.bucket, group_by: s.group, limit: { '1m': 1440, '1h': 168, '1d': 31 }[s.bucket] };
    const usage = await usageTotal(keyA, params);
    check(`device-time chart total (${bucket}, by ${group}) ${s.total} ns = usage API ${usage} ns`, () => {
      assert.equal(s.bucket, bucket);
      assert.equal(s.group, group);
      assert.ok(usage > 0n, 'no usage in range');
      assert.equal(BigInt(s.total), usage);
    });
    const spend = await costTotal(keyA, params);
    check(`spend chart total (${bucket}, by ${group}) ${s.spendTotal} micro-units = costs API ${spend}`, () => {
      assert.ok(!s.spendNotAvailable, 'the spend panel says not available');
      assert.ok(spend > 0n, 'no cost in range: the requests should be priced');
      assert.equal(BigInt(s.spendTotal), spend);
    });
    if (group === 'api_key_id') {
      check('no key of account B in account A\'s chart', () => {
        assert.ok(s.groups.length >= 2, 'expected A\'s keys, got ' + s.groups);
        assert.ok(!s.groups.includes(env('KEY_B_ID')), 'B\'s key shown: ' + s.groups);
      });
    }
  }
  await a.page.evaluate(() => document.querySelectorAll('#usage-panel details').forEach((d) => d.setAttribute('open', '')));
  await accessible(a.page, 'the usage panel with its data tables open');
  await a.page.screenshot({ path: join(outDir, 'console-usage.png'), fullPage: true });
  timing('usage and spend charts (3 ranges)');

  // ---- requests: the rows are /v1/organization/requests, newest first ----
  await openTab(a.page, 'requests', '#requests-panel table.data');
  const reqApi = await api('/v1/organization/requests?limit=50', keyA);
  const reqRows = await rows(a.page, '#requests-panel table.data');
  check(`request rows (${reqRows.length}) = /v1/organization/requests (${reqApi.data.length}): id, status, tokens, device time, cost`, () => {
    assert.ok(reqApi.data.length >= 4, 'expected account A\'s requests');
    assert.deepEqual(
      reqRows.map((r) => [r[0], r[2], r[3], r[4], r[5], r[6], r[8], r[9]]),
      reqApi.data.map((r) => [r.request_id, r.model, String(r.api_key_id), r.status, r.prompt_tokens + ' / ' + r.completion_tokens, formatNs(r.device_time_ns), r.batch_company === null ? '—' : String(r.batch_company), r.cost === null ? '—' : r.cost + ' ' + r.currency.toUpperCase()]),
    );
    assert.ok(reqApi.data.every((r) => r.cost !== null && r.status === 'finished'), 'every seeded request is priced and finished');
  });
  await accessible(a.page, 'the requests panel');
  await a.page.screenshot({ path: join(outDir, 'console-requests.png'), fullPage: true });

  // ---- allowance and credits: the gauges are /v1/organization/balance ----
  await openTab(a.page, 'balance', '#credit-remaining');
  const bal = await api('/v1/organization/balance', keyA);
  const shown = await a.page.evaluate(() => ({
    creditMicros: document.getElementById('credit-remaining').dataset.micros,
    creditText: document.getElementById('credit-remaining').textContent,
    allowance: [...document.querySelectorAll('#balance-panel [data-allowance]')].map((g) => ({ cls: g.dataset.allowance, used: g.dataset.usedNs, included: g.dataset.includedNs, text: g.textContent })),
    credits: [...document.querySelectorAll('#balance-panel [data-credit]')].map((g) => ({ id: g.dataset.credit, text: g.textContent, meter: g.querySelector('[role=meter]').getAttribute('aria-valuetext'), warn: g.querySelector('[role=meter]').classList.contains('high') })),
    plan: (document.querySelector('#balance-panel h3') || {}).textContent,
  }));
  check(`credit remaining shown ${shown.creditMicros} = balance API ${bal.credit_remaining_micros} ("${bal.credit_remaining}")`, () => {
    assert.equal(shown.creditMicros, String(bal.credit_remaining_micros));
    assert.ok(shown.creditText.includes(bal.credit_remaining + ' ' + bal.currency.toUpperCase()), shown.creditText);
  });
  check('the plan allowance gauge is the balance API\'s plan', () => {
    assert.ok(bal.plan, 'account A has a plan');
    assert.ok(shown.plan.includes('Plan ' + bal.plan.name), shown.plan);
    assert.deepEqual(shown.allowance.map((g) => [g.cls, g.used, g.included]), bal.plan.included.map((i) => [i.device_class, String(i.used_device_ns), String(i.included_device_ns)]));
    assert.ok(bal.plan.included[0].used_device_ns > 0, 'the requests used the allowance');
    assert.ok(shown.allowance[0].text.includes(formatNs(bal.plan.included[0].used_device_ns) + ' used of ' + formatNs(bal.plan.included[0].included_device_ns)), shown.allowance[0].text);
  });
  check(`one credit gauge per grant (${bal.credits.length}), each with the API's remainder`, () => {
    assert.ok(bal.credits.length >= 2);
    assert.deepEqual(shown.credits.map((c) => c.id), bal.credits.map((c) => String(c.id)));
    bal.credits.forEach((c, i) => {
      assert.ok(shown.credits[i].meter.includes(c.remaining + ' of ' + c.granted), shown.credits[i].meter);
      assert.ok(shown.credits[i].text.includes(c.expires_at ? 'Expires ' : 'Does not expire'), shown.credits[i].text);
      // the warning colour marks a credit nearly spent (10 % or less left), never a full one
      assert.equal(shown.credits[i].warn, c.remaining_micros * 10 <= c.granted_micros, 'warning colour on credit ' + c.id);
    });
  });
  await accessible(a.page, 'the allowance and credits panel');
  await a.page.screenshot({ path: join(outDir, 'console-balance.png'), fullPage: true });

  // ---- invoices: the list and the printable view are the invoice JSON ----
  await openTab(a.page, 'invoices', '#invoices-panel table.data');
  const invApi = await api('/v1/organization/invoices', keyA);
  const invRows = await rows(a.page, '#invoices-panel > table.data');
  check(`invoice rows = /v1/organization/invoices (${invApi.data.length})`, () => {
    assert.ok(invApi.data.length >= 1, 'the priced requests make a draft invoice');
    assert.deepEqual(invRows.map((r) => r.slice(0, 3)), invApi.data.map((i) => [i.period, i.status, i.total + ' ' + i.currency.toUpperCase()]));
  });
  const inv0 = invApi.data[0];
  const invDoc = await api('/v1/organization/invoices/' + inv0.id + '?format=json', keyA);
  await a.page.click('#invoices-panel > table.data tbody tr:first-child button');
  await a.page.waitForSelector('#invoice-detail article.invoice');
  const doc = await a.page.evaluate(() => ({
    title: document.querySelector('#invoice-detail h3').textContent,
    total: document.querySelector('#invoice-detail .total').textContent,
  }));
  const lineRows = await rows(a.page, '#invoice-detail table.data');
  check(`the printable invoice ${inv0.id} = its JSON: ${invDoc.lines.length} lines, total ${invDoc.total}`, () => {
    assert.ok(doc.title.includes(inv0.id) && doc.title.includes(invDoc.period), doc.title);
    assert.equal(doc.total, 'Total ' + invDoc.total + ' ' + invDoc.currency.toUpperCase());
    assert.equal(invDoc.total_micros, inv0.total_micros);
    assert.ok(invDoc.lines.length >= 1);
    assert.deepEqual(
      lineRows,
      invDoc.lines.map((l) => [l.model, l.device_class, String(l.requests), formatNs(l.device_ns), formatNs(l.included_ns), formatMicros(l.unit_price_micros_per_device_second), formatMicros(l.amount_micros), formatMicros(l.credits_micros), l.due]),
    );
  });
  await accessible(a.page, 'the invoices panel');
  await a.page.emulateMedia({ media: 'print' });
  const printed = await a.page.evaluate(() => ({
    article: getComputedStyle(document.querySelector('#invoice-detail article')).display,
    hidden: ['#tabs', 'header.top'].map((q) => getComputedStyle(document.querySelector(q)).display),
    print: getComputedStyle(document.querySelector('#invoice-detail .no-print')).display,
    paper: getComputedStyle(document.documentElement).backgroundColor,
  }));
  check('printing shows the invoice on white without the page\'s navigation', () => assert.deepEqual(printed, { article: 'block', hidden: ['none', 'none'], print: 'none', paper: 'rgb(255, 255, 255)' }));
  await a.page.screenshot({ path: join(outDir, 'console-invoice-print.png'), fullPage: true });
  await a.page.emulateMedia({ media: 'screen' });
  timing('requests, balance and invoice panels');

  // ---- another account's data is unreachable from A's session ----
  const crossing = await a.page.evaluate(async (bId) => {
    const now = Math.floor(Date.now() / 1000);
    const r = await fetch('/v1/organization/usage/completions?bucket_width=1h&group_by=api_key_id&start_time=' + (now - 7200) + '&api_key_ids=' + bId);
    const j = await r.json();
    return { status: r.status, results: j.data ? j.data.flatMap((b) => b.results).length : -1 };
  }, env('KEY_B_ID'));
  check('asking for account B\'s key from A\'s session matches nothing', () => assert.deepEqual(crossing, { status: 200, results: 0 }));
  const adminFromKey = await a.page.evaluate(async () => (await fetch('/admin/v1/accounts')).status);
  check('a key session cannot reach the admin API', () => assert.equal(adminFromKey, 401));
  const noCsrf = await a.page.evaluate(async () => (await fetch('/v1/completions', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"model":"demo-byte-lm","prompt":"x","max_tokens":1}' })).status);
  check('a POST with the cookie but without the CSRF token is refused', () => assert.equal(noCsrf, 403));

  const b = await newPage();
  await signIn(b.page, env('KEY_B'));
  const sb = await chartState(b.page);
  const apiB = await usageTotal(env('KEY_B'), { start_time: sb.start, end_time: sb.end, bucket_width: sb.bucket, group_by: sb.group, limit: 168 });
  check(`account B sees only its own usage (${sb.total} ns)`, () => {
    assert.equal(BigInt(sb.total), apiB);
    assert.ok(apiB > 0n);
  });
  await b.context.close();

  // ---- keyboard: the tabs move with the arrow keys ----
  await a.page.focus('#tab-usage');
  await a.page.keyboard.press('ArrowRight');
  const afterRight = await a.page.getAttribute('#tab-requests', 'aria-selected');
  check('ArrowRight moves to the Requests tab', () => assert.equal(afterRight, 'true'));
  await a.page.keyboard.press('ArrowRight');
  const focused = await a.page.evaluate(() => document.activeElement.id);
  check('the next ArrowRight selects and focuses Allowance & credits', () => assert.equal(focused, 'tab-balance'));
  await a.page.keyboard.press('End');
  const atEnd = await a.page.getAttribute('#tab-invoices', 'aria-selected');
  check('End selects the last tab', () => assert.equal(atEnd, 'true'));

  // ---- sign out; the cookie is dead ----
  await a.page.click('#sign-out');
  await a.page.waitForSelector('#sign-in:not([hidden])');
  const after = await a.page.evaluate(async () => (await fetch('/console/session')).status);
  check('signed out: the session answers 401', () => assert.equal(after, 401));
  await a.context.close();
  timing('isolation, keyboard, sign-out');

  // ---- the operator: every list is its /admin/v1 list; forms change state with the CSRF token ----
  const op = await newPage();
  await signIn(op.page, env('ADMIN_TOKEN'), true);
  await op.page.waitForSelector('#accounts-panel table.data');
  const accApi = await admin('/admin/v1/accounts');
  const accRows = await rows(op.page, '#accounts-panel table.data');
  check(`account rows = /admin/v1/accounts (${accApi.data.length})`, () => {
    assert.ok(accApi.data.some((x) => x.name === env('ACCOUNT_A')) && accApi.data.some((x) => x.name === env('ACCOUNT_B')));
    assert.deepEqual(accRows.map((r) => r.slice(0, 4)), accApi.data.map((x) => [x.name, x.currency.toUpperCase(), x.status, x.postpaid_allowed ? 'yes' : 'no']));
  });
  await accessible(op.page, 'the operator\'s accounts panel');

  // a POST with the operator's cookie but no CSRF token changes nothing
  const accountB = env('ACCOUNT_B');
  const creditsBefore = await admin('/admin/v1/accounts/' + accountB + '/credits');
  const balanceBefore = await admin('/admin/v1/accounts/' + accountB + '/balance');
  const forged = await op.page.evaluate(async (acct) => (await fetch('/admin/v1/accounts/' + acct + '/credits', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"kind":"topup","amount_micros":5}' })).status, accountB);
  const creditsForged = await admin('/admin/v1/accounts/' + accountB + '/credits');
  check('an operator POST without the CSRF token is a 403 and grants nothing', () => {
    assert.equal(forged, 403);
    assert.equal(creditsForged.data.length, creditsBefore.data.length);
  });
  // ... and the same grant through the form (which sends the token) takes effect
  await op.page.fill('#op-grant-credit-account', accountB);
  await op.page.selectOption('#op-grant-credit-kind', 'topup');
  await op.page.fill('#op-grant-credit-amount_micros', '777000');
  await op.page.click('form[aria-label="Grant credit"] button[type=submit]');
  await op.page.waitForFunction(() => /granted|[Ee]rror|must/.test(document.querySelector('form[aria-label="Grant credit"] .result').textContent));
  const grantMsg = await op.page.textContent('form[aria-label="Grant credit"] .result');
  const creditsAfter = await admin('/admin/v1/accounts/' + accountB + '/credits');
  const balanceAfter = await admin('/admin/v1/accounts/' + accountB + '/balance');
  check(`a credit granted in the form reaches the API ("${grantMsg}")`, () => {
    assert.match(grantMsg, /^Credit \d+ of 0\.777000 granted to /);
    assert.equal(creditsAfter.data.length, creditsBefore.data.length + 1);
    const added = creditsAfter.data.find((c) => !creditsBefore.data.some((o) => o.id === c.id));
    assert.deepEqual([added.kind, added.granted_micros, added.remaining_micros], ['topup', 777000, 777000]);
    assert.equal(balanceAfter.credit_remaining_micros - balanceBefore.credit_remaining_micros, 777000);
  });
  const badAmount = await (async () => {
    await op.page.fill('#op-grant-credit-amount_micros', '');
    await op.page.evaluate(() => { const i = document.getElementById('op-grant-credit-amount_micros'); i.type = 'text'; i.value = '1.5'; });
    await op.page.click('form[aria-label="Grant credit"] button[type=submit]');
    await op.page.waitForSelector('form[aria-label="Grant credit"] .result.error');
    return op.page.textContent('form[aria-label="Grant credit"] .result');
  })();
  const creditsBad = await admin('/admin/v1/accounts/' + accountB + '/credits');
  check('a fractional amount is refused in the page, and nothing is granted', () => {
    assert.match(badAmount, /whole number/);
    assert.equal(creditsBad.data.length, creditsAfter.data.length);
  });
  await op.page.screenshot({ path: join(outDir, 'console-operator-accounts.png'), fullPage: true });

  // prices: the table is /admin/v1/prices; a price set in the form is added
  await openTab(op.page, 'prices', '#prices-panel table.data');
  const pricesApi = await admin('/admin/v1/prices');
  const priceRows = await rows(op.page, '#prices-panel table.data');
  const priceRow = (p) => [p.model, p.device_class, p.currency.toUpperCase(), p.per_device_second];
  check(`price rows = /admin/v1/prices (${pricesApi.data.length})`, () => {
    assert.ok(pricesApi.data.length >= 1);
    assert.deepEqual(priceRows.map((r) => r.slice(0, 4)), pricesApi.data.map(priceRow));
  });
  await op.page.fill('#op-set-price-model', 'console-ui-model');
  await op.page.fill('#op-set-price-device_class', env('DEVICE_CLASS'));
  await op.page.fill('#op-set-price-currency', 'usd');
  await op.page.fill('#op-set-price-micros', '4242');
  await op.page.click('form[aria-label="Set price"] button[type=submit]');
  await op.page.waitForFunction((n) => document.querySelectorAll('#prices-panel table.data tbody tr').length === n, pricesApi.data.length + 1);
  const pricesAfter = await admin('/admin/v1/prices');
  const priceRowsAfter = await rows(op.page, '#prices-panel table.data');
  check('a price set in the form is in /admin/v1/prices and in the table', () => {
    const added = pricesAfter.data.filter((p) => p.model === 'console-ui-model');
    assert.equal(added.length, 1);
    assert.deepEqual([added[0].device_class, added[0].currency, added[0].micros_per_device_second, added[0].effective_to], [env('DEVICE_CLASS'), 'USD', 4242, null]);
    assert.deepEqual(priceRowsAfter.map((r) => r.slice(0, 4)), pricesAfter.data.map(priceRow));
  });
  await accessible(op.page, 'the operator\'s prices panel');
  await op.page.screenshot({ path: join(outDir, 'console-operator-prices.png'), fullPage: true });

  // plans: the table is /admin/v1/plans
  await openTab(op.page, 'plans', '#plans-panel table.data');
  const plansApi = await admin('/admin/v1/plans');
  const planRows = await rows(op.page, '#plans-panel table.data');
  check(`plan rows = /admin/v1/plans (${plansApi.data.length})`, () => {
    assert.ok(plansApi.data.some((p) => p.name === 'browser-basic'));
    assert.deepEqual(planRows, plansApi.data.map((p) => [String(p.id), p.name, formatNs(p.included_device_ns)]));
  });
  await accessible(op.page, 'the operator\'s plans panel');
  timing('operator accounts, credit grant, prices, plans');

  // keys: revoking one in the operator view makes its next request a 401
  const before = await fetch(base + '/v1/models', { headers: { Authorization: 'Bearer ' + env('REVOKE_KEY') } });
  check('the key to revoke works before', () => assert.equal(before.status, 200));
  await op.page.click('#tab-keys');
  await op.page.fill('#op-show-keys-account', env('ACCOUNT_A'));
  await op.page.click('form[aria-label="Show keys"] button[type=submit]');
  const revoke = `[data-revoke="${env('REVOKE_KEY_ID')}"]`;
  await op.page.waitForSelector(revoke);
  const keysApi = await admin('/admin/v1/keys?account=' + env('ACCOUNT_A'));
  const keyRows = await rows(op.page, '#keys-table');
  check(`key rows = /admin/v1/keys (${keysApi.data.length})`, () => assert.deepEqual(keyRows.map((r) => [r[0], r[1], r[3]]), keysApi.data.map((k) => [String(k.id), k.prefix, k.scope])));
  await accessible(op.page, 'the operator\'s keys panel');
  await op.page.click(revoke);
  await op.page.waitForSelector(revoke, { state: 'detached' });
  const gone = await fetch(base + '/v1/models', { headers: { Authorization: 'Bearer ' + env('REVOKE_KEY') } });
  check('after the operator revoked it, the key gets 401', () => assert.equal(gone.status, 401));
  await op.page.screenshot({ path: join(outDir, 'console-operator-keys.png'), fullPage: true });
  timing('operator keys');

  check('nothing loaded from outside the server, no script errors', () => assert.deepEqual(problems, []));
  console.log(`console e2e: PASSED (${checks} checks in ${Date.now() - t0} ms; screenshots in ${outDir})`);
} catch (e) {
  console.error('console e2e: FAILED: ' + (e.stack || e));
  if (problems.length) console.error(problems.join('\n'));
  process.exitCode = 1;
} finally {
  await browser.close();
}
