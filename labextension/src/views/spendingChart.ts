/**
 * Spending history: an SVG bar chart of coins (or tokens) per time bucket,
 * stacked by model, with axis labels and a legend carrying each series' total,
 * so it reads without hovering. Period: week, month, year, all. No network: it
 * draws the usage history it is given.
 */

import type { ViewContext } from './context';
import { messageOf } from './dialog';
import { h, svg } from './dom';
import { bucketLabel, compactCoins, compactNumber, formatCoins, formatCount } from './format';
import {
  PERIODS,
  type Period,
  type ProfileState,
  type UsageHistory,
  type UsageValues
} from './types';

export type Metric = 'coins' | 'tokens';

const MAX_SERIES = 8;
const OTHER = 'Other';
const WIDTH = 760;
const HEIGHT = 260;
const PAD = { left: 64, right: 12, top: 12, bottom: 40 };

const PERIOD_LABEL: Record<Period, string> = {
  week: 'Week',
  month: 'Month',
  year: 'Year',
  all: 'All'
};

const PERIOD_SENTENCE: Record<Period, string> = {
  week: 'the last 7 days',
  month: 'the last 30 days',
  year: 'the last 12 months',
  all: 'all time'
};

function metricOf(values: UsageValues | undefined, metric: Metric): number {
  if (!values) {
    return 0;
  }
  return metric === 'coins' ? (values.coins_micro ?? 0) : (values.tokens ?? 0);
}

export interface ChartData {
  series: string[];
  /** per bucket: [start label, values in series order] */
  rows: { start: string; label: string; values: number[]; total: number }[];
  totals: number[];
  max: number;
}

/** Fold the history into at most MAX_SERIES series (the rest as "Other"). */
export function chartData(usage: UsageHistory, metric: Metric): ChartData {
  const ordered = [...usage.series].sort(
    (a, b) =>
      metricOf(usage.totals[b], metric) - metricOf(usage.totals[a], metric) || a.localeCompare(b)
  );
  const used = ordered.filter(name => metricOf(usage.totals[name], metric) > 0);
  const named = used.length > MAX_SERIES ? used.slice(0, MAX_SERIES - 1) : used;
  const hasOther = used.length > named.length;
  const series = hasOther ? [...named, OTHER] : named;
  const index = new Map(named.map((name, i) => [name, i]));
  const rows = usage.buckets.map(bucket => {
    const values = new Array<number>(series.length).fill(0);
    for (const [name, counters] of Object.entries(bucket.values)) {
      const value = metricOf(counters, metric);
      const at = index.get(name);
      if (at !== undefined) {
        values[at] += value;
      } else if (hasOther) {
        values[series.length - 1] += value;
      }
    }
    const total = values.reduce((a, b) => a + b, 0);
    return { start: bucket.start, label: bucketLabel(bucket.start, usage.bucket), values, total };
  });
  const totals = series.map((_, i) => rows.reduce((sum, r) => sum + r.values[i], 0));
  const max = rows.reduce((m, r) => Math.max(m, r.total), 0);
  return { series, rows, totals, max };
}

/** Round tick steps (1, 2, 5 x 10^n) in whole units of the metric. */
export function niceTicks(max: number, count = 4): number[] {
  if (max <= 0) {
    return [0];
  }
  const rough = max / count;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = Math.max(1, [1, 2, 5, 10].map(m => m * power).find(s => s >= rough) ?? 10 * power);
  const top = Math.ceil(max / step) * step;
  const ticks: number[] = [];
  for (let value = 0; value <= top + step / 2; value += step) {
    ticks.push(Math.round(value));
  }
  return ticks;
}

function seriesClass(i: number, name: string): string {
  return name === OTHER ? 'lumen-series-other' : `lumen-series-${i % MAX_SERIES}`;
}

function valueText(value: number, metric: Metric): string {
  return metric === 'coins' ? `${formatCoins(value)} coins` : `${formatCount(value)} tokens`;
}

export function renderChartSvg(usage: UsageHistory, metric: Metric): SVGSVGElement {
  const data = chartData(usage, metric);
  const ticks = niceTicks(data.max);
  const top = ticks[ticks.length - 1] || 1;
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const y = (value: number) => PAD.top + plotH - (value / top) * plotH;
  const grandTotal = data.totals.reduce((a, b) => a + b, 0);
  const label =
    `${metric === 'coins' ? 'Coins' : 'Tokens'} per ${usage.bucket} over ${PERIOD_SENTENCE[usage.period]}, ` +
    `stacked by ${usage.group_by}: ${valueText(grandTotal, metric)} in all`;
  const chart = svg('svg', {
    class: 'lumen-chart',
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    role: 'img',
    'aria-label': label
  });
  const axis = svg('g', { class: 'lumen-chart-axis' });
  for (const tick of ticks) {
    const ty = y(tick);
    axis.appendChild(
      svg('line', {
        x1: PAD.left,
        x2: WIDTH - PAD.right,
        y1: ty,
        y2: ty,
        class: 'lumen-chart-grid'
      })
    );
    const text = svg('text', { x: PAD.left - 8, y: ty + 4, 'text-anchor': 'end' });
    text.textContent = metric === 'coins' ? compactCoins(tick) : compactNumber(tick);
    axis.appendChild(text);
  }
  const yTitle = svg('text', {
    x: 14,
    y: PAD.top + plotH / 2,
    'text-anchor': 'middle',
    transform: `rotate(-90 14 ${PAD.top + plotH / 2})`,
    class: 'lumen-chart-axis-title'
  });
  yTitle.textContent = metric === 'coins' ? 'coins' : 'tokens';
  axis.appendChild(yTitle);
  chart.appendChild(axis);

  const n = Math.max(1, data.rows.length);
  const slot = plotW / n;
  const barW = Math.max(1, slot * 0.72);
  const every = Math.ceil(n / 8);
  const bars = svg('g', { class: 'lumen-chart-bars' });
  data.rows.forEach((row, i) => {
    const x = PAD.left + i * slot + (slot - barW) / 2;
    let base = 0;
    row.values.forEach((value, s) => {
      if (value <= 0) {
        return;
      }
      const y0 = y(base);
      const y1 = y(base + value);
      base += value;
      const rect = svg('rect', {
        x: x.toFixed(2),
        y: y1.toFixed(2),
        width: barW.toFixed(2),
        height: Math.max(0.5, y0 - y1).toFixed(2),
        class: seriesClass(s, data.series[s])
      });
      const title = svg('title');
      title.textContent = `${row.label} · ${data.series[s]}: ${valueText(value, metric)}`;
      rect.appendChild(title);
      bars.appendChild(rect);
    });
    if ((n - 1 - i) % every === 0) {
      const text = svg('text', {
        x: (PAD.left + i * slot + slot / 2).toFixed(2),
        y: HEIGHT - PAD.bottom + 16,
        'text-anchor': 'middle',
        class: 'lumen-chart-xlabel'
      });
      text.textContent = row.label;
      bars.appendChild(text);
    }
  });
  chart.appendChild(
    svg('line', {
      x1: PAD.left,
      x2: WIDTH - PAD.right,
      y1: y(0),
      y2: y(0),
      class: 'lumen-chart-baseline'
    })
  );
  chart.appendChild(bars);
  if (data.max === 0) {
    const empty = svg('text', {
      x: PAD.left + plotW / 2,
      y: PAD.top + plotH / 2,
      'text-anchor': 'middle',
      class: 'lumen-chart-empty'
    });
    empty.textContent = `No spending in ${PERIOD_SENTENCE[usage.period]}`;
    chart.appendChild(empty);
  }
  return chart;
}

export function renderLegend(usage: UsageHistory, metric: Metric): HTMLElement {
  const data = chartData(usage, metric);
  const other: Metric = metric === 'coins' ? 'tokens' : 'coins';
  const otherData = chartData(usage, other);
  const otherTotals = new Map(otherData.series.map((name, i) => [name, otherData.totals[i]]));
  return h(
    'ul',
    { class: 'lumen-legend', attrs: { 'aria-label': 'Series' } },
    ...data.series.map((name, i) =>
      h(
        'li',
        { dataset: { series: name } },
        h('span', {
          class: `lumen-swatch ${seriesClass(i, name)}`,
          attrs: { 'aria-hidden': 'true' }
        }),
        h('span', { class: 'lumen-legend-name', text: name }),
        h(
          'span',
          { class: 'lumen-legend-value' },
          valueText(data.totals[i], metric),
          otherTotals.has(name)
            ? h('span', {
                class: 'lumen-muted',
                text: ` · ${valueText(otherTotals.get(name) ?? 0, other)}`
              })
            : null
        )
      )
    )
  );
}

export class SpendingSection {
  readonly el: HTMLElement;
  private readonly body: HTMLElement;
  private readonly summary: HTMLElement;
  private readonly periodButtons = new Map<Period, HTMLButtonElement>();
  private readonly metricButtons = new Map<Metric, HTMLButtonElement>();
  private readonly message: HTMLElement;
  private metric: Metric = 'coins';
  private state: ProfileState | null = null;
  private requested: Period | null = null;

  constructor(private readonly ctx: ViewContext) {
    const periods = h('div', {
      class: 'lumen-segmented',
      attrs: { role: 'group', 'aria-label': 'Period' }
    });
    for (const period of PERIODS) {
      const button = h('button', {
        class: 'lumen-segment',
        text: PERIOD_LABEL[period],
        attrs: { type: 'button', 'aria-pressed': 'false' },
        dataset: { period },
        on: { click: () => void this.choosePeriod(period) }
      });
      this.periodButtons.set(period, button);
      periods.appendChild(button);
    }
    const metrics = h('div', {
      class: 'lumen-segmented',
      attrs: { role: 'group', 'aria-label': 'Measure' }
    });
    for (const metric of ['coins', 'tokens'] as Metric[]) {
      const button = h('button', {
        class: 'lumen-segment',
        text: metric === 'coins' ? 'Coins' : 'Tokens',
        attrs: { type: 'button', 'aria-pressed': String(metric === this.metric) },
        dataset: { metric },
        on: {
          click: () => {
            this.metric = metric;
            this.render();
          }
        }
      });
      this.metricButtons.set(metric, button);
      metrics.appendChild(button);
    }
    this.summary = h('p', { class: 'lumen-spending-summary' });
    this.message = h('p', { class: 'lumen-inline-error', attrs: { role: 'alert', hidden: true } });
    this.body = h('div', { class: 'lumen-chart-wrap' });
    this.el = h(
      'section',
      { class: 'lumen-section lumen-spending', attrs: { 'aria-label': 'Spending history' } },
      h(
        'div',
        { class: 'lumen-section-head' },
        h('h3', { class: 'lumen-section-title', text: 'Spending' }),
        h('div', { class: 'lumen-section-tools' }, metrics, periods)
      ),
      this.summary,
      this.message,
      this.body
    );
  }

  update(state: ProfileState, all = true): void {
    const before = this.state;
    if (
      !all &&
      before &&
      state.usage === before.usage &&
      state.period === before.period &&
      (state.usage !== null || state.loading === before.loading)
    ) {
      this.state = state;
      return;
    }
    this.state = state;
    if (state.usage && state.usage.period === this.requested) {
      this.requested = null;
    }
    this.render();
  }

  private async choosePeriod(period: Period): Promise<void> {
    if (this.state?.usage?.period === period && !this.requested) {
      return;
    }
    this.requested = period;
    this.message.hidden = true;
    this.render();
    try {
      await this.ctx.actions.setPeriod(period);
    } catch (err) {
      this.requested = null;
      this.message.textContent = `Could not load the spending history: ${messageOf(err)}`;
      this.message.hidden = false;
      this.render();
    }
  }

  private render(): void {
    const usage = this.state?.usage ?? null;
    const shown = this.requested ?? usage?.period ?? this.state?.period ?? 'month';
    for (const [period, button] of this.periodButtons) {
      button.setAttribute('aria-pressed', String(period === shown));
    }
    for (const [metric, button] of this.metricButtons) {
      button.setAttribute('aria-pressed', String(metric === this.metric));
    }
    this.el.setAttribute('aria-busy', String(this.requested !== null));
    if (!usage) {
      this.summary.textContent = '';
      this.body.replaceChildren(
        h('p', { class: 'lumen-muted', text: this.state?.loading ? 'Loading…' : 'No history yet.' })
      );
      return;
    }
    let coins = 0;
    let tokens = 0;
    let requests = 0;
    for (const totals of Object.values(usage.totals)) {
      coins += totals.coins_micro ?? 0;
      tokens += totals.tokens ?? 0;
      requests += totals.requests ?? 0;
    }
    this.summary.textContent =
      `${PERIOD_SENTENCE[usage.period][0].toUpperCase()}${PERIOD_SENTENCE[usage.period].slice(1)}: ` +
      `${formatCoins(coins)} coins, ${formatCount(tokens)} tokens, ${formatCount(requests)} requests`;
    this.body.classList.toggle('lumen-stale', this.requested !== null);
    this.body.replaceChildren(renderChartSvg(usage, this.metric), renderLegend(usage, this.metric));
  }
}
