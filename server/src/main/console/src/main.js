// The gpumeter console: sign-in, then the customer's views (usage charts, balance, invoices,
// requests) or the operator's (accounts, keys, prices, plans). Reads only the public APIs; a
// panel whose endpoint this server does not have says so instead of failing.
import './style.css';
import { ApiError, NotAvailable, allPages, call, get, post, setCsrf } from './api.js';
import { el, table, time } from './dom.js';
import { gauge, stackedChart } from './chart.js';
import { BUCKET_SECONDS, axisMicros, axisNs, formatMicros, formatNs, fractionUsed, mergePages, rangeFor, toSeries } from './shape.js';

const $ = (id) => document.getElementById(id);
let session = null;

const CUSTOMER_TABS = [
  ['usage', 'Usage'],
  ['requests', 'Requests'],
  ['balance', 'Allowance & credits'],
  ['invoices', 'Invoices'],
];
const OPERATOR_TABS = [
  ['accounts', 'Accounts'],
  ['keys', 'Keys'],
  ['prices', 'Prices'],
  ['plans', 'Plans'],
];

function panel(title, id) {
  const h = el('h2', { id: id + '-title' }, title);
  return el('section', { class: 'card', id, 'aria-labelledby': id + '-title' }, h);
}

function problem(host, e) {
  if (e instanceof NotAvailable) {
    host.append(
      el('div', { class: 'not-available', role: 'status', 'data-not-available': e.path.split('?')[0] },
        el('strong', {}, 'Not available on this server. '),
        'This panel reads ' + e.path.split('?')[0] + ', which this gpumeter version does not serve yet.'),
    );
    return;
  }
  if (e instanceof ApiError && e.status === 401) {
    signedOut('Your session ended (' + e.message + '). Sign in again.');
    return;
  }
  host.append(el('p', { class: 'error', role: 'alert' }, e.message));
}

// ---------- sign-in ----------

function signedIn(s) {
  session = s;
  setCsrf(s.csrf_token);
  $('sign-in').hidden = true;
  $('sign-out').hidden = false;
  $('who').textContent =
    s.kind === 'operator'
      ? 'Operator'
      : 'Account ' + s.account + ' · key ' + s.key_prefix + '… (id ' + s.api_key_id + ', ' + s.scope + ')';
  const tabs = s.kind === 'operator' ? OPERATOR_TABS : CUSTOMER_TABS;
  const nav = $('tabs');
  nav.replaceChildren();
  nav.setAttribute('role', 'tablist');
  tabs.forEach(([id, label], i) => {
    const b = el('button', { type: 'button', role: 'tab', id: 'tab-' + id, 'aria-controls': 'view', 'aria-selected': i === 0 ? 'true' : 'false', tabindex: i === 0 ? '0' : '-1' }, label);
    b.addEventListener('click', () => show(id));
    b.addEventListener('keydown', (ev) => {
      const ids = tabs.map((t) => t[0]);
      const k = ids.indexOf(id);
      let next = null;
      if (ev.key === 'ArrowRight') next = ids[(k + 1) % ids.length];
      if (ev.key === 'ArrowLeft') next = ids[(k + ids.length - 1) % ids.length];
      if (ev.key === 'Home') next = ids[0];
      if (ev.key === 'End') next = ids[ids.length - 1];
      if (next) {
        ev.preventDefault();
        show(next);
        $('tab-' + next).focus();
      }
    });
    nav.append(b);
  });
  nav.hidden = false;
  show(tabs[0][0]);
}

function signedOut(message) {
  session = null;
  setCsrf(null);
  $('sign-in').hidden = false;
  $('sign-out').hidden = true;
  $('tabs').hidden = true;
  $('view').replaceChildren();
  $('who').textContent = '';
  $('sign-in-error').textContent = message || '';
  $('secret').focus();
}

$('sign-in-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const kind = new FormData(ev.target).get('kind');
  const secret = $('secret').value;
  $('secret').value = '';
  $('sign-in-error').textContent = '';
  try {
    const s = await call('POST', '/console/session', kind === 'operator' ? { admin_token: secret } : { api_key: secret });
    signedIn(s);
  } catch (e) {
    $('sign-in-error').textContent = e.message;
  }
});

$('sign-out').addEventListener('click', async () => {
  try {
    await call('DELETE', '/console/session');
  } finally {
    signedOut('Signed out.');
  }
});

// ---------- views ----------

const VIEWS = { usage, requests, balance, invoices, accounts, keys, prices, plans };

function show(id) {
  for (const b of $('tabs').querySelectorAll('[role=tab]')) {
    const on = b.id === 'tab-' + id;
    b.setAttribute('aria-selected', on ? 'true' : 'false');
    b.tabIndex = on ? 0 : -1;
  }
  const view = $('view');
  view.replaceChildren();
  view.setAttribute('role', 'tabpanel');
  view.setAttribute('aria-labelledby', 'tab-' + id);
  VIEWS[id](view);
}

const SPANS = { '1m': [['1 hour', 3600], ['6 hours', 21600]], '1h': [['24 hours', 86400], ['7 days', 604800]], '1d': [['7 days', 604800], ['30 days', 2592000]] };

function select(label, name, options, value) {
  const id = 'f-' + name;
  const s = el('select', { id, name });
  for (const [v, text] of options) s.append(el('option', { value: v, selected: v === value }, text));
  return [el('label', { for: id }, label), s];
}

function usage(view) {
  const card = panel('Device time and spend', 'usage-panel');
  const form = el('form', { class: 'controls', 'aria-label': 'Chart range and grouping' });
  const state = { bucket: '1h', span: 86400, group: 'model' };
  const [lb, sb] = select('Bucket', 'bucket', [['1m', 'minute'], ['1h', 'hour'], ['1d', 'day']], state.bucket);
  const [ls, ss] = select('Range', 'span', SPANS['1h'].map(([t, s]) => [String(s), t]), String(state.span));
  const [lg, sg] = select('Stack by', 'group', [['model', 'model'], ['api_key_id', 'key'], ['session_id', 'session']], state.group);
  form.append(el('div', {}, lb, sb), el('div', {}, ls, ss), el('div', {}, lg, sg));
  const refresh = el('button', { type: 'submit' }, 'Refresh');
  form.append(refresh);
  card.append(form);
  const timeHost = el('div', { id: 'chart-device-time' });
  const costHost = el('div', { id: 'chart-spend' });
  card.append(timeHost, costHost);
  view.append(card);

  sb.addEventListener('change', () => {
    state.bucket = sb.value;
    ss.replaceChildren(...SPANS[state.bucket].map(([t, s]) => el('option', { value: String(s) }, t)));
    state.span = Number(ss.value);
    load();
  });
  ss.addEventListener('change', () => { state.span = Number(ss.value); load(); });
  sg.addEventListener('change', () => { state.group = sg.value; load(); });
  form.addEventListener('submit', (ev) => { ev.preventDefault(); load(); });

  // Changing a control starts a new load while an older one may still be waiting for the server:
  // only the newest load may draw, so an older answer that arrives late never shows a chart for
  // controls that are no longer selected. data-loaded is the number of the load drawn.
  let generation = 0;
  async function load() {
    const mine = ++generation;
    const current = () => mine === generation;
    const { start, end } = rangeFor(state.bucket, state.span, Math.floor(Date.now() / 1000));
    const n = Math.ceil((end - start) / BUCKET_SECONDS[state.bucket]);
    const params = { start_time: start, end_time: end, bucket_width: state.bucket, group_by: state.group, limit: Math.min(n, { '1m': 1440, '1h': 168, '1d': 31 }[state.bucket]) };
    card.dataset.start = String(start);
    card.dataset.end = String(end);
    card.dataset.bucket = state.bucket;
    card.dataset.group = state.group;
    card.setAttribute('aria-busy', 'true');
    timeHost.replaceChildren(el('p', { class: 'muted' }, 'Loading…'));
    costHost.replaceChildren();
    const { groupBy, bucket } = { groupBy: state.group, bucket: state.bucket };
    try {
      const pages = await allPages('/v1/organization/usage/completions', params);
      if (!current()) return;
      const s = toSeries(mergePages(pages), { groupBy, metric: 'device_time_ns' });
      stackedChart(timeHost, { title: 'Device time', series: s, bucket, format: formatNs, axis: axisNs, totalAttr: 'data-total-ns', unitNote: 'device time' });
    } catch (e) {
      if (!current()) return;
      timeHost.replaceChildren();
      problem(timeHost, e);
    }
    try {
      const pages = await allPages('/v1/organization/costs', params);
      if (!current()) return;
      const s = toSeries(mergePages(pages), { groupBy, metric: 'cost_micros' });
      const currency = firstCurrency(pages);
      stackedChart(costHost, { title: 'Spend' + (currency ? ' (' + currency.toUpperCase() + ')' : ''), series: s, bucket, format: formatMicros, axis: axisMicros, totalAttr: 'data-total-micros', unitNote: 'currency units, exact to the micro-unit' });
    } catch (e) {
      if (!current()) return;
      costHost.replaceChildren(el('h3', {}, 'Spend'));
      problem(costHost, e);
    }
    card.setAttribute('aria-busy', 'false');
    card.dataset.loaded = String(mine);
  }
  load();
}

function firstCurrency(pages) {
  for (const p of pages) for (const b of p.data || []) for (const r of b.results || []) if (r.amount && r.amount.currency) return r.amount.currency;
  return null;
}

async function requests(view) {
  const card = panel('Last requests', 'requests-panel');
  view.append(card);
  try {
    const list = await get('/v1/organization/requests?limit=50');
    card.append(
      table('The 50 most recent requests, newest first', [
        { label: 'request', value: (r) => el('code', {}, r.request_id) },
        { label: 'time', value: (r) => time(r.created_at) },
        { label: 'model', value: (r) => r.model },
        { label: 'key', value: (r) => r.api_key_id },
        { label: 'status', value: (r) => el('span', { class: 'status ' + r.status }, r.status) },
        { label: 'tokens in / out', value: (r) => r.prompt_tokens + ' / ' + r.completion_tokens },
        { label: 'device time', value: (r) => formatNs(r.device_time_ns) },
        { label: 'prefill / decode', value: (r) => formatNs(r.prefill_time_ns) + ' / ' + formatNs(r.decode_time_ns) },
        { label: 'batch company', value: (r) => (r.batch_company === null || r.batch_company === undefined ? '—' : String(r.batch_company)) },
        { label: 'cost', value: (r) => (r.cost_micros === null || r.cost_micros === undefined ? '—' : formatMicros(r.cost_micros) + ' ' + (r.currency || '').toUpperCase()) },
      ], list.data || []),
    );
  } catch (e) {
    problem(card, e);
  }
}

async function balance(view) {
  const card = panel('Plan allowance and credits', 'balance-panel');
  view.append(card);
  try {
    const b = await get('/v1/organization/balance');
    const cur = (b.currency || '').toUpperCase();
    if (b.plan) {
      card.append(el('h3', {}, 'Plan ' + b.plan.name + ' · ' + time(b.plan.period_start) + ' to ' + time(b.plan.period_end)));
      for (const inc of b.plan.included || []) {
        card.append(gauge({
          data: { 'data-allowance': inc.device_class, 'data-used-ns': String(inc.used_device_ns), 'data-included-ns': String(inc.included_device_ns) },
          label: 'Included device time, ' + inc.device_class,
          fraction: fractionUsed(inc.used_device_ns, inc.included_device_ns),
          text: formatNs(inc.used_device_ns) + ' used of ' + formatNs(inc.included_device_ns) + ' (' + formatNs(inc.remaining_device_ns) + ' left)',
          note: 'Renews ' + time(b.plan.period_end),
        }));
      }
    } else {
      card.append(el('p', {}, 'No plan: usage is paid from credits' + (b.postpaid_allowed ? ' or postpaid.' : '.')));
    }
    card.append(el('h3', { id: 'credit-remaining', 'data-micros': String(b.credit_remaining_micros) }, 'Credits: ' + formatMicros(b.credit_remaining_micros) + ' ' + cur + ' remaining'));
    for (const c of b.credits || []) {
      // An expired grant is listed by the API but no longer counted: its gauge says so, empty.
      const row = gauge({
        label: (c.kind === 'topup' ? 'Top-up ' : 'Grant ') + c.id,
        fraction: c.expired ? 0 : 1 - fractionUsed(c.granted_micros - c.remaining_micros, c.granted_micros),
        remaining: true,
        text: (c.expired ? 'expired, ' : '') + formatMicros(c.remaining_micros) + ' of ' + formatMicros(c.granted_micros) + ' ' + cur + ' left',
        note: c.expires_at ? (c.expired ? 'Expired ' : 'Expires ') + time(c.expires_at) : 'Does not expire',
      });
      row.dataset.credit = String(c.id);
      card.append(row);
    }
  } catch (e) {
    problem(card, e);
  }
}

async function invoices(view) {
  const card = panel('Invoices', 'invoices-panel');
  view.append(card);
  const detail = el('div', { id: 'invoice-detail' });
  try {
    const list = await get('/v1/organization/invoices');
    card.append(
      table('Invoices, one per month', [
        { label: 'period', value: (i) => i.period || time(i.period_start) },
        { label: 'status', value: (i) => i.status || (i.finalized_at ? 'final' : 'draft') },
        { label: 'total', value: (i) => (i.total_micros === undefined ? '—' : formatMicros(i.total_micros) + ' ' + (i.currency || '').toUpperCase()) },
        { label: 'view', value: (i) => el('button', { type: 'button', onclick: () => printable(detail, i.id) }, 'Open ' + (i.period || i.id)) },
      ], list.data || []),
    );
    card.append(detail);
  } catch (e) {
    problem(card, e);
  }
}

async function printable(host, id) {
  host.replaceChildren();
  try {
    const inv = await get('/v1/organization/invoices/' + encodeURIComponent(id) + '?format=json');
    const cur = (inv.currency || '').toUpperCase();
    const doc = el('article', { class: 'invoice printable', 'aria-label': 'Invoice ' + (inv.period || id) });
    // The JSON document is `invoice show --format json`, which has no id: the list's id names it.
    doc.append(el('h3', {}, 'Invoice ' + (inv.id || id) + ' · ' + (inv.account || session.account) + ' · ' + (inv.period || '') + ' · ' + (inv.status || '')));
    doc.append(table('Lines', [
      { label: 'model', value: (l) => l.model || '' },
      { label: 'device class', value: (l) => l.device_class || '' },
      { label: 'requests', value: (l) => (l.requests === undefined ? '' : String(l.requests)) },
      { label: 'device time', value: (l) => (l.device_ns === undefined ? '' : formatNs(l.device_ns)) },
      { label: 'in the plan', value: (l) => (l.included_ns === undefined ? '' : formatNs(l.included_ns)) },
      { label: 'unit price / device-s', value: (l) => (l.unit_price_micros_per_device_second === undefined ? '' : formatMicros(l.unit_price_micros_per_device_second)) },
      { label: 'amount', value: (l) => (l.amount_micros === undefined ? '' : formatMicros(l.amount_micros)) },
      { label: 'credits', value: (l) => (l.credits_micros === undefined ? '' : formatMicros(l.credits_micros)) },
      { label: 'due', value: (l) => (l.due_micros === undefined ? '' : formatMicros(l.due_micros)) },
    ], inv.lines || []));
    if (inv.total_micros !== undefined) doc.append(el('p', { class: 'total' }, 'Total ' + formatMicros(inv.total_micros) + ' ' + cur));
    doc.append(el('button', { type: 'button', class: 'no-print', onclick: () => window.print() }, 'Print'));
    host.append(doc);
  } catch (e) {
    problem(host, e);
  }
}

// ---------- operator ----------

function form(label, fields, onSubmit) {
  const f = el('form', { class: 'controls', 'aria-label': label });
  const inputs = {};
  // Ids are per form ('op-create-key-account'), so two forms with an Account field do not share
  // one id and each label names its own input.
  const slug = label.toLowerCase().replace(/[^a-z0-9]+/g, '-');
  for (const fd of fields) {
    const id = 'op-' + slug + '-' + fd.name;
    const input = fd.options
      ? el('select', { id, name: fd.name }, fd.options.map((o) => el('option', { value: o }, o)))
      : el('input', { id, name: fd.name, type: fd.type || 'text', required: fd.required, placeholder: fd.placeholder || '', min: fd.min, step: fd.step });
    inputs[fd.name] = input;
    f.append(el('div', {}, el('label', { for: id }, fd.label), input));
  }
  const out = el('p', { class: 'result', role: 'status', 'aria-live': 'polite' });
  f.append(el('button', { type: 'submit' }, label), out);
  f.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    out.textContent = '';
    out.className = 'result';
    const values = Object.fromEntries(Object.entries(inputs).map(([k, i]) => [k, i.value.trim()]));
    try {
      const msg = await onSubmit(values);
      out.textContent = msg === undefined ? 'Done.' : msg;
    } catch (e) {
      out.className = 'result error';
      out.textContent = e instanceof NotAvailable ? 'Not available on this server (' + e.path + ').' : e.message;
    }
  });
  return f;
}

/**
 * A whole number typed into a form times `scale`, as a JSON-safe integer; anything else (a
 * fraction, a sign, more than 2^53) is refused here with a message, before any request.
 */
function integer(text, what, scale = 1) {
  if (!/^[0-9]+$/.test(text) || !Number.isSafeInteger(Number(text) * scale)) {
    throw new Error('The ' + what + ' must be a whole number' + (text.includes('.') ? ' (no decimal point: money is in micro-units)' : '') + '; got \'' + text + '\'.');
  }
  return Number(text) * scale;
}

async function accounts(view) {
  const card = panel('Accounts', 'accounts-panel');
  view.append(card);
  const reload = () => { view.replaceChildren(); accounts(view); };
  try {
    const list = await get('/admin/v1/accounts');
    card.append(table('Accounts', [
      { label: 'name', value: (a) => a.name },
      { label: 'currency', value: (a) => (a.currency || '').toUpperCase() },
      { label: 'status', value: (a) => a.status },
      { label: 'postpaid', value: (a) => (a.postpaid_allowed ? 'yes' : 'no') },
      { label: 'created', value: (a) => time(a.created_at) },
      { label: 'action', value: (a) => el('button', { type: 'button', onclick: async () => { await post('/admin/v1/accounts/' + encodeURIComponent(a.name) + (a.status === 'suspended' ? '/resume' : '/suspend')); reload(); } }, (a.status === 'suspended' ? 'Resume ' : 'Suspend ') + a.name) },
    ], list.data || []));
    card.append(form('Create account', [
      { name: 'name', label: 'Name', required: true },
      { name: 'currency', label: 'Currency', placeholder: 'usd', required: true },
    ], async (v) => { await post('/admin/v1/accounts', { name: v.name, currency: v.currency }); reload(); }));
    card.append(form('Grant credit', [
      { name: 'account', label: 'Account', required: true },
      { name: 'kind', label: 'Kind', options: ['topup', 'grant'] },
      { name: 'amount_micros', label: 'Amount in micro-units (1000000 = 1 unit)', type: 'number', required: true, min: '1', step: '1' },
    ], async (v) => {
      const c = await post('/admin/v1/accounts/' + encodeURIComponent(v.account) + '/credits', { kind: v.kind, amount_micros: integer(v.amount_micros, 'amount') });
      return 'Credit ' + c.id + ' of ' + c.granted + ' granted to ' + c.account + '.';
    }));
  } catch (e) {
    problem(card, e);
  }
}

// Keys: /admin/v1/keys, falling back to the older /admin/keys on servers without /admin/v1.
async function keyCall(method, v1, old, body) {
  try {
    return await call(method, v1, body);
  } catch (e) {
    if (e instanceof NotAvailable) return call(method, old, body);
    throw e;
  }
}

function keys(view) {
  const card = panel('API keys', 'keys-panel');
  view.append(card);
  const listHost = el('div', { id: 'keys-list' });
  const created = el('div', { id: 'key-created', 'aria-live': 'polite' });
  const lookup = form('Show keys', [{ name: 'account', label: 'Account', required: true }], async (v) => {
    await showKeys(v.account);
    return '';
  });
  card.append(lookup, listHost);
  card.append(form('Create key', [
    { name: 'account', label: 'Account', required: true },
    { name: 'label', label: 'Label' },
    { name: 'scope', label: 'Scope', options: ['inference', 'account_admin'] },
  ], async (v) => {
    const body = { account: v.account, scope: v.scope };
    let k;
    try {
      k = await call('POST', '/admin/v1/keys', v.label ? { ...body, label: v.label } : body);
    } catch (e) {
      if (!(e instanceof NotAvailable)) throw e;
      k = await call('POST', '/admin/keys', body);
    }
    created.replaceChildren(el('p', { class: 'secret' }, 'New key ' + k.id + ' (shown once, copy it now): ', el('code', { 'data-secret': 'new-key' }, k.key)));
    await showKeys(v.account);
    return 'Key ' + k.id + ' created.';
  }), created);

  async function showKeys(account) {
    listHost.replaceChildren();
    const q = '?account=' + encodeURIComponent(account);
    const list = await keyCall('GET', '/admin/v1/keys' + q, '/admin/keys' + q);
    listHost.append(table('Keys of ' + account, [
      { label: 'id', value: (k) => String(k.id) },
      { label: 'prefix', value: (k) => el('code', {}, k.prefix) },
      { label: 'label', value: (k) => k.label || '' },
      { label: 'scope', value: (k) => k.scope || '' },
      { label: 'created', value: (k) => time(k.created_at) },
      { label: 'revoked', value: (k) => (k.revoked_at ? time(k.revoked_at) : 'active') },
      { label: 'action', value: (k) => (k.revoked_at ? '' : el('button', { type: 'button', 'data-revoke': String(k.id), onclick: async (ev) => {
        ev.target.disabled = true;
        await keyCall('POST', '/admin/v1/keys/' + k.id + '/revoke', '/admin/keys/' + k.id + '/revoke', {});
        await showKeys(account);
      } }, 'Revoke key ' + k.id)) },
    ], list.data || [], { id: 'keys-table' }));
  }
}

async function prices(view) {
  const card = panel('Prices', 'prices-panel');
  view.append(card);
  const reload = () => { view.replaceChildren(); prices(view); };
  try {
    const list = await get('/admin/v1/prices');
    card.append(table('Price versions', [
      { label: 'model', value: (p) => p.model },
      { label: 'device class', value: (p) => p.device_class },
      { label: 'currency', value: (p) => (p.currency || '').toUpperCase() },
      { label: 'per device-second', value: (p) => formatMicros(p.micros_per_device_second) },
      { label: 'from', value: (p) => time(p.effective_from) },
      { label: 'to', value: (p) => (p.effective_to ? time(p.effective_to) : 'open') },
    ], list.data || []));
    card.append(form('Set price', [
      { name: 'model', label: 'Model (or *)', required: true },
      { name: 'device_class', label: 'Device class', required: true, placeholder: 'cpu' },
      { name: 'currency', label: 'Currency', placeholder: 'usd', required: true },
      { name: 'micros', label: 'Micro-units per device-second', type: 'number', required: true, min: '0', step: '1' },
      { name: 'from', label: 'Effective from (unix seconds; empty for now)', type: 'number', min: '0', step: '1' },
    ], async (v) => {
      const body = { model: v.model, device_class: v.device_class, currency: v.currency.toUpperCase(), micros_per_device_second: integer(v.micros, 'price') };
      if (v.from !== '') body.effective_from = integer(v.from, 'effective from');
      await post('/admin/v1/prices', body);
      reload();
    }));
  } catch (e) {
    problem(card, e);
  }
}

async function plans(view) {
  const card = panel('Plans', 'plans-panel');
  view.append(card);
  const reload = () => { view.replaceChildren(); plans(view); };
  try {
    const list = await get('/admin/v1/plans');
    card.append(table('Plans', [
      { label: 'id', value: (p) => String(p.id) },
      { label: 'name', value: (p) => p.name },
      { label: 'included per month', value: (p) => formatNs(p.included_device_ns) },
    ], list.data || []));
    card.append(form('Create plan', [
      { name: 'name', label: 'Name', required: true },
      { name: 'seconds', label: 'Included device-seconds per month', type: 'number', required: true },
    ], async (v) => {
      await post('/admin/v1/plans', { name: v.name, included_device_ns: integer(v.seconds, 'device-seconds', 1000000000) });
      reload();
    }));
    card.append(form('Put an account on a plan', [
      { name: 'account', label: 'Account', required: true },
      { name: 'plan', label: 'Plan', required: true },
    ], async (v) => {
      await post('/admin/v1/accounts/' + encodeURIComponent(v.account) + '/plan', { plan: v.plan });
      return v.account + ' is on ' + v.plan + '.';
    }));
  } catch (e) {
    problem(card, e);
  }
}

// A reloaded page picks its session up again (the cookie is HttpOnly; the CSRF token comes back
// from GET /console/session, which a page of another site cannot read).
(async () => {
  try {
    signedIn(await get('/console/session'));
  } catch {
    signedOut('');
  }
})();
