// Tiny DOM helpers: text is always set as text (never HTML), so server data cannot inject markup.

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === '') continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

/** A table from rows and column definitions [{label, value: row => text|Node}]. */
export function table(caption, columns, rows, attrs = {}) {
  const t = el('table', { class: 'data', ...attrs });
  t.append(el('caption', {}, caption));
  t.append(el('thead', {}, el('tr', {}, columns.map((c) => el('th', { scope: 'col' }, c.label)))));
  const body = el('tbody');
  if (rows.length === 0) {
    body.append(el('tr', {}, el('td', { colspan: String(columns.length), class: 'empty' }, 'Nothing yet.')));
  }
  for (const r of rows) body.append(el('tr', {}, columns.map((c) => el('td', {}, c.value(r)))));
  t.append(body);
  return t;
}

export function time(t) {
  if (t === null || t === undefined) return '—';
  const d = typeof t === 'number' ? new Date(t * 1000) : new Date(t);
  return isNaN(d) ? String(t) : d.toISOString().slice(0, 19).replace('T', ' ') + ' UTC';
}
