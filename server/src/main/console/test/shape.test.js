import { describe, expect, it } from 'vitest';
import {
  formatMicros,
  formatNs,
  fractionUsed,
  groupLabel,
  mergePages,
  rangeFor,
  stack,
  toSeries,
} from '../src/shape.js';

const usage = (start, results) => ({ object: 'bucket', start_time: start, end_time: start + 60, results });
const r = (model, key, ns, extra = {}) => ({
  object: 'organization.usage.completions.result',
  model,
  api_key_id: key,
  session_id: null,
  device_time_ns: ns,
  ...extra,
});

describe('toSeries', () => {
  const buckets = [
    usage(0, [r('a', '1', 5), r('b', '1', 7)]),
    usage(60, []),
    usage(120, [r('a', '2', 11), r('b', '2', 1)]),
  ];

  it('sums each group per bucket and in total, exactly', () => {
    const s = toSeries(buckets, { groupBy: 'model' });
    expect(s.times).toEqual([0, 60, 120]);
    expect(s.groups).toEqual(['a', 'b']);
    expect(s.values.a).toEqual([5, 0, 11]);
    expect(s.values.b).toEqual([7, 0, 1]);
    expect(s.bucketTotals).toEqual([12n, 0n, 12n]);
    expect(s.groupTotals).toEqual({ a: 16n, b: 8n });
    expect(s.total).toBe(24n);
  });

  it('groups by key, largest total first, ties by name', () => {
    const s = toSeries(buckets, { groupBy: 'api_key_id' });
    expect(s.groups).toEqual(['1', '2']);
    expect(s.groupTotals).toEqual({ 1: 12n, 2: 12n });
  });

  it('puts every result in one group when not grouped, and labels a missing value', () => {
    expect(toSeries(buckets, {}).groups).toEqual(['all']);
    expect(groupLabel({ session_id: null }, 'session_id')).toBe('(none)');
  });

  it('keeps totals exact past 2^53 in sum', () => {
    const big = 2 ** 52;
    const s = toSeries([usage(0, [r('a', '1', big), r('a', '1', big), r('a', '1', 3)])], {
      groupBy: 'model',
    });
    expect(s.total).toBe(2n ** 53n + 3n);
  });

  it('reads cost amounts in micro-units', () => {
    const cost = (m, micros) => ({ model: m, amount: { value_micros: micros, value: '', currency: 'usd' } });
    const s = toSeries([usage(0, [cost('a', 120), cost('b', 3)])], { groupBy: 'model', metric: 'cost_micros' });
    expect(s.total).toBe(123n);
    expect(s.values.b).toEqual([3]);
  });
});

describe('stack', () => {
  it('accumulates groups bottom-up per bucket; the last row is the bucket total', () => {
    const s = toSeries([usage(0, [r('a', '1', 5), r('b', '1', 7)]), usage(60, [r('b', '1', 2)])], {
      groupBy: 'model',
    });
    const rows = stack(s);
    expect(s.groups).toEqual(['b', 'a']);
    expect(rows).toEqual([
      [7, 2],
      [12, 2],
    ]);
    expect(rows[rows.length - 1].map(BigInt)).toEqual(s.bucketTotals);
  });
});

describe('mergePages', () => {
  it('concatenates pages in time order without repeating a bucket', () => {
    const p1 = { data: [usage(0, []), usage(60, [])] };
    const p2 = { data: [usage(60, []), usage(120, [])] };
    expect(mergePages([p2, p1]).map((b) => b.start_time)).toEqual([0, 60, 120]);
  });
});

describe('formatting', () => {
  it('writes micro-units as exact decimals', () => {
    expect(formatMicros(123)).toBe('0.000123');
    expect(formatMicros(1234567891)).toBe('1234.567891');
    expect(formatMicros(-5)).toBe('-0.000005');
    expect(formatMicros(9007199254740993n)).toBe('9007199254.740993');
  });

  it('writes nanoseconds with a unit', () => {
    expect(formatNs(999)).toBe('999 ns');
    expect(formatNs(3400000)).toBe('3.400 ms');
    expect(formatNs(1250000000)).toBe('1.250 s');
    expect(formatNs(7380n * 1000000000n)).toBe('2 h 03 min');
  });

  it('rounds a range to whole buckets like the server', () => {
    expect(rangeFor('1h', 86400, 90000)).toEqual({ start: 3600, end: 90000 });
    expect(rangeFor('1m', 3600, 3601)).toEqual({ start: 0, end: 3660 });
    expect(() => rangeFor('5m', 60, 0)).toThrow();
  });

  it('computes the used fraction of an allowance from integers', () => {
    expect(fractionUsed(5, 10)).toBe(0.5);
    expect(fractionUsed(20, 10)).toBe(1);
    expect(fractionUsed(0, 0)).toBe(0);
    expect(fractionUsed(1, 3)).toBe(0.3333);
  });
});

describe('axis labels', () => {
  it('are short and keep three significant digits', async () => {
    const { axisNs, axisMicros } = await import('../src/shape.js');
    expect(axisNs(0)).toBe('0');
    expect(axisNs(250000000)).toBe('250 ms');
    expect(axisNs(1500000000)).toBe('1.5 s');
    expect(axisNs(12345)).toBe('12.3 µs');
    expect(axisMicros(1234567)).toBe('1.23');
    expect(axisMicros(0)).toBe('0');
  });
});
