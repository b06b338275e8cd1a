// A stacked time-series chart (uPlot) with its accessible fallback: an aria-labelled figure and a
// data table of the same numbers (every bucket, every group, the totals).
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { stack } from './shape.js';
import { el } from './dom.js';

export const PALETTE = ['#3b82f6', '#f59e0b', '#10b981', '#ef4444', '#8b5cf6', '#14b8a6', '#ec4899', '#84cc16', '#64748b'];

function timeLabel(t, bucket) {
  const d = new Date(t * 1000);
  const iso = d.toISOString();
  return bucket === '1d' ? iso.slice(0, 10) : iso.slice(0, 16).replace('T', ' ');
}

/**
 * Renders `series` (toSeries) into `host`: title, legend, chart, and a <details> data table.
 * `format` turns an integer (Number or BigInt) into text; `totalAttr` names the data attribute
 * that carries the exact total (for tests and scripts).
 */
export function stackedChart(host, { title, series, bucket, format, axis, totalAttr, unitNote }) {
  host.replaceChildren();
  const id = 'c' + Math.random().toString(36).slice(2, 8);
  const groups = series.groups;
  const totalText = format(series.total);
  const fig = el('figure', { class: 'chart', role: 'group', 'aria-labelledby': id + '-t' });
  fig.append(el('figcaption', { id: id + '-t' }, title + ' — total ', el('strong', {}, totalText)));
  if (groups.length === 0) {
    fig.append(el('p', { class: 'empty' }, 'No usage in this range.'));
  }
  const plot = el('div', {
    class: 'plot',
    role: 'img',
    'aria-label':
      title + ', stacked by group, ' + series.times.length + ' buckets of ' + bucket + '. Total ' + totalText + '. ' +
      groups.map((g) => g + ': ' + format(series.groupTotals[g])).join('; ') + '. The data table below has every value.',
  });
  fig.append(plot);
  const legend = el('ul', { class: 'legend', 'aria-label': title + ' legend' });
  groups.forEach((g, i) => {
    legend.append(
      el('li', {}, el('span', { class: 'swatch c' + (i % PALETTE.length), 'aria-hidden': 'true' }), g + ' ', el('span', { class: 'muted' }, format(series.groupTotals[g]))),
    );
  });
  fig.append(legend);
  host.append(fig);

  if (groups.length > 0 && series.times.length > 0) {
    const rows = stack(series);
    // Painter's order: the full stack first, each lower group drawn over it.
    const order = groups.map((g, i) => i).reverse();
    const bars = uPlot.paths.bars({ size: [0.8, 64] });
    const width = Math.max(320, Math.min(host.clientWidth || 900, 1100));
    const opts = {
      width,
      height: 260,
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true } },
      axes: [
        { stroke: '#475569', grid: { stroke: '#e2e8f0' } },
        { stroke: '#475569', grid: { stroke: '#e2e8f0' }, size: 70, values: (u, vals) => vals.map(axis) },
      ],
      series: [{}, ...order.map((i) => ({ label: groups[i], stroke: PALETTE[i % PALETTE.length], fill: PALETTE[i % PALETTE.length], paths: bars, points: { show: false } }))],
    };
    const data = [series.times, ...order.map((i) => rows[i])];
    new uPlot(opts, data, plot);
  }

  const table = el('table', { class: 'data', 'data-total': series.total.toString(), [totalAttr]: series.total.toString() });
  table.append(el('caption', {}, title + ' by bucket' + (unitNote ? ' (' + unitNote + ')' : '')));
  const head = el('tr', {}, el('th', { scope: 'col' }, 'bucket start (UTC)'));
  groups.forEach((g) => head.append(el('th', { scope: 'col' }, g)));
  head.append(el('th', { scope: 'col' }, 'total'));
  table.append(el('thead', {}, head));
  const body = el('tbody');
  series.times.forEach((t, j) => {
    if (series.bucketTotals[j] === 0n) return;
    const tr = el('tr', {}, el('th', { scope: 'row' }, timeLabel(t, bucket)));
    groups.forEach((g) => tr.append(el('td', {}, format(BigInt(series.values[g][j])))));
    tr.append(el('td', {}, format(series.bucketTotals[j])));
    body.append(tr);
  });
  table.append(body);
  const foot = el('tr', {}, el('th', { scope: 'row' }, 'total'));
  groups.forEach((g) => foot.append(el('td', {}, format(series.groupTotals[g]))));
  foot.append(el('td', { class: 'grand-total' }, totalText));
  table.append(el('tfoot', {}, foot));
  const details = el('details', { class: 'table-fallback' }, el('summary', {}, 'Data table: ' + title), table);
  host.append(details);
  return table;
}

/**
 * A horizontal gauge: role=meter with its numbers in text. `fraction` is what the bar fills: used
 * (an allowance: a warning colour at 90 % used) or, with `remaining: true`, what is left (a
 * credit: the warning at 10 % left, so a full credit is not painted as an alarm).
 */
export function gauge({ label, fraction, text, note, data, remaining = false }) {
  const pct = Math.round(fraction * 1000) / 10;
  const warn = remaining ? fraction <= 0.1 : fraction >= 0.9;
  const bar = el('div', {
    class: 'gauge' + (warn ? ' high' : ''),
    role: 'meter',
    'aria-label': label,
    'aria-valuemin': '0',
    'aria-valuemax': '100',
    'aria-valuenow': String(pct),
    'aria-valuetext': text,
  });
  const fill = el('div', { class: 'fill' });
  fill.style.width = pct + '%';
  bar.append(fill);
  return el('div', { class: 'gauge-row', ...(data || {}) }, el('div', { class: 'gauge-label' }, label), bar, el('div', { class: 'gauge-text' }, text), note ? el('div', { class: 'muted' }, note) : '');
}
