/**
 * The six stat tiles: Groups, Coins Used, Tokens Used, Favorite Model, Coins
 * Available (the four pool states, a progress bar under a limit, a clear
 * exhausted state) and Refill Rate with a live countdown.
 *
 * The countdown runs in the browser, once a second, against the server's clock:
 * `next_refill_at` minus (browser now + the offset measured from `server_time`
 * when the profile arrived). When it reaches zero it asks for a refresh and rolls
 * on to the following hour by itself, so it never sits at 0:00.
 */

import { badge } from './badges';
import { h, uid, type Child } from './dom';
import { coinsText, formatCount, formatCountdown, microOf, parseTime } from './format';
import type { PoolInfo, Profile } from './types';

const HOUR = 3_600_000;

function tile(id: string, label: string, value: Child, ...extra: Child[]): HTMLElement {
  const labelId = uid(`tile-${id}`);
  return h(
    'section',
    {
      class: `lumen-tile lumen-tile-${id}`,
      dataset: { tile: id },
      attrs: { 'aria-labelledby': labelId }
    },
    h('div', { class: 'lumen-tile-label', text: label, attrs: { id: labelId } }),
    h('div', { class: 'lumen-tile-value' }, value),
    ...extra
  );
}

function note(text: string): HTMLElement {
  return h('div', { class: 'lumen-tile-note', text });
}

/** Balance as a share of the cap, in tenths of a percent, from integers. */
export function fillPermille(balanceMicro: number, maxMicro: number): number {
  if (maxMicro <= 0 || balanceMicro <= 0) {
    return 0;
  }
  if (balanceMicro >= maxMicro) {
    return 1000;
  }
  return Math.floor((balanceMicro * 1000) / maxMicro);
}

export function renderCoinsAvailable(pool: PoolInfo): HTMLElement {
  switch (pool.state) {
    case 'none':
      return tile(
        'coins-available',
        'Coins Available',
        '—',
        note('No budget has been set up for your account')
      );
    case 'unlimited':
      return tile(
        'coins-available',
        'Coins Available',
        'Unlimited',
        note('No cap — you can always send requests')
      );
    case 'blocked': {
      const el = tile(
        'coins-available',
        'Coins Available',
        h('span', {}, coinsText(pool.balance ?? 0), ' ', badge('Blocked', 'danger')),
        note('Your coin pool is blocked; ask an administrator')
      );
      el.classList.add('lumen-tile-exhausted');
      return el;
    }
    default:
      break;
  }
  const balance = microOf(pool.balance);
  const max = microOf(pool.max);
  const exhausted = pool.exhausted ?? balance <= 0;
  const value = h(
    'span',
    {},
    h('span', { class: 'lumen-balance', text: coinsText(pool.balance) }),
    max > 0 ? h('span', { class: 'lumen-balance-max', text: ` / ${coinsText(pool.max)}` }) : null
  );
  const extra: Child[] = [];
  if (max > 0) {
    const permille = fillPermille(balance, max);
    const bar = h(
      'div',
      {
        class: 'lumen-progress',
        attrs: {
          role: 'progressbar',
          'aria-label': 'Share of your coin cap remaining',
          'aria-valuemin': 0,
          'aria-valuemax': 100,
          'aria-valuenow': Math.round(permille / 10),
          'aria-valuetext': `${coinsText(pool.balance)} of ${coinsText(pool.max)} coins`
        }
      },
      h('div', { class: 'lumen-progress-fill' })
    );
    (bar.firstChild as HTMLElement).style.width = `${permille / 10}%`;
    extra.push(bar);
  }
  if (exhausted) {
    extra.push(
      h(
        'div',
        { class: 'lumen-tile-note lumen-exhausted-note', attrs: { role: 'status' } },
        badge('Exhausted', 'danger'),
        ` ${exhaustedNote(pool)}`
      )
    );
  }
  const el = tile('coins-available', 'Coins Available', value, ...extra);
  if (exhausted) {
    el.classList.add('lumen-tile-exhausted');
  }
  return el;
}

/** What an exhausted pool means for requests: a pool without a refill waits for a grant. */
export function exhaustedNote(pool: PoolInfo): string {
  return microOf(pool.refresh_per_hour) > 0
    ? 'Requests are blocked until the next refill or an admin grant'
    : 'Requests are blocked until an admin grants more coins (this pool does not refill)';
}

/** Whether the Refill Rate tile has a rate and a countdown to show. */
export function refills(pool: PoolInfo): boolean {
  return (
    (pool.state === 'limited' || pool.state === 'blocked') &&
    microOf(pool.refresh_per_hour) > 0 &&
    !!pool.next_refill_at
  );
}

/**
 * The ticking countdown: one element, kept across re-renders, updated every
 * second while it is in the document.
 */
export class RefillCountdown {
  readonly el: HTMLElement;
  private target = Number.NaN;
  private offset = 0;
  private timer: number | undefined;
  private reported = Number.NaN;
  private lastDue = 0;

  constructor(private readonly onDue: () => void) {
    this.el = h('span', {
      class: 'lumen-countdown',
      attrs: { role: 'timer', 'aria-live': 'off', 'aria-atomic': 'true' }
    });
  }

  /** Count down to `nextIso`, with the server clock `offsetMs` ahead of the browser's. */
  set(nextIso: string | null | undefined, offsetMs: number): void {
    this.target = parseTime(nextIso);
    this.offset = offsetMs;
    this.tick();
    if (this.timer === undefined && !Number.isNaN(this.target)) {
      this.timer = window.setInterval(() => this.tick(), 1000);
    }
  }

  /** Milliseconds until the refill shown, by the server's clock. */
  remaining(now: number = Date.now()): number {
    const serverNow = now + this.offset;
    let target = this.target;
    while (target <= serverNow) {
      target += HOUR; // the refill landed: the next one is an hour later
    }
    return target - serverNow;
  }

  tick(): void {
    if (Number.isNaN(this.target)) {
      this.el.textContent = '—';
      return;
    }
    const serverNow = Date.now() + this.offset;
    if (serverNow >= this.target && this.reported !== this.target) {
      this.reported = this.target;
      const now = Date.now();
      if (now - this.lastDue > 10_000) {
        this.lastDue = now;
        window.setTimeout(() => this.onDue(), 1500);
      }
    }
    const ms = this.remaining();
    this.el.textContent = formatCountdown(ms);
  }

  stop(): void {
    if (this.timer !== undefined) {
      window.clearInterval(this.timer);
      this.timer = undefined;
    }
  }
}

export function renderRefillRate(pool: PoolInfo, countdown: RefillCountdown): HTMLElement {
  if (!refills(pool)) {
    const why =
      pool.state === 'unlimited'
        ? 'Unlimited pools need no refill'
        : pool.state === 'none'
          ? 'No budget has been set up'
          : 'No auto-refill';
    return tile('refill-rate', 'Refill Rate', '—', note(why));
  }
  return tile(
    'refill-rate',
    'Refill Rate',
    h('span', { class: 'lumen-refill-rate', text: `+${coinsText(pool.refresh_per_hour)}/hr` }),
    h('div', { class: 'lumen-tile-note' }, 'Next refill in ', countdown.el)
  );
}

export function renderTiles(profile: Profile, countdown: RefillCountdown): HTMLElement {
  const { tiles, pool } = profile;
  const groups = tiles.groups ?? [];
  return h(
    'div',
    { class: 'lumen-tiles' },
    tile(
      'groups',
      'Groups',
      groups.length
        ? h(
            'ul',
            { class: 'lumen-chips', attrs: { 'aria-label': 'Your groups' } },
            ...groups.map(g => h('li', { class: 'lumen-chip', text: g }))
          )
        : '—'
    ),
    tile('coins-used', 'Coins Used', coinsText(tiles.coins_used), note('All models, all time')),
    tile(
      'tokens-used',
      'Tokens Used',
      formatCount(tiles.tokens_used),
      note('Input + output, all time')
    ),
    tile(
      'favorite-model',
      'Favorite Model',
      tiles.favorite_model
        ? h('span', { class: 'lumen-model-name', text: tiles.favorite_model })
        : '—',
      note(tiles.favorite_model ? 'Most requests' : 'No requests yet')
    ),
    renderCoinsAvailable(pool),
    renderRefillRate(pool, countdown)
  );
}
