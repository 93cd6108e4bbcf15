/**
 * The data the profile views render and the intents they emit.
 *
 * The shapes mirror the profile REST API (`<base_url>lumen/api/`, typed in
 * lumen_jupyter/core/wire.py, described by lumen_jupyter/server/openapi.py); the
 * tests compare these interfaces with that document field by field
 * (tests/server/test_wire_types.py), so a change on either side fails CI. Both hosts fill a `ProfileState` from it: the
 * anywidget entry from the widget model's traits, the Lab panel from REST.
 */

/** An exact amount: integer micro-coins and the server's decimal text. */
export interface Coins {
  micro: number;
  text: string;
}

export interface UserInfo {
  username: string;
  display_name: string;
  email: string | null;
  initials: string;
  avatar_url: string | null;
}

export interface Tiles {
  groups: string[];
  coins_used: Coins;
  tokens_used: number;
  favorite_model: string | null;
}

export type PoolStateName = 'none' | 'unlimited' | 'limited' | 'blocked';

export interface PoolInfo {
  state: PoolStateName;
  source: string | null;
  balance?: Coins;
  max?: Coins;
  refresh_per_hour?: Coins;
  exhausted?: boolean;
  last_refill_at?: string | null;
  next_refill_at?: string | null;
}

/** Usage counters as the API sends them (coins as micro-coins plus text). */
export interface Counters {
  requests: number;
  input_tokens?: number;
  output_tokens?: number;
  tokens: number;
  coins_micro: number;
  coins?: string;
  last_used_at: string | null;
}

export interface WebChat extends Counters {
  conversations: number;
}

export interface Profile {
  user: UserInfo;
  tiles: Tiles;
  pool: PoolInfo;
  web_chat: WebChat;
  server_time: string;
}

export type KeyStatus = 'draft' | 'active' | 'revoked';

export interface ApiKey {
  id: number;
  name: string;
  hint: string;
  status: KeyStatus;
  created_at: string | null;
  revoked_at: string | null;
  last_used_at: string | null;
  requests: number;
  input_tokens?: number;
  output_tokens?: number;
  tokens: number;
  coins_micro: number;
  coins?: string;
  /** The key's own coin budget (micro-coins), or null: limited by the pool only. */
  budget_micro: number | null;
  budget?: string | null;
  /** The worst case of the key's calls in flight, held on its budget. */
  reserved_micro?: number;
  /** When the key stops working, or null: never. */
  expires_at: string | null;
  expired: boolean;
}

/** `GET keys`: all the keys asked for, or a page of them (`limit`, `offset`), and their total. */
export interface KeyList {
  keys: ApiKey[];
  total: number;
}

/** The limits a new key may be saved with (coins; a lifetime such as "7d"). */
export interface KeyLimits {
  budget?: string;
  expires_in?: string;
}

/** What creating a key returns: the key's row and, once, the raw key. */
export interface CreatedKey {
  id: number;
  hint: string;
  name: string;
  status: KeyStatus;
  key: string;
}

export type Access = 'allowed' | 'blocked' | 'needs_ack' | 'consented';
export type ModelStatus = 'ok' | 'degraded' | 'down' | 'disabled';

export interface ModelInfo {
  name: string;
  description: string | null;
  active: boolean;
  access: Access;
  status: ModelStatus;
  instances?: { configured: number; healthy: number };
  needs_consent: boolean;
  notice: string | null;
  notice_digest: string | null;
  input_cost_per_million: Coins;
  output_cost_per_million: Coins;
  max_model_len?: number | null;
  max_output_tokens?: number | null;
  supports_function_calling?: boolean | null;
  supports_reasoning?: boolean | null;
  knowledge_cutoff?: string | null;
  input_modalities?: string[] | null;
  output_modalities?: string[] | null;
  usage: Counters;
}

/** `GET models`: all the models, or a page of them (`limit`, `offset`), and their total. */
export interface ModelList {
  models: ModelInfo[];
  total: number;
}

export type Period = 'week' | 'month' | 'year' | 'all';
export const PERIODS: Period[] = ['week', 'month', 'year', 'all'];

export interface UsageValues {
  requests: number;
  input_tokens?: number;
  output_tokens?: number;
  tokens: number;
  coins_micro: number;
  coins?: string;
}

export interface UsageBucket {
  start: string;
  values: Record<string, UsageValues>;
}

export interface UsageHistory {
  period: Period;
  bucket: 'day' | 'week' | 'month';
  group_by: string;
  start?: string;
  end?: string;
  series: string[];
  buckets: UsageBucket[];
  totals: Record<string, UsageValues>;
  /** With group_by "cell": the notebook whose cells the series are. */
  notebook?: string;
}

/** Which part of the page a host shows. */
export type Section = 'profile' | 'balance' | 'keys' | 'models' | 'spending';

/** How many rows the first screen of a table needs from the server (a dozen show). */
export const FIRST_PAGE = 40;

/**
 * Everything the views render; hosts replace it as a whole on every change, and keep
 * the parts that did not change (the same arrays), which the views then skip.
 *
 * The first screen needs only the first rows of the long lists: a host may fill
 * `keys` with the first page of the *active* keys and `models` with the first page
 * of the models (both in the server's order, which is the tables' first order) and
 * say how many there are in `keysTotal` / `modelsTotal`, then send the complete
 * lists (the keys with the revoked ones) and set those back to null. Until then the
 * tables show what they have and wait with sorting, searching and filtering.
 */
export interface ProfileState {
  profile: Profile | null;
  keys: ApiKey[];
  models: ModelInfo[];
  usage: UsageHistory | null;
  period: Period;
  loading: boolean;
  error: string | null;
  /** While `keys` is the first page of the active keys: how many active keys there are. */
  keysTotal: number | null;
  /** While `models` is the first page of the models: how many models there are. */
  modelsTotal: number | null;
}

export function emptyState(): ProfileState {
  return {
    profile: null,
    keys: [],
    models: [],
    usage: null,
    period: 'month',
    loading: false,
    error: null,
    keysTotal: null,
    modelsTotal: null
  };
}

/**
 * Intents the views emit. A host carries them out (kernel custom messages or
 * REST calls) and answers with a new state; a rejected promise carries a message
 * for the person, shown where the intent came from (a dialog, or the banner).
 */
export interface ProfileActions {
  refresh(): Promise<void>;
  /** Create a draft key; the result holds the raw key, shown once. */
  createKey(): Promise<CreatedKey>;
  /** Name a key (a draft becomes active, with its limits if given). */
  saveKey(id: number, name: string, limits?: KeyLimits): Promise<void>;
  /** Throw a draft away: nothing is stored. */
  discardKey(id: number): Promise<void>;
  revokeKey(id: number): Promise<void>;
  consent(name: string, noticeDigest: string | null): Promise<void>;
  setPeriod(period: Period): Promise<void>;
}
