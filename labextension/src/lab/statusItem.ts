/**
 * The coin meter of the status bar: "(coin) 19.98 / 20 · 58:55". Coins available
 * (or "Unlimited" / "—"), the refill countdown ticking each second, a colour
 * for normal / low / exhausted, the pool's details as a tooltip; a click opens
 * the profile panel.
 */

import { Widget } from '@lumino/widgets';
import { absoluteTime, coinsText, formatCountdown, microOf, parseTime } from '../views/format';
import type { PoolInfo } from '../views/types';

export type MeterLevel =
  'normal' | 'low' | 'exhausted' | 'unlimited' | 'none' | 'blocked' | 'loading' | 'config-error';

/** What the meter says instead of coins when lumen could not load its configuration. */
export const CONFIG_ERROR_TEXT = 'Lumen: configuration error';

export const DEFAULT_LOW_FRACTION = 0.1;

/** The colour level of a pool. */
export function meterLevel(pool: PoolInfo | null, lowFraction = DEFAULT_LOW_FRACTION): MeterLevel {
  if (!pool) {
    return 'loading';
  }
  switch (pool.state) {
    case 'unlimited':
      return 'unlimited';
    case 'none':
      return 'none';
    case 'blocked':
      return 'blocked';
  }
  const balance = microOf(pool.balance);
  if (pool.exhausted || balance <= 0) {
    return 'exhausted';
  }
  const max = microOf(pool.max);
  if (max > 0 && balance < max * lowFraction) {
    return 'low';
  }
  return 'normal';
}

/** The meter's coin text (three decimals: a demo call costs ~0.007): "19.985 / 20", "Unlimited", "Blocked" or "—". */
export function meterCoins(pool: PoolInfo | null): string {
  if (!pool) {
    return '…';
  }
  switch (pool.state) {
    case 'unlimited':
      return 'Unlimited';
    case 'none':
      return '—';
    case 'blocked':
      return 'Blocked';
  }
  const max = pool.max ? ` / ${coinsText(pool.max, 2)}` : '';
  return `${coinsText(pool.balance, 3)}${max}`;
}

/** The tooltip: source, balance, max, refill per hour, next refill time. */
export function meterTooltip(pool: PoolInfo | null, connected: boolean): string {
  if (!pool) {
    return connected ? 'Lumen coins: loading…' : 'Lumen coins: connecting to the server…';
  }
  const lines = ['Lumen coins — click to open your profile'];
  if (pool.state === 'unlimited') {
    lines.push('Unlimited: no coin limit applies to you');
  } else if (pool.state === 'none') {
    lines.push('No coin pool applies to you');
  } else if (pool.state === 'blocked') {
    lines.push('Blocked: model calls are not allowed');
  } else {
    lines.push(`Available: ${coinsText(pool.balance)} of ${coinsText(pool.max)}`);
    lines.push(`Refill: +${coinsText(pool.refresh_per_hour)} per hour`);
    if (pool.next_refill_at) {
      lines.push(`Next refill: ${absoluteTime(pool.next_refill_at)}`);
    }
  }
  if (pool.source) {
    lines.push(`Source: ${pool.source}`);
  }
  if (!connected) {
    lines.push('(live updates paused: reconnecting)');
  }
  return lines.join('\n');
}

export class CoinStatusItem extends Widget {
  private pool: PoolInfo | null = null;
  private configError: string | null = null;
  private connected = false;
  private ticker: number | undefined;
  private lowFraction = DEFAULT_LOW_FRACTION;
  private readonly coins: HTMLSpanElement;
  private readonly countdown: HTMLSpanElement;

  constructor(private readonly onOpen: () => void) {
    super({ node: document.createElement('button') });
    this.addClass('lumen-status-item');
    this.node.setAttribute('type', 'button');
    this.node.setAttribute('data-level', 'loading');
    // An SVG coin, not the 🪙 emoji: many Linux desktops have no colour emoji font.
    const icon = document.createElement('span');
    icon.className = 'lumen-status-icon';
    icon.setAttribute('aria-hidden', 'true');
    icon.innerHTML =
      '<svg viewBox="0 0 16 16" width="14" height="14">' +
      '<circle cx="8" cy="8" r="7" fill="#f2c94c" stroke="#b8860b" stroke-width="1.2"/>' +
      '<circle cx="8" cy="8" r="4.3" fill="none" stroke="#b8860b" stroke-width="1"/>' +
      '</svg>';
    this.coins = document.createElement('span');
    this.coins.className = 'lumen-status-coins';
    this.countdown = document.createElement('span');
    this.countdown.className = 'lumen-status-countdown';
    this.node.append(icon, this.coins, this.countdown);
    this.node.addEventListener('click', () => this.onOpen());
    this.render();
  }

  setLowFraction(value: number): void {
    this.lowFraction = Number.isFinite(value) && value >= 0 ? value : DEFAULT_LOW_FRACTION;
    this.render();
  }

  setPool(pool: PoolInfo): void {
    this.pool = pool;
    this.render();
  }

  /** Show that lumen is not running, with the server's reason on hover. */
  setConfigError(message: string): void {
    this.configError = message;
    this.render();
  }

  get hasConfigError(): boolean {
    return this.configError !== null;
  }

  setConnected(connected: boolean): void {
    this.connected = connected;
    this.render();
  }

  protected onAfterAttach(): void {
    this.ticker = window.setInterval(() => this.renderCountdown(), 1000);
  }

  protected onBeforeDetach(): void {
    window.clearInterval(this.ticker);
    this.ticker = undefined;
  }

  private render(): void {
    if (this.configError !== null) {
      this.node.setAttribute('data-level', 'config-error');
      this.coins.textContent = CONFIG_ERROR_TEXT;
      this.countdown.textContent = '';
      this.countdown.hidden = true;
      this.node.title = `${this.configError}\nClick to show the whole message.`;
      this.node.setAttribute('aria-label', `${CONFIG_ERROR_TEXT}. Show the message`);
      return;
    }
    const pool = this.pool;
    const level = meterLevel(pool, this.lowFraction);
    this.node.setAttribute('data-level', level);
    this.node.setAttribute('data-connected', String(this.connected));
    this.node.setAttribute('data-micro', pool?.balance ? String(microOf(pool.balance)) : '');
    this.coins.textContent = meterCoins(pool);
    const tooltip = meterTooltip(pool, this.connected);
    this.node.title = tooltip;
    this.node.setAttribute(
      'aria-label',
      `Lumen coins: ${meterCoins(pool)}. Open the Lumen profile`
    );
    this.renderCountdown();
  }

  private renderCountdown(): void {
    if (this.configError !== null) {
      return;
    }
    const pool = this.pool;
    const next = parseTime(pool?.next_refill_at);
    if (!pool || pool.state !== 'limited' || Number.isNaN(next)) {
      this.countdown.textContent = '';
      this.countdown.hidden = true;
      return;
    }
    this.countdown.hidden = false;
    this.countdown.textContent = ` · ${formatCountdown(next - Date.now())}`;
  }

  dispose(): void {
    window.clearInterval(this.ticker);
    super.dispose();
  }
}
