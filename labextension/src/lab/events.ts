/**
 * The server-sent events of `<base_url>lumen/api/events` (`pool`, `refused`),
 * read with `fetch` and a stream reader so the Jupyter token goes in a header.
 * Reconnects with a growing delay, and closes while the page is hidden.
 */

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import type { PoolInfo } from '../views/types';

export interface RefusedEvent {
  code: string;
  status?: number;
  model?: string;
  message?: string;
  next_refill_at?: string | null;
}

export interface EventHandlers {
  pool?: (pool: PoolInfo) => void;
  refused?: (event: RefusedEvent) => void;
  connection?: (connected: boolean) => void;
}

const MIN_DELAY_MS = 500;
const MAX_DELAY_MS = 30_000;

/** Split an SSE text buffer into complete events; returns the unparsed rest. */
export function parseEvents(buffer: string, emit: (kind: string, data: string) => void): string {
  const normalized = buffer.replace(/\r\n?/g, '\n');
  const blocks = normalized.split('\n\n');
  const rest = blocks.pop() ?? '';
  for (const block of blocks) {
    let kind = 'message';
    const data: string[] = [];
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) {
        continue;
      }
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) {
        value = value.slice(1);
      }
      if (field === 'event') {
        kind = value;
      } else if (field === 'data') {
        data.push(value);
      }
    }
    if (data.length) {
      emit(kind, data.join('\n'));
    }
  }
  return rest;
}

export class LumenEventStream {
  private readonly handlers = new Set<EventHandlers>();
  private abort: AbortController | null = null;
  private retryTimer: number | undefined;
  private delay = MIN_DELAY_MS;
  private running = false;
  private connected = false;
  private readonly onVisibility = () => this.visibilityChanged();

  constructor(
    private readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()
  ) {}

  get isConnected(): boolean {
    return this.connected;
  }

  subscribe(handlers: EventHandlers): () => void {
    this.handlers.add(handlers);
    return () => this.handlers.delete(handlers);
  }

  start(): void {
    if (this.running) {
      return;
    }
    this.running = true;
    document.addEventListener('visibilitychange', this.onVisibility);
    if (!document.hidden) {
      this.connect();
    }
  }

  stop(): void {
    this.running = false;
    document.removeEventListener('visibilitychange', this.onVisibility);
    this.disconnect();
  }

  private visibilityChanged(): void {
    if (!this.running) {
      return;
    }
    if (document.hidden) {
      this.disconnect();
    } else if (!this.abort) {
      this.delay = MIN_DELAY_MS;
      this.connect();
    }
  }

  private disconnect(): void {
    if (this.retryTimer !== undefined) {
      window.clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
    this.abort?.abort();
    this.abort = null;
    this.setConnected(false);
  }

  private setConnected(value: boolean): void {
    if (this.connected !== value) {
      this.connected = value;
      for (const h of this.handlers) {
        h.connection?.(value);
      }
    }
  }

  private emit(kind: string, text: string): void {
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch {
      return;
    }
    for (const h of this.handlers) {
      try {
        if (kind === 'pool') {
          h.pool?.(data as PoolInfo);
        } else if (kind === 'refused') {
          h.refused?.(data as RefusedEvent);
        }
      } catch (err) {
        console.warn('lumen-jupyter: an event handler failed', err);
      }
    }
  }

  private connect(): void {
    if (this.retryTimer !== undefined) {
      window.clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
    const abort = new AbortController();
    this.abort = abort;
    void this.read(abort).then(
      () => this.ended(abort),
      () => this.ended(abort)
    );
  }

  private ended(abort: AbortController): void {
    if (this.abort !== abort) {
      return; // stopped or replaced on purpose
    }
    this.abort = null;
    this.setConnected(false);
    if (!this.running || document.hidden) {
      return;
    }
    const wait = this.delay;
    this.delay = Math.min(this.delay * 2, MAX_DELAY_MS);
    this.retryTimer = window.setTimeout(() => {
      this.retryTimer = undefined;
      if (this.running && !document.hidden && !this.abort) {
        this.connect();
      }
    }, wait);
  }

  private async read(abort: AbortController): Promise<void> {
    const url = URLExt.join(this.settings.baseUrl, 'lumen', 'api', 'events');
    const headers: Record<string, string> = { Accept: 'text/event-stream' };
    if (this.settings.token) {
      headers.Authorization = `token ${this.settings.token}`;
    }
    const response = await fetch(url, {
      headers,
      credentials: 'same-origin',
      cache: 'no-store',
      signal: abort.signal
    });
    if (!response.ok || !response.body) {
      throw new Error(`events: ${response.status}`);
    }
    this.setConnected(true);
    this.delay = MIN_DELAY_MS;
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) {
          break;
        }
        buffer += decoder.decode(value, { stream: true });
        buffer = parseEvents(buffer, (kind, data) => this.emit(kind, data));
      }
    } finally {
      reader.releaseLock();
    }
  }
}
