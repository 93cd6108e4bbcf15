/**
 * The anywidget entry: renders the shared profile views from the widget model's
 * traits and turns the views' intents into custom messages to the kernel.
 *
 * Every intent carries a request id; the kernel answers with a one-off
 * `reply` message. A new key arrives only that way, as a binary buffer of the
 * reply: it is never a trait, so it is never in the widget state that a saved
 * notebook keeps.
 */

import { afterPaint } from './views/dom';
import { ProfileView } from './views/profileView';
import {
  emptyState,
  PERIODS,
  type ApiKey,
  type CreatedKey,
  type KeyLimits,
  type KeyStatus,
  type ModelInfo,
  type Period,
  type Profile,
  type ProfileActions,
  type ProfileState,
  type Section,
  type UsageHistory
} from './views/types';

type Buffers = (ArrayBuffer | ArrayBufferView)[];

/** A custom message from the kernel: its content and the binary buffers sent with it. */
type MessageCallback = (content: unknown, buffers?: Buffers) => void;

/** The part of anywidget's model interface this entry uses. */
interface WidgetModel {
  get(name: string): unknown;
  on(event: 'msg:custom', callback: MessageCallback): void;
  on(event: `change:${string}`, callback: () => void): void;
  off(event: 'msg:custom', callback: MessageCallback): void;
  off(event: `change:${string}`, callback: () => void): void;
  send(content: unknown, callbacks?: unknown, buffers?: ArrayBuffer[] | ArrayBufferView[]): void;
}

interface Reply {
  type: 'reply';
  request_id: string;
  ok: boolean;
  error?: string | null;
  data?: unknown;
}

/** What a reply resolves its request with. */
interface Answer {
  data: unknown;
  buffers: Buffers;
}

/** The data of the reply to `create_key`; the key itself comes as the reply's buffer. */
interface CreatedKeyData {
  id: number;
  hint: string;
  name: string | null;
  status: KeyStatus;
}

const SECTIONS: Section[] = ['profile', 'balance', 'keys', 'models', 'spending'];
const TIMEOUT_MS = 120_000;

/** Whether a trait's value is one of the values this entry knows. */
function isOneOf<T extends string>(values: readonly T[], value: unknown): value is T {
  return (values as readonly unknown[]).includes(value);
}

function count(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : null;
}

/**
 * The view's state from the model's traits. A trait that did not change gives the same
 * object as before, so the view leaves the parts it feeds alone.
 */
export function stateFromModel(model: WidgetModel): ProfileState {
  const period = model.get('period');
  return {
    profile: (model.get('profile') as Profile | null) || null,
    keys: (model.get('api_keys') as ApiKey[] | null) || [],
    models: (model.get('models') as ModelInfo[] | null) || [],
    usage: (model.get('usage') as UsageHistory | null) || null,
    period: isOneOf(PERIODS, period) ? period : 'month',
    loading: Boolean(model.get('loading')),
    error: (model.get('error') as string | null) || null,
    keysTotal: count(model.get('keys_total')),
    modelsTotal: count(model.get('models_total'))
  };
}

function decode(buffer: ArrayBuffer | ArrayBufferView | undefined): string {
  if (!buffer) {
    return '';
  }
  return new TextDecoder().decode(buffer);
}

let viewCounter = 0;

/** Intents as custom messages; replies matched by request id. */
export class KernelActions implements ProfileActions {
  private readonly prefix: string;
  private counter = 0;
  private readonly pending = new Map<
    string,
    { resolve: (answer: Answer) => void; reject: (e: Error) => void; timer: number }
  >();

  constructor(private readonly model: WidgetModel) {
    viewCounter += 1;
    this.prefix = `v${viewCounter}-${Math.random().toString(36).slice(2, 8)}`;
  }

  /** Handle a custom message from the kernel; other views' replies are ignored. */
  handle(content: unknown, buffers: Buffers = []): void {
    if (!content || (content as Partial<Reply>).type !== 'reply') {
      return;
    }
    const reply = content as Reply;
    const waiting = this.pending.get(reply.request_id);
    if (!waiting) {
      return;
    }
    this.pending.delete(reply.request_id);
    window.clearTimeout(waiting.timer);
    if (reply.ok) {
      waiting.resolve({ data: reply.data, buffers });
    } else {
      waiting.reject(new Error(reply.error || 'The kernel could not do that'));
    }
  }

  dispose(): void {
    for (const [, waiting] of this.pending) {
      window.clearTimeout(waiting.timer);
      waiting.reject(new Error('The view was closed'));
    }
    this.pending.clear();
  }

  private request(method: string, args: Record<string, unknown> = {}) {
    this.counter += 1;
    const requestId = `${this.prefix}-${this.counter}`;
    return new Promise<Answer>((resolve, reject) => {
      const timer = window.setTimeout(() => {
        this.pending.delete(requestId);
        reject(new Error('No answer from the kernel: is it running?'));
      }, TIMEOUT_MS);
      this.pending.set(requestId, { resolve, reject, timer });
      try {
        this.model.send({ type: 'intent', method, args, request_id: requestId });
      } catch (err) {
        window.clearTimeout(timer);
        this.pending.delete(requestId);
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
  }

  async refresh(): Promise<void> {
    await this.request('refresh');
  }

  async createKey(): Promise<CreatedKey> {
    const { data, buffers } = await this.request('create_key');
    const key = decode(buffers[0]);
    if (!key) {
      throw new Error('The kernel did not send the new key');
    }
    const made = data as CreatedKeyData;
    return { id: made.id, hint: made.hint, name: made.name ?? '', status: made.status, key };
  }

  async saveKey(id: number, name: string, limits: KeyLimits = {}): Promise<void> {
    await this.request('save_key', { id, name, ...limits });
  }

  async discardKey(id: number): Promise<void> {
    await this.request('discard_key', { id });
  }

  async revokeKey(id: number): Promise<void> {
    await this.request('revoke_key', { id });
  }

  async consent(name: string, noticeDigest: string | null): Promise<void> {
    await this.request('consent', { name, notice_digest: noticeDigest });
  }

  async setPeriod(period: Period): Promise<void> {
    await this.request('set_period', { period });
  }
}

const TRAITS = [
  'profile',
  'api_keys',
  'models',
  'usage',
  'period',
  'loading',
  'error',
  'keys_total',
  'models_total'
];

function render({ model, el }: { model: WidgetModel; el: HTMLElement }): () => void {
  const requested = model.get('section');
  const section: Section = isOneOf(SECTIONS, requested) ? requested : 'profile';
  const actions = new KernelActions(model);
  const view = new ProfileView(actions, { section });
  // The skeleton is painted first; the view takes the model's state once that frame
  // has been painted (the first page of the lists may be in the state already, and
  // drawing it must not hold up the frame that shows the widget).
  view.update({ ...emptyState(), loading: true });
  let painted = false;
  // One kernel message may change several traits: render once for all of them.
  let scheduled = false;
  const onChange = () => {
    if (scheduled || !painted) {
      return;
    }
    scheduled = true;
    queueMicrotask(() => {
      scheduled = false;
      view.update(stateFromModel(model));
    });
  };
  const cancelFirstPaint = afterPaint(() => {
    painted = true;
    onChange();
  });
  const onMessage: MessageCallback = (content, buffers) => actions.handle(content, buffers ?? []);
  for (const name of TRAITS) {
    model.on(`change:${name}`, onChange);
  }
  model.on('msg:custom', onMessage);
  el.classList.add('lumen-widget');
  el.appendChild(view.el);
  return () => {
    cancelFirstPaint();
    for (const name of TRAITS) {
      model.off(`change:${name}`, onChange);
    }
    model.off('msg:custom', onMessage);
    actions.dispose();
    view.dispose();
  };
}

export default { render };
