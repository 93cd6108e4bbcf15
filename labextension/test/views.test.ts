// Unit tests of the pure parts of the views (node's test runner; `jlpm test`).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { compactCoins, formatCoins, formatCountdown, relativeTime } from '../src/views/format';
import { readLimits } from '../src/views/keyLimits';
import { nextSort, sortRows, type SortColumn } from '../src/views/sort';
import { chartData, niceTicks } from '../src/views/spendingChart';
import { exhaustedNote, fillPermille } from '../src/views/tiles';

test('coins are formatted from micro-coins without floats', () => {
  assert.equal(formatCoins(0), '0');
  assert.equal(formatCoins(1), '0.000001');
  assert.equal(formatCoins(800), '0.0008');
  assert.equal(formatCoins(1_250_000), '1.25');
  assert.equal(formatCoins(20_000_000), '20');
  assert.equal(formatCoins(-250_000), '−0.25');
  assert.equal(formatCoins(1_234_567_890_123), '1,234,567.890123');
  // 0.1 + 0.2 style traps: exact from integers.
  assert.equal(formatCoins(100_000 + 200_000), '0.3');
  assert.equal(formatCoins(Number.MAX_SAFE_INTEGER), '9,007,199,254.740991');
  // Rounding to fewer places happens on integers, half away from zero.
  assert.equal(formatCoins(1_234_567, 2), '1.23');
  assert.equal(formatCoins(1_235_000, 2), '1.24');
  assert.equal(formatCoins(-1_235_000, 2), '−1.24');
  assert.equal(formatCoins(4_999, 2), '0');
  assert.equal(compactCoins(1_500_000_000_000), '1.5M');
});

test('countdown and relative times', () => {
  assert.equal(formatCountdown(0), '0:00');
  assert.equal(formatCountdown(-5_000), '0:00');
  assert.equal(formatCountdown(61_000), '1:01');
  assert.equal(formatCountdown(3_599_001), '1:00:00');
  assert.equal(formatCountdown(3_723_000), '1:02:03');
  const now = Date.parse('2026-03-04T12:00:00Z');
  assert.equal(relativeTime(null, now), 'Never');
  assert.equal(relativeTime('2026-03-04T11:59:50Z', now), 'just now');
  assert.equal(relativeTime('2026-03-04T11:55:00Z', now), '5 min ago');
  assert.equal(relativeTime('2026-03-04T09:00:00Z', now), '3 h ago');
  assert.equal(relativeTime('2026-03-03T12:00:00Z', now), 'yesterday');
});

interface Row {
  name: string;
  n: number | null;
}

test('sorting: text ascending first, numbers descending first, empty last', () => {
  const columns: SortColumn<Row>[] = [
    { id: 'name', kind: 'text', value: r => r.name },
    { id: 'n', kind: 'number', value: r => r.n }
  ];
  const rows: Row[] = [
    { name: 'b', n: 2 },
    { name: 'A', n: null },
    { name: 'c', n: 10 },
    { name: 'a2', n: 2 }
  ];
  const byName = sortRows(rows, columns, { column: 'name', direction: 'ascending' }, r => r.name);
  assert.deepEqual(
    byName.map(r => r.name),
    ['A', 'a2', 'b', 'c']
  );
  const first = nextSort(
    { column: 'name', direction: 'ascending' },
    columns[1] as SortColumn<unknown>
  );
  assert.deepEqual(first, { column: 'n', direction: 'descending' });
  const byN = sortRows(rows, columns, first, r => r.name);
  assert.deepEqual(
    byN.map(r => r.name),
    ['c', 'a2', 'b', 'A']
  );
  const flipped = nextSort(first, columns[1] as SortColumn<unknown>);
  assert.equal(flipped.direction, 'ascending');
  const up = sortRows(rows, columns, flipped, r => r.name);
  assert.deepEqual(
    up.map(r => r.name),
    ['a2', 'b', 'c', 'A']
  );
});

test('progress bar share is computed on integers', () => {
  assert.equal(fillPermille(12_345_678, 20_000_000), 617);
  assert.equal(fillPermille(-1, 20_000_000), 0);
  assert.equal(fillPermille(30, 20), 1000);
  assert.equal(fillPermille(5, 0), 0);
});

test('chart data: stacked series, at most eight, the rest as Other', () => {
  const names = Array.from({ length: 10 }, (_, i) => `m${i}`);
  const totals = Object.fromEntries(
    names.map((n, i) => [n, { requests: 1, tokens: 10, coins_micro: (i + 1) * 1000 }])
  );
  const usage = {
    period: 'week' as const,
    bucket: 'day' as const,
    group_by: 'model',
    series: names,
    buckets: [
      { start: '2026-03-03', values: totals },
      { start: '2026-03-04', values: {} }
    ],
    totals
  };
  const data = chartData(usage, 'coins');
  assert.equal(data.series.length, 8);
  assert.equal(data.series[0], 'm9');
  assert.equal(data.series[7], 'Other');
  assert.equal(
    data.totals.reduce((a, b) => a + b, 0),
    55_000
  );
  assert.equal(data.totals[7], 1000 + 2000 + 3000);
  assert.equal(data.rows[1].total, 0);
  assert.equal(data.max, 55_000);
  assert.deepEqual(niceTicks(55_000), [0, 20_000, 40_000, 60_000]);
  assert.deepEqual(niceTicks(0), [0]);
  assert.deepEqual(niceTicks(3), [0, 1, 2, 3]);
});

test('an exhausted pool promises a refill only when it has one', () => {
  const pool = (micro: number) =>
    ({
      state: 'limited',
      exhausted: true,
      refresh_per_hour: { micro, text: String(micro / 1_000_000) }
    }) as unknown as Parameters<typeof exhaustedNote>[0];
  assert.match(exhaustedNote(pool(1_000_000)), /until the next refill or an admin grant/);
  const never = exhaustedNote(pool(0));
  assert.doesNotMatch(never, /refill or/);
  assert.match(never, /until an admin grants more coins \(this pool does not refill\)/);
});

test("a new key's limits are read from the dialog, or refused with a message", () => {
  assert.deepEqual(readLimits('', ''), {});
  assert.deepEqual(readLimits(' 5 ', '7d'), { budget: '5', expires_in: '7d' });
  assert.deepEqual(readLimits('0.25', ''), { budget: '0.25' });
  for (const bad of ['0', '-1', 'five', '1e3', '0.0000001', '1,5']) {
    assert.equal(typeof readLimits(bad, ''), 'string', bad);
  }
});
