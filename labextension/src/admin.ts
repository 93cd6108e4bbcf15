/**
 * The admin page of a hub deployment (`<prefix>admin/`, served by the lumen service):
 * every user with pool, balance and usage; grant coins; set a pool; revoke keys.
 *
 * Built from the same view code as the profile - the sortable table, the dialogs,
 * the coin tile and the spending chart of `src/views` - into one module next to the
 * widget bundle (`scripts/bundle-widget.mjs`). Everything goes through
 * `api/admin/*`, the `jupyter lumen` commands over HTTP, with the login cookie and
 * the page's XSRF token; the service decides what the signed-in user may do, and
 * this page only hides what their rights cannot reach.
 */

import { confirmDialog, messageOf, openDialog, type DialogButton } from './views/dialog';
import { h, replaceChildren, uid } from './views/dom';
import { coinsText, formatCount, relativeTime } from './views/format';
import { expiresCell } from './views/keysTable';
import { renderChartSvg, renderLegend } from './views/spendingChart';
import { SortableTable, type TableColumn } from './views/table';
import { renderCoinsAvailable } from './views/tiles';
import type { ApiKey, Coins, PoolInfo, UsageHistory } from './views/types';

interface Reach {
  everyone: boolean;
  groups: string[];
  users: string[];
}

export interface Rights {
  admin: Reach;
  grant: Reach;
}

/** A row of `users` (`jupyter lumen users --json`). */
export interface UserRow {
  username: string;
  state: 'none' | 'unlimited' | 'limited' | 'blocked';
  source: string | null;
  requests: number;
  coins_used: Coins;
  last_used_at: string | null;
  balance?: Coins;
  max?: Coins;
  refresh_per_hour?: Coins;
}

interface Page {
  api: string;
  user: string;
  rights: Rights;
  xsrf: string;
  xsrfHeader: string;
}

/** What the signed-in user's rights reach, in words. */
export function describeRights(rights: Rights): string {
  const parts: string[] = [];
  const reach = (r: Reach) =>
    r.everyone ? 'everyone' : [...r.groups.map(g => `group ${g}`), ...r.users].join(', ');
  if (hasReach(rights.admin)) {
    parts.push(`administers ${reach(rights.admin)}`);
  }
  if (hasReach(rights.grant)) {
    parts.push(`grants coins to ${reach(rights.grant)}`);
  }
  return parts.join('; ');
}

export function hasReach(r: Reach): boolean {
  return r.everyone || r.groups.length > 0 || r.users.length > 0;
}

/** What the service answers when a command fails. */
interface ErrorAnswer {
  error?: { message?: string };
}

/** The commands of `api/admin`, with the login cookie and the page's XSRF token. */
export class AdminApi {
  constructor(private readonly page: Page) {}

  async get<T = unknown>(command: string, fields: Record<string, string> = {}): Promise<T> {
    const query = new URLSearchParams(fields).toString();
    return this.call<T>('GET', `${command}${query ? `?${query}` : ''}`);
  }

  async post<T = unknown>(command: string, fields: Record<string, unknown>): Promise<T> {
    return this.call<T>('POST', command, fields);
  }

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (method !== 'GET') {
      headers['Content-Type'] = 'application/json';
      headers[this.page.xsrfHeader] = this.page.xsrf;
    }
    const response = await fetch(`${this.page.api}${path}`, {
      method,
      headers,
      credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body)
    });
    let data: unknown = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) {
      const message = (data as ErrorAnswer | null)?.error?.message;
      throw new Error(message || `The service answered ${response.status}`);
    }
    return data as T;
  }
}

function field(label: string, input: HTMLInputElement, help?: string): HTMLElement {
  const id = uid('admin-field');
  input.id = id;
  const helpEl = help
    ? h('p', { class: 'lumen-section-help', text: help, attrs: { id: `${id}-help` } })
    : null;
  if (helpEl) {
    input.setAttribute('aria-describedby', `${id}-help`);
  }
  return h(
    'div',
    { class: 'lumen-admin-field' },
    h('label', { class: 'lumen-field-label', text: label, attrs: { for: id } }),
    input,
    helpEl
  );
}

function input(name: string, attrs: Record<string, string> = {}): HTMLInputElement {
  return h('input', {
    class: 'lumen-input',
    attrs: { type: 'text', name, autocomplete: 'off', ...attrs }
  });
}

/** The balance cell: "12.5 / 20", or the pool's state. */
export function balanceCell(row: UserRow): string {
  if (row.state === 'unlimited') {
    return 'Unlimited';
  }
  if (row.state === 'none') {
    return '—';
  }
  const text = `${coinsText(row.balance)} / ${coinsText(row.max)}`;
  return row.state === 'blocked' ? `${text} (blocked)` : text;
}

export class AdminView {
  readonly el: HTMLElement;
  private readonly table: SortableTable<UserRow>;
  private readonly status: HTMLElement;
  private readonly error: HTMLElement;
  private readonly search: HTMLInputElement;
  private rows: UserRow[] = [];
  private readonly isAdmin: boolean;
  private readonly canGrant: boolean;

  constructor(
    private readonly api: AdminApi,
    page: Page
  ) {
    this.isAdmin = hasReach(page.rights.admin);
    this.canGrant = this.isAdmin || hasReach(page.rights.grant);
    const columns: TableColumn<UserRow>[] = [
      {
        id: 'user',
        label: 'User',
        kind: 'text',
        width: '16%',
        value: r => r.username,
        cell: r => r.username
      },
      {
        id: 'pool',
        label: 'Pool',
        kind: 'text',
        width: '12%',
        value: r => r.source ?? r.state,
        cell: r => (r.source ? `${r.source}` : r.state)
      },
      {
        id: 'balance',
        label: 'Balance',
        kind: 'number',
        numeric: true,
        width: '14%',
        value: r => (r.balance ? r.balance.micro : null),
        cell: r => balanceCell(r)
      },
      {
        id: 'refill',
        label: 'Refill / h',
        kind: 'number',
        numeric: true,
        width: '9%',
        value: r => (r.refresh_per_hour ? r.refresh_per_hour.micro : null),
        cell: r => (r.refresh_per_hour ? coinsText(r.refresh_per_hour) : '—')
      },
      {
        id: 'requests',
        label: 'Requests',
        kind: 'number',
        numeric: true,
        width: '9%',
        value: r => r.requests,
        cell: r => formatCount(r.requests)
      },
      {
        id: 'used',
        label: 'Coins used',
        kind: 'number',
        numeric: true,
        width: '10%',
        value: r => r.coins_used.micro,
        cell: r => coinsText(r.coins_used)
      },
      {
        id: 'last',
        label: 'Last used',
        kind: 'date',
        width: '11%',
        value: r => r.last_used_at,
        cell: r => relativeTime(r.last_used_at)
      },
      {
        id: 'actions',
        label: 'Actions',
        sortable: false,
        kind: 'text',
        width: '19%',
        value: () => '',
        cell: r => this.actions(r)
      }
    ];
    this.table = new SortableTable<UserRow>({
      columns,
      sort: { column: 'user', direction: 'ascending' },
      tieBreak: r => r.username,
      rowKey: r => r.username,
      caption: 'Users, their pools and their usage',
      empty: 'No accounts yet',
      className: 'lumen-admin-table'
    });
    this.status = h('p', {
      class: 'lumen-status lumen-admin-status',
      attrs: { role: 'status', 'aria-live': 'polite' }
    });
    this.error = h('p', { class: 'lumen-inline-error', attrs: { role: 'alert', hidden: true } });
    this.search = input('search', {
      type: 'search',
      placeholder: 'Find a user',
      'aria-label': 'Find a user'
    });
    this.search.classList.add('lumen-search');
    this.search.addEventListener('input', () => this.show());
    const tools = h(
      'div',
      { class: 'lumen-section-tools' },
      this.search,
      this.canGrant
        ? h('button', {
            class: 'lumen-button lumen-button-primary',
            text: 'Grant to a user…',
            attrs: { type: 'button', name: 'grant-any' },
            on: { click: () => this.grantDialog(null) }
          })
        : null,
      h('button', {
        class: 'lumen-button',
        text: 'Refresh',
        attrs: { type: 'button', name: 'refresh' },
        on: { click: () => void this.load() }
      })
    );
    this.el = h(
      'div',
      { class: 'lumen-profile lumen-admin-view' },
      h(
        'p',
        { class: 'lumen-section-help' },
        `Signed in as ${page.user}, who ${describeRights(page.rights)}.`
      ),
      h(
        'section',
        { class: 'lumen-section', attrs: { 'aria-label': 'Users' } },
        h(
          'div',
          { class: 'lumen-section-head' },
          h('h2', { class: 'lumen-section-title', text: 'Users' }),
          tools
        ),
        this.error,
        this.status,
        this.table.el
      )
    );
  }

  private actions(row: UserRow): HTMLElement {
    const button = (label: string, name: string, action: () => void) =>
      h('button', {
        class: 'lumen-button lumen-button-small',
        text: label,
        attrs: { type: 'button', name, 'aria-label': `${label} ${row.username}` },
        on: { click: action }
      });
    return h(
      'span',
      { class: 'lumen-admin-actions' },
      this.canGrant ? button('Grant', 'grant', () => this.grantDialog(row.username)) : null,
      button('Pool', 'pool', () => void this.poolDialog(row.username)),
      button('Usage', 'usage', () => void this.usageDialog(row.username)),
      this.isAdmin ? button('Keys', 'keys', () => void this.keysDialog(row.username)) : null
    );
  }

  private setError(message: string | null): void {
    this.error.textContent = message ?? '';
    this.error.hidden = !message;
  }

  private say(text: string): void {
    this.status.textContent = text;
  }

  async load(): Promise<void> {
    try {
      const answer = await this.api.get<{ result: { users: UserRow[] } }>('users');
      this.rows = answer.result.users;
      this.setError(null);
      this.show();
    } catch (err) {
      this.setError(messageOf(err));
    }
  }

  private show(): void {
    const query = this.search.value.trim().toLowerCase();
    const rows = query
      ? this.rows.filter(r => r.username.toLowerCase().includes(query))
      : this.rows;
    this.table.setRows(rows, query ? 'No user matches' : 'No accounts yet');
  }

  private grantDialog(username: string | null): void {
    const who = input('user', { value: username ?? '', required: 'true' });
    const coins = input('coins', { inputmode: 'decimal', required: 'true' });
    const note = input('note');
    const create = h('input', { attrs: { type: 'checkbox', name: 'create' } });
    const createId = uid('admin-create');
    create.id = createId;
    const body = [
      username === null ? field('User', who) : h('p', { text: `Grant coins to ${username}.` }),
      field('Coins', coins, this.isAdmin ? 'A negative amount takes coins away.' : undefined),
      field('Note (kept in the ledger)', note),
      username === null
        ? h(
            'div',
            { class: 'lumen-check' },
            create,
            h('label', { text: ' Create the account if it has none', attrs: { for: createId } })
          )
        : null
    ];
    openDialog(this.el, {
      title: 'Grant coins',
      body,
      initialFocus: username === null ? who : coins,
      buttons: [
        { label: 'Cancel', action: () => undefined, name: 'cancel' },
        {
          label: 'Grant',
          kind: 'primary',
          name: 'confirm',
          action: async () => {
            const fields: Record<string, unknown> = {
              user: (username ?? who.value).trim(),
              coins: coins.value.trim()
            };
            if (note.value.trim()) {
              fields.note = note.value.trim();
            }
            if (create.checked) {
              fields.create = true;
            }
            const answer = await this.api.post<{ text: string }>('grant', fields);
            this.say(answer.text);
            await this.load();
          }
        }
      ]
    });
  }

  private async poolDialog(username: string): Promise<void> {
    let pool: PoolInfo;
    try {
      pool = (await this.api.get<{ result: { pool: PoolInfo } }>('pool', { user: username })).result
        .pool;
    } catch (err) {
      this.setError(messageOf(err));
      return;
    }
    const tile = h('div', { class: 'lumen-tiles lumen-admin-tiles' }, renderCoinsAvailable(pool));
    const max = input('max', { inputmode: 'decimal' });
    const refresh = input('refresh', { inputmode: 'decimal' });
    const starting = input('starting', { inputmode: 'decimal' });
    const body: (HTMLElement | null)[] = [
      h('p', { text: `${username}: ${pool.source ? `pool from ${pool.source}` : pool.state}.` }),
      tile
    ];
    const buttons: DialogButton[] = [{ label: 'Close', action: () => undefined, name: 'cancel' }];
    if (this.isAdmin) {
      body.push(
        h('h4', { class: 'lumen-admin-subtitle', text: `Give ${username} a pool of their own` }),
        field('Max coins', max, '-2 for unlimited, 0 blocks the account.'),
        field('Refill per hour', refresh),
        field('Starting balance', starting, 'Default: the max.')
      );
      const setPool = async (clear: boolean) => {
        const fields: Record<string, unknown> = { user: username };
        if (clear) {
          fields.clear = true;
        } else {
          fields.max = max.value.trim();
          if (refresh.value.trim()) {
            fields.refresh = refresh.value.trim();
          }
          if (starting.value.trim()) {
            fields.starting = starting.value.trim();
          }
        }
        const answer = await this.api.post<{ text: string }>('pool', fields);
        this.say(answer.text);
        await this.load();
      };
      buttons.push(
        { label: 'Remove own pool', action: () => setPool(true), name: 'clear' },
        { label: 'Set pool', kind: 'primary', action: () => setPool(false), name: 'confirm' }
      );
    }
    openDialog(this.el, {
      title: `Pool of ${username}`,
      body,
      buttons,
      className: 'lumen-admin-dialog'
    });
  }

  private async usageDialog(username: string): Promise<void> {
    let usage: UsageHistory;
    try {
      usage = (
        await this.api.get<{ result: UsageHistory }>('usage', { user: username, period: 'month' })
      ).result;
    } catch (err) {
      this.setError(messageOf(err));
      return;
    }
    const totals = Object.entries(usage.totals ?? {});
    const list = h(
      'ul',
      { class: 'lumen-admin-totals' },
      ...totals.map(([name, values]) =>
        h(
          'li',
          {},
          `${name}: ${formatCount(values.requests)} requests, ${coinsText(values.coins_micro)} coins`
        )
      )
    );
    openDialog(this.el, {
      title: `Usage of ${username}, this month`,
      className: 'lumen-admin-dialog',
      body: totals.length
        ? [
            h('div', { class: 'lumen-chart-wrap' }, renderChartSvg(usage, 'coins')),
            renderLegend(usage, 'coins'),
            list
          ]
        : [h('p', { text: 'No calls in this period.' })],
      buttons: [{ label: 'Close', action: () => undefined, name: 'cancel' }]
    });
  }

  private async keysDialog(username: string): Promise<void> {
    const holder = h('div', { class: 'lumen-admin-keys' });
    const render = async () => {
      const answer = await this.api.get<{ result: { keys: ApiKey[] } }>('keys', {
        user: username,
        all: 'true'
      });
      const keys = answer.result.keys;
      const table = new SortableTable<ApiKey>({
        columns: [
          {
            id: 'id',
            label: 'ID',
            kind: 'number',
            numeric: true,
            value: k => k.id,
            cell: k => String(k.id)
          },
          {
            id: 'name',
            label: 'Name',
            kind: 'text',
            value: k => k.name,
            cell: k => k.name || '(unnamed)'
          },
          {
            id: 'hint',
            label: 'Hint',
            kind: 'text',
            value: k => k.hint,
            cell: k => h('code', { class: 'lumen-hint', text: k.hint })
          },
          {
            id: 'status',
            label: 'Status',
            kind: 'text',
            value: k => k.status,
            cell: k => k.status
          },
          {
            id: 'expires',
            label: 'Expires',
            kind: 'date',
            value: k => k.expires_at,
            cell: k => expiresCell(k)
          },
          {
            id: 'revoke',
            label: 'Actions',
            kind: 'text',
            sortable: false,
            value: () => '',
            cell: k =>
              k.status === 'revoked'
                ? h('span', { class: 'lumen-muted', text: 'Revoked' })
                : h('button', {
                    class: 'lumen-button lumen-button-small lumen-button-danger-outline',
                    text: 'Revoke',
                    attrs: {
                      type: 'button',
                      name: 'revoke',
                      'aria-label': `Revoke key ${k.name || k.id}`
                    },
                    on: {
                      click: () =>
                        confirmDialog(this.el, {
                          title: 'Revoke this key?',
                          message: [
                            `${username}'s key ${k.name || k.id} (${k.hint}) stops working at once.`
                          ],
                          confirmLabel: 'Revoke',
                          danger: true,
                          onConfirm: async () => {
                            const answer = await this.api.post<{ text: string }>('revoke', {
                              user: username,
                              key_id: k.id
                            });
                            this.say(answer.text);
                            await render();
                          }
                        })
                    }
                  })
          }
        ],
        sort: { column: 'id', direction: 'descending' },
        tieBreak: k => String(k.id),
        rowKey: k => String(k.id),
        caption: `Keys of ${username}`,
        empty: 'No keys'
      });
      table.setRows(keys);
      replaceChildren(holder, table.el);
    };
    try {
      await render();
    } catch (err) {
      this.setError(messageOf(err));
      return;
    }
    openDialog(this.el, {
      title: `Keys of ${username}`,
      className: 'lumen-admin-dialog',
      body: [holder],
      buttons: [{ label: 'Close', action: () => undefined, name: 'cancel' }]
    });
  }
}

/** Read the page's settings from its `#lumen-admin` element and start. */
export function start(root: HTMLElement): AdminView {
  const data = root.dataset;
  const page: Page = {
    api: data.api ?? '',
    user: data.user ?? '',
    rights: JSON.parse(data.rights ?? '{}') as Rights,
    xsrf: data.xsrf ?? '',
    xsrfHeader: data.xsrfHeader ?? 'X-XSRFToken'
  };
  const view = new AdminView(new AdminApi(page), page);
  root.appendChild(view.el);
  void view.load();
  return view;
}

const root = typeof document === 'undefined' ? null : document.getElementById('lumen-admin');
if (root) {
  start(root);
}
