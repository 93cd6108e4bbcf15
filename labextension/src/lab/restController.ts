/**
 * The Lab panel's side of the views: holds a `ProfileState` loaded over REST
 * and carries out the views' intents. The raw key of a new key is returned to
 * the dialog and never kept here.
 *
 * The first load paints the first screen first: the profile, the spending history and
 * the first page of the active keys and of the models, each shown as it arrives; the
 * complete lists follow in the background (sorting, searching and "Show deleted keys"
 * work on those). Later refreshes replace everything at once. `forgetLists()` drops
 * the lists when no panel shows them, so the next panel starts small again.
 */

import { messageOf } from '../views/dialog';
import {
  emptyState,
  FIRST_PAGE,
  type CreatedKey,
  type KeyLimits,
  type Period,
  type PoolInfo,
  type ProfileActions,
  type ProfileState
} from '../views/types';
import type { LumenRestClient } from './restClient';

export class RestProfileController implements ProfileActions {
  private current: ProfileState = emptyState();
  private readonly listeners = new Set<(state: ProfileState) => void>();
  private timer: number | undefined;
  private inFlight: Promise<void> | null = null;
  /** Whether the state holds the complete key and model lists (not first pages). */
  private listsComplete = false;
  /** Bumped by `forgetLists()`: a load begun before it does not fill the lists again. */
  private generation = 0;

  constructor(private readonly client: LumenRestClient) {}

  get state(): ProfileState {
    return this.current;
  }

  subscribe(listener: (state: ProfileState) => void): () => void {
    this.listeners.add(listener);
    listener(this.current);
    return () => this.listeners.delete(listener);
  }

  /** Refresh every `seconds` while something shows the profile (0: never). */
  startPolling(seconds: number): void {
    this.stopPolling();
    if (seconds > 0) {
      this.timer = window.setInterval(
        () => void this.refresh().catch(() => undefined),
        seconds * 1000
      );
    }
  }

  stopPolling(): void {
    if (this.timer !== undefined) {
      window.clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  /** A performance mark `lumen:<name>` (the browser benchmark reads where time goes). */
  private mark(name: string): void {
    performance.mark(`lumen:${name}`);
  }

  private set(patch: Partial<ProfileState>): void {
    this.current = { ...this.current, ...patch };
    for (const listener of this.listeners) {
      listener(this.current);
    }
  }

  /** A pool pushed by the server (events stream): patch the shown profile. */
  applyPool(pool: PoolInfo): void {
    const profile = this.current.profile;
    if (profile && JSON.stringify(profile.pool) !== JSON.stringify(pool)) {
      this.set({ profile: { ...profile, pool } });
    }
  }

  refresh(): Promise<void> {
    if (!this.inFlight) {
      const run: Promise<void> = this.load().finally(() => {
        if (this.inFlight === run) {
          this.inFlight = null;
        }
      });
      this.inFlight = run;
    }
    return this.inFlight;
  }

  /** Drop the key and model lists and the history (nothing shows them any more). */
  forgetLists(): void {
    this.generation += 1;
    this.inFlight = null; // a panel opened next loads afresh, not into the forgotten state
    this.listsComplete = false;
    this.set({
      keys: [],
      models: [],
      usage: null,
      keysTotal: null,
      modelsTotal: null,
      loading: false
    });
  }

  private async load(): Promise<void> {
    this.mark('load');
    const generation = this.generation;
    this.set({ loading: true });
    try {
      if (this.listsComplete) {
        await this.loadEverything(() => generation === this.generation);
      } else {
        await this.loadFirstScreen(() => generation === this.generation);
      }
    } catch (err) {
      if (generation === this.generation) {
        this.set({ loading: false, error: `Could not load the profile: ${messageOf(err)}` });
      }
      throw err;
    }
  }

  private async loadEverything(current: () => boolean): Promise<void> {
    const [profile, keys, models, usage] = await Promise.all([
      this.client.profile(),
      this.client.keyList(true),
      this.client.modelList(),
      this.client.usage(this.current.period)
    ]);
    if (!current()) {
      this.set({ profile });
      return;
    }
    this.set({
      profile,
      keys: keys.keys,
      keysTotal: null,
      models: models.models,
      modelsTotal: null,
      usage,
      loading: false,
      error: null
    });
  }

  /** `current()`: whether the lists were not forgotten since this load began. */
  private async loadFirstScreen(current: () => boolean): Promise<void> {
    await Promise.all([
      this.client.profile().then(profile => {
        this.mark('profile');
        this.set({ profile });
      }),
      this.client.keyList(false, { limit: FIRST_PAGE }).then(page => {
        this.mark('keys-first-page');
        if (current()) {
          this.set({ keys: page.keys, keysTotal: page.total });
        }
      }),
      this.client.modelList({ limit: FIRST_PAGE }).then(page => {
        this.mark('models-first-page');
        if (current()) {
          this.set({
            models: page.models,
            modelsTotal: page.models.length < page.total ? page.total : null
          });
        }
      }),
      this.client.usage(this.current.period).then(usage => {
        this.mark('usage');
        if (current()) {
          this.set({ usage });
        }
      })
    ]);
    if (!current()) {
      return;
    }
    this.set({ loading: false, error: null });
    this.mark('first-screen');
    // The rest, after the first screen: the revoked keys too, and every model.
    const [keys, models] = await Promise.all([
      this.client.keyList(true),
      this.current.modelsTotal === null ? null : this.client.modelList()
    ]);
    if (current()) {
      this.mark('lists');
      this.listsComplete = true;
      this.set({
        keys: keys.keys,
        keysTotal: null,
        ...(models ? { models: models.models, modelsTotal: null } : {})
      });
    }
  }

  private async reloadKeys(): Promise<void> {
    const [keys, profile] = await Promise.all([this.client.keyList(true), this.client.profile()]);
    this.set({ keys: keys.keys, keysTotal: null, profile });
  }

  async createKey(): Promise<CreatedKey> {
    const created = await this.client.createKey();
    return {
      id: created.id,
      hint: created.hint,
      name: created.name,
      status: created.status,
      key: created.key
    };
  }

  async saveKey(id: number, name: string, limits: KeyLimits = {}): Promise<void> {
    await this.client.saveKey(id, name, limits);
    await this.reloadKeys();
  }

  async discardKey(id: number): Promise<void> {
    await this.client.revokeKey(id);
  }

  async revokeKey(id: number): Promise<void> {
    await this.client.revokeKey(id);
    await this.reloadKeys();
  }

  async consent(name: string, noticeDigest: string | null): Promise<void> {
    const updated = await this.client.consent(name, noticeDigest);
    this.set({ models: this.current.models.map(m => (m.name === updated.name ? updated : m)) });
  }

  async setPeriod(period: Period): Promise<void> {
    const usage = await this.client.usage(period);
    this.set({ period, usage });
  }
}
