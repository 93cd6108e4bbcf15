/**
 * The API Keys section: "+ New API Key", "Show deleted keys", and the table
 * (Name, Hint, Requests, Tokens, Coins, Budget, Expires, Last Used, Actions); a key's
 * budget and expiry are chosen in the New API Key dialog. Revoked keys are
 * struck through and shown only when asked; Revoke asks for confirmation.
 *
 * While the host has only the first page of the active keys (`keysTotal`), those show
 * in the table with room for the others; "Show deleted keys" waits for the whole list.
 */

import type { ViewContext } from './context';
import { confirmDialog, messageOf } from './dialog';
import { h, uid } from './dom';
import { absoluteTime, formatCoins, formatCount } from './format';
import { openNewKeyDialog } from './newKeyDialog';
import { SortableTable, type TableColumn } from './table';
import type { ApiKey, ProfileState } from './types';
import { timeCell } from './webChatRow';

/** "2.5 left of 5", or a dash for a key limited by the pool only. */
export function budgetCell(key: ApiKey): HTMLElement | string {
  if (key.budget_micro === null || key.budget_micro === undefined) {
    return h('span', {
      class: 'lumen-muted',
      text: '—',
      title: 'No budget of its own: the pool limits it'
    });
  }
  const left = Math.max(0, key.budget_micro - (key.coins_micro ?? 0));
  return h('span', {
    class: left === 0 ? 'lumen-key-budget-spent' : 'lumen-key-budget',
    text: `${formatCoins(left)} left of ${formatCoins(key.budget_micro)}`
  });
}

/** The expiry time, "Expired" once past, or "Never". */
export function expiresCell(key: ApiKey): HTMLElement | string {
  if (!key.expires_at) {
    return h('span', { class: 'lumen-muted', text: 'Never' });
  }
  return h('span', {
    class: key.expired ? 'lumen-key-expired' : 'lumen-key-expires',
    text: key.expired ? 'Expired' : absoluteTime(key.expires_at),
    title: absoluteTime(key.expires_at)
  });
}

export class KeysSection {
  readonly el: HTMLElement;
  private readonly table: SortableTable<ApiKey>;
  private readonly showDeleted: HTMLInputElement;
  private readonly newButton: HTMLButtonElement;
  private readonly message: HTMLElement;
  private keys: ApiKey[] = [];
  /** How many active keys there are while `keys` holds only the first of them, else null. */
  private total: number | null = null;
  /** Whether a list has arrived (before that an empty table says it is loading). */
  private ready = false;

  constructor(private readonly ctx: ViewContext) {
    const columns: TableColumn<ApiKey>[] = [
      {
        id: 'name',
        width: '15%',
        label: 'Name',
        kind: 'text',
        value: k => k.name,
        cell: k =>
          h(
            'span',
            { class: 'lumen-key-name-cell' },
            k.name || '(unnamed)',
            k.status === 'revoked'
              ? h('span', { class: 'lumen-sr-only', text: ' (revoked)' })
              : null
          )
      },
      {
        id: 'hint',
        width: '10%',
        label: 'Hint',
        kind: 'text',
        value: k => k.hint,
        cell: k => h('code', { class: 'lumen-hint', text: k.hint })
      },
      {
        id: 'requests',
        width: '10%',
        label: 'Requests',
        kind: 'number',
        numeric: true,
        value: k => k.requests,
        cell: k => formatCount(k.requests)
      },
      {
        id: 'tokens',
        width: '9%',
        label: 'Tokens',
        kind: 'number',
        numeric: true,
        value: k => k.tokens,
        cell: k => formatCount(k.tokens)
      },
      {
        id: 'coins',
        width: '9%',
        label: 'Coins',
        kind: 'number',
        numeric: true,
        value: k => k.coins_micro,
        cell: k => formatCoins(k.coins_micro ?? 0)
      },
      {
        id: 'budget',
        width: '13%',
        label: 'Budget',
        kind: 'number',
        numeric: true,
        value: k => (k.budget_micro === null ? null : k.budget_micro - k.coins_micro),
        cell: k => budgetCell(k)
      },
      {
        id: 'expires',
        width: '12%',
        label: 'Expires',
        kind: 'date',
        value: k => k.expires_at,
        cell: k => expiresCell(k)
      },
      {
        id: 'last_used',
        width: '11%',
        label: 'Last Used',
        kind: 'date',
        value: k => k.last_used_at,
        cell: k => timeCell(k.last_used_at, this.ctx.now())
      },
      {
        id: 'actions',
        width: '11%',
        label: 'Actions',
        kind: 'text',
        sortable: false,
        value: () => null,
        cell: k => this.actionsCell(k)
      }
    ];
    this.table = new SortableTable<ApiKey>({
      columns,
      sort: { column: 'name', direction: 'ascending' },
      tieBreak: k => `${k.name}\u0000${String(k.id).padStart(12, '0')}`,
      rowKey: k => String(k.id),
      caption: 'Your API keys',
      empty: 'No API keys yet. Create one with “+ New API Key”.',
      className: 'lumen-keys-table',
      rowAttrs: k => ({
        class: k.status === 'revoked' ? 'lumen-revoked' : undefined,
        data: { keyId: String(k.id), status: k.status }
      })
    });
    const toggleId = uid('show-deleted');
    this.showDeleted = h('input', {
      attrs: { type: 'checkbox', id: toggleId },
      on: { change: () => this.renderRows() }
    });
    this.newButton = h('button', {
      class: 'lumen-button lumen-button-primary lumen-new-key',
      text: '+ New API Key',
      attrs: { type: 'button', 'aria-haspopup': 'dialog' },
      on: { click: () => void this.createKey() }
    });
    this.message = h('p', { class: 'lumen-inline-error', attrs: { role: 'alert', hidden: true } });
    this.el = h(
      'section',
      { class: 'lumen-section lumen-keys', attrs: { 'aria-label': 'API Keys' } },
      h(
        'div',
        { class: 'lumen-section-head' },
        h('h3', { class: 'lumen-section-title', text: 'API Keys' }),
        h(
          'div',
          { class: 'lumen-section-tools' },
          h(
            'label',
            { class: 'lumen-check', attrs: { for: toggleId } },
            this.showDeleted,
            'Show deleted keys'
          ),
          this.newButton
        )
      ),
      h(
        'p',
        { class: 'lumen-section-help' },
        'Keys let your own code and tools call models through this gateway. A key is shown once, when you create it.'
      ),
      this.message,
      this.table.el
    );
  }

  update(state: ProfileState, all = true): void {
    const ready = this.ready || !state.loading || state.keys.length > 0 || state.keysTotal !== null;
    if (
      !all &&
      state.keys === this.keys &&
      state.keysTotal === this.total &&
      ready === this.ready
    ) {
      return;
    }
    this.keys = state.keys;
    this.total = state.keysTotal;
    this.ready = ready;
    this.renderRows();
  }

  private renderRows(): void {
    if (!this.ready) {
      this.table.setRows([], 'Loading your keys…');
      return;
    }
    if (this.total !== null) {
      if (this.showDeleted.checked) {
        this.table.showWaiting('Loading the deleted keys…');
      } else {
        const empty = 'No active API keys. Create one with “+ New API Key”.';
        this.table.setFirstRows(this.keys, this.total, empty);
      }
      return;
    }
    const rows = this.showDeleted.checked
      ? this.keys
      : this.keys.filter(k => k.status !== 'revoked');
    const revoked = this.keys.length - this.keys.filter(k => k.status !== 'revoked').length;
    const empty =
      this.keys.length && !this.showDeleted.checked
        ? `No active API keys (${revoked} deleted: tick “Show deleted keys”).`
        : 'No API keys yet. Create one with “+ New API Key”.';
    this.table.setRows(rows, empty);
  }

  private actionsCell(key: ApiKey): HTMLElement {
    if (key.status === 'revoked') {
      return h('span', {
        class: 'lumen-muted',
        text: 'Revoked',
        title: key.revoked_at ? `Revoked ${absoluteTime(key.revoked_at)}` : undefined
      });
    }
    return h('button', {
      class: 'lumen-button lumen-button-small lumen-button-danger-outline',
      text: 'Revoke',
      attrs: {
        type: 'button',
        'aria-haspopup': 'dialog',
        'aria-label': `Revoke key ${key.name || key.hint}`
      },
      on: { click: () => this.confirmRevoke(key) }
    });
  }

  private confirmRevoke(key: ApiKey): void {
    confirmDialog(this.ctx.dialogHost, {
      title: 'Revoke API key?',
      message: [
        h(
          'p',
          {},
          'Revoke ',
          h('strong', { text: key.name || key.hint }),
          ' (',
          h('code', { text: key.hint }),
          ')? Code using it will get authentication errors at once. Its usage history is kept and shown with “Show deleted keys”.'
        )
      ],
      confirmLabel: 'Revoke',
      danger: true,
      onConfirm: () => this.ctx.actions.revokeKey(key.id)
    });
  }

  private async createKey(): Promise<void> {
    this.setMessage(null);
    this.newButton.disabled = true;
    this.newButton.setAttribute('aria-busy', 'true');
    try {
      const created = await this.ctx.actions.createKey();
      openNewKeyDialog(this.ctx, created, this.newButton);
    } catch (err) {
      this.setMessage(`Could not create a key: ${messageOf(err)}`);
    } finally {
      this.newButton.disabled = false;
      this.newButton.removeAttribute('aria-busy');
    }
  }

  private setMessage(text: string | null): void {
    this.message.textContent = text ?? '';
    this.message.hidden = !text;
  }
}
