/**
 * The profile REST API (`<base_url>lumen/api/`) through Jupyter's
 * ServerConnection, which adds the base URL, the token and the XSRF header.
 */

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import type {
  ApiKey,
  CreatedKey,
  KeyLimits,
  KeyList,
  ModelInfo,
  ModelList,
  Period,
  Profile,
  UsageHistory
} from '../views/types';

/** Which rows of a long list to fetch: `limit` of them (all when left out) after `offset`. */
export interface PageRequest {
  limit?: number;
  offset?: number;
}

function pageQuery(page: PageRequest): string {
  let query = '';
  if (page.limit !== undefined) {
    query += `&limit=${page.limit}`;
  }
  if (page.offset) {
    query += `&offset=${page.offset}`;
  }
  return query;
}

/** lumen could not load its configuration: every REST call answers 503 with the reason. */
export class LumenConfigError extends Error {
  readonly code = 'lumen_config_error';
}

/**
 * A failed call's answer: lumen's error document, or the bare message of a Jupyter
 * server handler.
 */
interface ErrorAnswer {
  error?: { code?: string; message?: string };
  message?: string;
}

export class LumenRestClient {
  constructor(readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()) {}

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const url = URLExt.join(this.settings.baseUrl, 'lumen', 'api', path);
    const init: RequestInit = { method, cache: 'no-store' };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers = { 'Content-Type': 'application/json' };
    }
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(url, init, this.settings);
    } catch (err) {
      throw new Error(`The Jupyter server did not answer (${(err as Error).message})`);
    }
    const text = await response.text();
    let data: unknown = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) {
      const failure = data as ErrorAnswer | null;
      const message =
        failure?.error?.message ?? failure?.message ?? `${response.status} ${response.statusText}`;
      if (response.status === 404 && !failure?.error) {
        throw new Error('The lumen-jupyter server extension is not enabled on this server');
      }
      if (response.status === 503 && failure?.error?.code === 'lumen_config_error') {
        throw new LumenConfigError(message);
      }
      throw new Error(message);
    }
    return data as T;
  }

  profile(): Promise<Profile> {
    return this.call('GET', 'profile');
  }

  async keys(includeRevoked = false): Promise<ApiKey[]> {
    return (await this.keyList(includeRevoked)).keys;
  }

  /** The keys, or a page of them, with how many there are. */
  keyList(includeRevoked = false, page: PageRequest = {}): Promise<KeyList> {
    return this.call('GET', `keys?include_revoked=${includeRevoked}${pageQuery(page)}`);
  }

  createKey(name?: string): Promise<CreatedKey> {
    return this.call('POST', 'keys', name === undefined ? {} : { name });
  }

  saveKey(id: number, name: string, limits: KeyLimits = {}): Promise<ApiKey> {
    return this.call('PATCH', `keys/${id}`, { name, ...limits });
  }

  revokeKey(id: number): Promise<{ id: number; result: string }> {
    return this.call('DELETE', `keys/${id}`);
  }

  async models(): Promise<ModelInfo[]> {
    return (await this.modelList()).models;
  }

  /** The models, or a page of them, with how many there are. */
  modelList(page: PageRequest = {}): Promise<ModelList> {
    const query = pageQuery(page);
    return this.call('GET', query ? `models?${query.slice(1)}` : 'models');
  }

  consent(name: string, noticeDigest: string | null): Promise<ModelInfo> {
    return this.call(
      'POST',
      `models/${encodeURIComponent(name)}/consent`,
      noticeDigest ? { notice_digest: noticeDigest } : {}
    );
  }

  usage(period: Period, groupBy = 'model'): Promise<UsageHistory> {
    return this.call('GET', `usage?period=${period}&group_by=${groupBy}`);
  }
}
