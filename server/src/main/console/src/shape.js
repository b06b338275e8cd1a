// Data shaping for the charts: pure functions, unit-tested with vitest (test/shape.test.js).
// Inputs are the pages of /v1/organization/usage/completions and /v1/organization/costs:
// {"object":"page","data":[{"start_time","end_time","results":[...]}],"has_more","next_page"}.
// Values are integers (nanoseconds, micro-units); sums are exact BigInt, plotted as Numbers.

/** The label of a result under `groupBy` ('model' | 'api_key_id' | 'session_id' | 'device' | null). */
export function groupLabel(result, groupBy) {
  if (!groupBy) return 'all';
  const v = result[groupBy];
  return v === null || v === undefined || v === '' ? '(none)' : String(v);
}

/** Reads a metric from a result: 'device_time_ns' etc. for usage, 'cost_micros' for costs. */
export function metricValue(result, metric) {
  if (metric === 'cost_micros') {
    const a = result.amount;
    return a && Number.isInteger(a.value_micros) ? a.value_micros : 0;
  }
  const v = result[metric];
  return Number.isInteger(v) ? v : 0;
}

/** Concatenates the buckets of several pages, in order, dropping a bucket repeated at a seam. */
export function mergePages(pages) {
  const out = [];
  const seen = new Set();
  for (const p of pages) {
    for (const b of p.data || []) {
      if (seen.has(b.start_time)) continue;
      seen.add(b.start_time);
      out.push(b);
    }
  }
  out.sort((a, b) => a.start_time - b.start_time);
  return out;
}

/**
 * Buckets to one series per group: {times, groups, values: {group: number[]}, bucketTotals:
 * bigint[], groupTotals: {group: bigint}, total: bigint}. Groups are ordered by their total,
 * largest first (ties by name), so the biggest sits at the bottom of a stack.
 */
export function toSeries(buckets, { groupBy = null, metric = 'device_time_ns' } = {}) {
  const times = buckets.map((b) => b.start_time);
  const totals = new Map();
  for (const b of buckets) {
    for (const r of b.results || []) {
      const g = groupLabel(r, groupBy);
      totals.set(g, (totals.get(g) || 0n) + BigInt(metricValue(r, metric)));
    }
  }
  const groups = [...totals.keys()].sort((a, b) => {
    const d = totals.get(b) - totals.get(a);
    return d > 0n ? 1 : d < 0n ? -1 : a < b ? -1 : a > b ? 1 : 0;
  });
  const values = {};
  for (const g of groups) values[g] = new Array(buckets.length).fill(0);
  const bucketTotals = new Array(buckets.length).fill(0n);
  buckets.forEach((b, i) => {
    for (const r of b.results || []) {
      const v = metricValue(r, metric);
      values[groupLabel(r, groupBy)][i] += v;
      bucketTotals[i] += BigInt(v);
    }
  });
  const groupTotals = Object.fromEntries(groups.map((g) => [g, totals.get(g)]));
  const total = bucketTotals.reduce((a, b) => a + b, 0n);
  return { times, groups, values, bucketTotals, groupTotals, total };
}

/**
 * Stacks the series: row i is the sum of groups 0..i per bucket, so drawing rows from the last
 * (the full height) to the first gives a stacked chart. Returns one array per group, same order.
 */
export function stack(series) {
  const rows = [];
  let running = new Array(series.times.length).fill(0);
  for (const g of series.groups) {
    running = running.map((v, i) => v + series.values[g][i]);
    rows.push(running);
  }
  return rows;
}

/** Micro-units as a decimal string with six places, exactly (no floating point). */
export function formatMicros(micros) {
  const m = BigInt(micros);
  const neg = m < 0n;
  const abs = neg ? -m : m;
  const units = abs / 1000000n;
  const frac = (abs % 1000000n).toString().padStart(6, '0');
  return (neg ? '-' : '') + units.toString() + '.' + frac;
}

/** Nanoseconds for people: "812 ns", "3.400 ms", "1.250 s", "2 h 03 min". */
export function formatNs(ns) {
  const n = BigInt(ns);
  const abs = n < 0n ? -n : n;
  const sign = n < 0n ? '-' : '';
  const fixed3 = (v, unit) => {
    const whole = v / unit;
    const frac = ((v % unit) * 1000n) / unit;
    return whole.toString() + '.' + frac.toString().padStart(3, '0');
  };
  if (abs < 1000n) return sign + abs + ' ns';
  if (abs < 1000000n) return sign + fixed3(abs, 1000n) + ' µs';
  if (abs < 1000000000n) return sign + fixed3(abs, 1000000n) + ' ms';
  if (abs < 3600n * 1000000000n) return sign + fixed3(abs, 1000000000n) + ' s';
  const min = abs / 60000000000n;
  return sign + (min / 60n) + ' h ' + String(min % 60n).padStart(2, '0') + ' min';
}

/** Width of a bucket in seconds. */
export const BUCKET_SECONDS = { '1m': 60, '1h': 3600, '1d': 86400 };

/**
 * The query range for a bucket width and a span in seconds ending now: start rounded down and end
 * rounded up to whole buckets, as the server rounds them, so the chart and the API agree.
 */
export function rangeFor(bucketWidth, spanSeconds, nowSeconds) {
  const w = BUCKET_SECONDS[bucketWidth];
  if (!w) throw new Error('unknown bucket width ' + bucketWidth);
  const end = Math.ceil(nowSeconds / w) * w;
  const start = Math.floor((nowSeconds - spanSeconds) / w) * w;
  return { start, end };
}

/** Fraction used of an allowance, clamped to [0, 1], from integers. */
export function fractionUsed(used, included) {
  const u = BigInt(used);
  const i = BigInt(included);
  if (i <= 0n) return u > 0n ? 1 : 0;
  if (u <= 0n) return 0;
  if (u >= i) return 1;
  return Number((u * 10000n) / i) / 10000;
}

/** A short axis label for a plotted nanosecond value (a Number): "250 ms", "1.5 s", "0". */
export function axisNs(v) {
  const a = Math.abs(v);
  const units = [[3.6e12, ' h'], [1e9, ' s'], [1e6, ' ms'], [1e3, ' µs'], [1, ' ns']];
  for (const [scale, unit] of units) {
    if (a >= scale) return Number((v / scale).toPrecision(3)) + unit;
  }
  return '0';
}

/** A short axis label for a plotted micro-unit value (a Number), in currency units. */
export function axisMicros(v) {
  if (v === 0) return '0';
  return String(Number((v / 1e6).toPrecision(3)));
}
