/**
 * The Lab panel's side of the views: holds a `ProfileState` loaded over REST
 * and carries out the views' intents. The raw key of a new key is returned to
 * the dialog and never kept here.
 */

import { messageOf } from '../views/dialog';
import {
  emptyState,
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
      this.timer = window.setInterval(() => void this.refresh().catch(() => undefined), seconds * 1000);
    }
  }

  stopPolling(): void {
    if (this.timer !== undefined) {
      window.clearInterval(this.timer);
      this.timer = undefined;
    }
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
      this.inFlight = this.load().finally(() => {
        this.inFlight = null;
      });
    }
    return this.inFlight;
  }

  private async load(): Promise<void> {
    this.set({ loading: true });
    try {
      const [profile, keys, models, usage] = await Promise.all([
        this.client.profile(),
        this.client.keys(true),
        this.client.models(),
        this.client.usage(this.current.period)
      ]);
      this.set({ profile, keys, models, usage, loading: false, error: null });
    } catch (err) {
      this.set({ loading: false, error: `Could not load the profile: ${messageOf(err)}` });
      throw err;
    }
  }

  private async reloadKeys(): Promise<void> {
    const [keys, profile] = await Promise.all([this.client.keys(true), this.client.profile()]);
    this.set({ keys, profile });
  }

  async createKey(): Promise<CreatedKey> {
    const created = await this.client.createKey();
    return { id: created.id, hint: created.hint, name: created.name, status: created.status, key: created.key };
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
