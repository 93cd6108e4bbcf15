/**
 * Formatting at the edge: coins from integer micro-coins, token counts, times
 * and the refill countdown.
 *
 * Coins are never turned into floats: the decimal text is built from the
 * integer's quotient and remainder by 1,000,000 (DESIGN.md, principle 6).
 */

import type { Coins } from './types';

export const MICRO = 1_000_000;

const GROUPING = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

/** Group the digits of a whole number: 1234567 -> "1,234,567". */
export function formatCount(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) {
    return '—';
  }
  return GROUPING.format(Math.trunc(value));
}

/** Micro-coins of a Coins object, a bare micro-coin number, or 0. */
export function microOf(value: Coins | number | null | undefined): number {
  if (value === null || value === undefined) {
    return 0;
  }
  if (typeof value === 'number') {
    return Math.trunc(value);
  }
  return Math.trunc(value.micro ?? 0);
}

/**
 * Micro-coins as text: up to six decimals, trailing zeros trimmed, digits
 * grouped. `decimals` rounds half away from zero to fewer places, on integers.
 */
export function formatCoins(micro: number, decimals = 6): string {
  const value = Math.trunc(micro);
  const negative = value < 0;
  let magnitude = Math.abs(value);
  const places = Math.max(0, Math.min(6, Math.trunc(decimals)));
  const unit = 10 ** (6 - places);
  if (unit > 1) {
    const rest = magnitude % unit;
    magnitude = magnitude - rest + (rest * 2 >= unit ? unit : 0);
  }
  const fraction = magnitude % MICRO;
  const whole = (magnitude - fraction) / MICRO;
  let text = GROUPING.format(whole);
  const digits = String(fraction).padStart(6, '0').slice(0, places).replace(/0+$/, '');
  if (digits) {
    text += `.${digits}`;
  }
  return negative && (whole > 0 || digits) ? `−${text}` : text;
}

/** Coins from a Coins object or micro-coins; "—" when absent. */
export function coinsText(value: Coins | number | null | undefined, decimals = 6): string {
  if (value === null || value === undefined) {
    return '—';
  }
  return formatCoins(microOf(value), decimals);
}

/** Short form for chart axes: 1.5k, 2M; coins in micro-coins. */
export function compactNumber(value: number): string {
  const magnitude = Math.abs(value);
  const sign = value < 0 ? '−' : '';
  const steps: [number, string][] = [
    [1e9, 'B'],
    [1e6, 'M'],
    [1e3, 'k']
  ];
  for (const [size, suffix] of steps) {
    if (magnitude >= size) {
      const scaled = magnitude / size;
      const text = scaled >= 10 ? scaled.toFixed(0) : scaled.toFixed(1).replace(/\.0$/, '');
      return `${sign}${text}${suffix}`;
    }
  }
  return `${sign}${GROUPING.format(magnitude)}`;
}

/** Axis label for an amount of micro-coins (a tick value, not a balance). */
export function compactCoins(micro: number): string {
  if (Math.abs(micro) >= 1000 * MICRO) {
    const whole = (micro - (micro % MICRO)) / MICRO;
    return compactNumber(whole);
  }
  return formatCoins(micro, Math.abs(micro) >= 10 * MICRO ? 0 : Math.abs(micro) >= MICRO ? 1 : 4);
}

export function formatTokens(tokens: number | null | undefined): string {
  return formatCount(tokens ?? 0);
}

/** Milliseconds since the epoch of an ISO 8601 time, or NaN. */
export function parseTime(iso: string | null | undefined): number {
  return iso ? Date.parse(iso) : Number.NaN;
}

const ABSOLUTE = new Intl.DateTimeFormat('en-GB', {
  year: 'numeric',
  month: 'short',
  day: 'numeric',
  hour: '2-digit',
  minute: '2-digit'
});

const DATE_ONLY = new Intl.DateTimeFormat('en-GB', {
  year: 'numeric',
  month: 'short',
  day: 'numeric'
});

/** "4 Mar 2026, 12:00" in the browser's time zone; "—" when absent. */
export function absoluteTime(iso: string | null | undefined): string {
  const ms = parseTime(iso);
  return Number.isNaN(ms) ? '—' : ABSOLUTE.format(new Date(ms));
}

/** "just now", "5 min ago", "3 h ago", "2 days ago", else the date. */
export function relativeTime(iso: string | null | undefined, now: number = Date.now()): string {
  const ms = parseTime(iso);
  if (Number.isNaN(ms)) {
    return 'Never';
  }
  const seconds = Math.round((now - ms) / 1000);
  if (seconds < 45) {
    return seconds < -45 ? DATE_ONLY.format(new Date(ms)) : 'just now';
  }
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) {
    return `${minutes} min ago`;
  }
  const hours = Math.round(minutes / 60);
  if (hours < 24) {
    return `${hours} h ago`;
  }
  const days = Math.round(hours / 24);
  if (days < 30) {
    return days === 1 ? 'yesterday' : `${days} days ago`;
  }
  return DATE_ONLY.format(new Date(ms));
}

/** A countdown: "42:07", or "1:02:03" past an hour; never negative. */
export function formatCountdown(ms: number): string {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = total % 60;
  const two = (n: number) => String(n).padStart(2, '0');
  return hours > 0 ? `${hours}:${two(minutes)}:${two(seconds)}` : `${minutes}:${two(seconds)}`;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** The date part of a bucket start ("2026-03-04") as a short axis label. */
export function bucketLabel(start: string, bucket: string): string {
  const [year, month, day] = start.split('-').map(Number);
  const monthName = MONTHS[((month || 1) - 1) % 12];
  if (bucket === 'month') {
    return `${monthName} ${String(year).slice(2)}`;
  }
  return `${day} ${monthName}`;
}
