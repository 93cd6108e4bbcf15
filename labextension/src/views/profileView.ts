/**
 * The profile page, or one part of it, as one DOM element.
 *
 * Hosts (the anywidget entry and the Lab panel) create a `ProfileView` with
 * their `ProfileActions`, call `update(state)` whenever their data changes, and
 * `dispose()` when done. Local view state - sort order, search text, the
 * "Show ..." boxes, open dialogs - lives here and survives updates.
 */

import type { ViewContext } from './context';
import { h, replaceChildren } from './dom';
import { KeysSection } from './keysTable';
import { ModelsSection } from './modelTable';
import { renderProfileCard } from './profileCard';
import { SpendingSection } from './spendingChart';
import { RefillCountdown, renderTiles } from './tiles';
import type { Profile, ProfileActions, ProfileState, Section } from './types';
import { emptyState } from './types';
import { renderWebChatRow } from './webChatRow';

export interface ProfileViewOptions {
  section?: Section;
  /** Called after each render with its duration in ms (the DOM work, not the layout). */
  onRender?: (ms: number) => void;
}

const SECTION_TITLE: Record<Section, string> = {
  profile: 'Profile',
  balance: 'Balance',
  keys: 'API Keys',
  models: 'Model Access',
  spending: 'Spending'
};

export class ProfileView {
  readonly el: HTMLElement;
  readonly section: Section;
  private readonly ctx: ViewContext;
  private readonly banner: HTMLElement;
  private readonly status: HTMLElement;
  private readonly card: HTMLElement | null = null;
  private readonly webChat: HTMLElement | null = null;
  private readonly keys: KeysSection | null = null;
  private readonly models: ModelsSection | null = null;
  private readonly spending: SpendingSection | null = null;
  private readonly countdown: RefillCountdown;
  private state: ProfileState = emptyState();
  /** The state the DOM shows (null: nothing rendered yet). */
  private shown: ProfileState | null = null;
  private serverOffset = 0;
  private lastServerTime: string | null = null;
  private clockTimer: number | undefined;
  private disposed = false;

  constructor(
    private readonly actions: ProfileActions,
    private readonly options: ProfileViewOptions = {}
  ) {
    this.section = options.section ?? 'profile';
    this.el = h('div', {
      class: `lumen-profile lumen-view-${this.section}`,
      attrs: {
        'data-lm-suppress-shortcuts': 'true',
        role: 'region',
        'aria-label': `Lumen ${SECTION_TITLE[this.section]}`
      }
    });
    // Keys typed in the view (search box, key name, dialog buttons) are not notebook shortcuts.
    this.el.addEventListener('keydown', event => event.stopPropagation());
    this.ctx = { actions, dialogHost: this.el, now: () => Date.now() };
    this.countdown = new RefillCountdown(() => void this.actions.refresh().catch(() => undefined));
    this.banner = h('div', { class: 'lumen-banner', attrs: { role: 'alert', hidden: true } });
    this.status = h('span', {
      class: 'lumen-status',
      attrs: { role: 'status', 'aria-live': 'polite' }
    });

    const parts: HTMLElement[] = [];
    const toolbar = h(
      'div',
      { class: 'lumen-toolbar' },
      this.section === 'profile' ? h('h2', { class: 'lumen-title', text: 'Profile' }) : null,
      this.status,
      h('button', {
        class: 'lumen-button lumen-button-small lumen-refresh',
        text: 'Refresh',
        attrs: { type: 'button', 'aria-label': 'Refresh the profile' },
        on: { click: () => void this.refresh() }
      })
    );
    parts.push(toolbar, this.banner);
    const wants = (s: Section) => this.section === 'profile' || this.section === s;
    if (wants('balance')) {
      this.card = h('div', {
        class: 'lumen-card',
        attrs: { 'aria-label': 'Profile card', role: 'group' }
      });
      parts.push(this.card);
    }
    if (this.section === 'profile') {
      this.webChat = h('div', { class: 'lumen-webchat-slot' });
      parts.push(this.webChat);
    }
    if (wants('keys')) {
      this.keys = new KeysSection(this.ctx);
      parts.push(this.keys.el);
    }
    if (wants('models')) {
      this.models = new ModelsSection(this.ctx);
      parts.push(this.models.el);
    }
    if (wants('spending')) {
      this.spending = new SpendingSection(this.ctx);
      parts.push(this.spending.el);
    }
    replaceChildren(this.el, ...parts);
    // Relative times ("5 min ago") move on even when no data changes.
    this.clockTimer = window.setInterval(() => {
      if (!this.el.querySelector('dialog[open]')) {
        this.render(true);
      }
    }, 60_000);
    this.render(true);
  }

  update(state: ProfileState): void {
    if (this.disposed) {
      return;
    }
    this.state = state;
    const serverTime = state.profile?.server_time ?? null;
    if (serverTime && serverTime !== this.lastServerTime) {
      this.lastServerTime = serverTime;
      const ms = Date.parse(serverTime);
      this.serverOffset = Number.isNaN(ms) ? 0 : ms - Date.now();
    }
    this.render(false);
  }

  dispose(): void {
    this.disposed = true;
    this.countdown.stop();
    window.clearInterval(this.clockTimer);
    for (const dialog of Array.from(this.el.querySelectorAll('dialog'))) {
      dialog.remove();
    }
    this.el.remove();
  }

  private async refresh(): Promise<void> {
    try {
      await this.actions.refresh();
    } catch {
      // the host reports the failure in state.error, shown in the banner
    }
  }

  /**
   * Bring the DOM up to date with the state. Parts whose data did not change (the same
   * objects: hosts keep what they did not reload) are left alone unless `all` is set
   * (the minute tick: relative times move on), so "Loading…" coming and going costs
   * nothing. Nothing here reads layout: the browser lays the page out once, at its
   * next frame.
   */
  private render(all: boolean): void {
    const started = performance.now();
    const state = this.state;
    const shown = this.shown;
    this.shown = state;
    this.renderStatus(state);
    const profileChanged =
      all ||
      !shown ||
      state.profile !== shown.profile ||
      (!state.profile && state.loading !== shown.loading);
    if (this.card && profileChanged) {
      this.renderCard(state.profile);
    }
    if (this.webChat && profileChanged) {
      replaceChildren(
        this.webChat,
        state.profile ? renderWebChatRow(state.profile.web_chat, Date.now()) : null
      );
    }
    this.keys?.update(state, all);
    this.models?.update(state, all);
    this.spending?.update(state, all);
    const ms = performance.now() - started;
    this.el.dataset.renderMs = ms.toFixed(1);
    this.options.onRender?.(ms);
  }

  private renderStatus(state: ProfileState): void {
    this.el.setAttribute('aria-busy', String(state.loading));
    this.el.classList.toggle('lumen-loading', state.loading);
    this.status.textContent = state.loading ? 'Loading…' : '';
    if (state.error) {
      replaceChildren(
        this.banner,
        h('span', { class: 'lumen-banner-text', text: state.error }),
        h('button', {
          class: 'lumen-button lumen-button-small',
          text: 'Retry',
          attrs: { type: 'button' },
          on: { click: () => void this.refresh() }
        })
      );
      this.banner.hidden = false;
    } else {
      this.banner.hidden = true;
      this.banner.textContent = '';
    }
  }

  private renderCard(profile: Profile | null): void {
    const card = this.card as HTMLElement;
    if (!profile) {
      replaceChildren(
        card,
        h('div', {
          class: 'lumen-placeholder',
          text: this.state.loading ? 'Loading your profile…' : 'No profile loaded.'
        })
      );
      return;
    }
    this.countdown.set(profile.pool.next_refill_at ?? null, this.serverOffset);
    replaceChildren(card, renderProfileCard(profile.user), renderTiles(profile, this.countdown));
  }
}
