/**
 * The Model Access section: a search box (model name, case-insensitive), "Show
 * disabled" (disabled and blocked models are hidden without it), and the table
 * (Model, Requests, Tokens, Coins, Last Used, Access, Status). The model name
 * opens its detail; "Need Consent" opens its notice.
 *
 * While the host has only the first page of the models (`modelsTotal`), those show with
 * room for the others; a search or "Show disabled" waits for the whole list.
 */

import { accessBadge, ACCESS_LABEL, statusBadge } from './badges';
import { openConsentDialog } from './consentDialog';
import type { ViewContext } from './context';
import { h, uid } from './dom';
import { formatCoins, formatCount } from './format';
import { openModelDetail } from './modelDetail';
import { matchesSearch } from './sort';
import { SortableTable, type TableColumn } from './table';
import type { ModelInfo, ProfileState } from './types';
import { timeCell } from './webChatRow';

/** Disabled and blocked models appear only with "Show disabled". */
export function hiddenByDefault(model: ModelInfo): boolean {
  return !model.active || model.status === 'disabled' || model.access === 'blocked';
}

export function visibleModels(
  models: readonly ModelInfo[],
  query: string,
  showDisabled: boolean
): ModelInfo[] {
  return models.filter(m => (showDisabled || !hiddenByDefault(m)) && matchesSearch(m.name, query));
}

const STATUS_ORDER: Record<string, number> = { ok: 0, degraded: 1, down: 2, disabled: 3 };

export class ModelsSection {
  readonly el: HTMLElement;
  private readonly table: SortableTable<ModelInfo>;
  private readonly search: HTMLInputElement;
  private readonly showDisabled: HTMLInputElement;
  private readonly count: HTMLElement;
  private models: ModelInfo[] = [];
  /** How many models there are while `models` holds only the first of them, else null. */
  private total: number | null = null;
  /** Whether a list has arrived (before that an empty table says it is loading). */
  private ready = false;

  constructor(private readonly ctx: ViewContext) {
    const columns: TableColumn<ModelInfo>[] = [
      {
        id: 'model',
        width: '22%',
        label: 'Model',
        kind: 'text',
        value: m => m.name,
        cell: m =>
          h('button', {
            class: 'lumen-link-button',
            text: m.name,
            title: m.description ?? undefined,
            attrs: { type: 'button', 'aria-haspopup': 'dialog' },
            on: { click: () => openModelDetail(this.ctx, this.current(m.name) ?? m) }
          })
      },
      {
        id: 'requests',
        width: '15%',
        label: 'Requests',
        kind: 'number',
        numeric: true,
        value: m => m.usage.requests,
        cell: m => formatCount(m.usage.requests)
      },
      {
        id: 'tokens',
        width: '11%',
        label: 'Tokens',
        kind: 'number',
        numeric: true,
        value: m => m.usage.tokens,
        cell: m => formatCount(m.usage.tokens)
      },
      {
        id: 'coins',
        width: '11%',
        label: 'Coins',
        kind: 'number',
        numeric: true,
        value: m => m.usage.coins_micro,
        cell: m => formatCoins(m.usage.coins_micro ?? 0)
      },
      {
        id: 'last_used',
        width: '15%',
        label: 'Last Used',
        kind: 'date',
        value: m => m.usage.last_used_at,
        cell: m => timeCell(m.usage.last_used_at, this.ctx.now())
      },
      {
        id: 'access',
        width: '15%',
        label: 'Access',
        kind: 'text',
        value: m => ACCESS_LABEL[m.access] ?? m.access,
        cell: m =>
          accessBadge(m.access, () => openConsentDialog(this.ctx, this.current(m.name) ?? m))
      },
      {
        id: 'status',
        width: '11%',
        label: 'Status',
        kind: 'text',
        value: m => `${STATUS_ORDER[m.status] ?? 9}`,
        cell: m => statusBadge(m.status)
      }
    ];
    this.table = new SortableTable<ModelInfo>({
      columns,
      sort: { column: 'model', direction: 'ascending' },
      tieBreak: m => m.name,
      rowKey: m => m.name,
      caption: 'Models and your access to them',
      empty: 'No models.',
      className: 'lumen-models-table',
      rowAttrs: m => ({
        class: hiddenByDefault(m) ? 'lumen-model-off' : undefined,
        data: { model: m.name, access: m.access, status: m.status }
      })
    });
    const searchId = uid('model-search');
    this.search = h('input', {
      class: 'lumen-input lumen-search',
      attrs: {
        id: searchId,
        type: 'search',
        placeholder: 'Search models',
        'aria-label': 'Search models by name',
        autocomplete: 'off'
      },
      on: { input: () => this.renderRows() }
    });
    const toggleId = uid('show-disabled');
    this.showDisabled = h('input', {
      attrs: { type: 'checkbox', id: toggleId },
      on: { change: () => this.renderRows() }
    });
    this.count = h('p', { class: 'lumen-count lumen-muted', attrs: { 'aria-live': 'polite' } });
    this.el = h(
      'section',
      { class: 'lumen-section lumen-models', attrs: { 'aria-label': 'Model Access' } },
      h(
        'div',
        { class: 'lumen-section-head' },
        h('h3', { class: 'lumen-section-title', text: 'Model Access' }),
        h(
          'div',
          { class: 'lumen-section-tools' },
          this.search,
          h(
            'label',
            { class: 'lumen-check', attrs: { for: toggleId } },
            this.showDisabled,
            'Show disabled'
          )
        )
      ),
      this.count,
      this.table.el
    );
  }

  update(state: ProfileState, all = true): void {
    const ready =
      this.ready || !state.loading || state.models.length > 0 || state.modelsTotal !== null;
    if (
      !all &&
      state.models === this.models &&
      state.modelsTotal === this.total &&
      ready === this.ready
    ) {
      return;
    }
    this.models = state.models;
    this.total = state.modelsTotal;
    this.ready = ready;
    this.renderRows();
  }

  private current(name: string): ModelInfo | undefined {
    return this.models.find(m => m.name === name);
  }

  private renderRows(): void {
    if (!this.ready) {
      this.count.textContent = '';
      this.table.setRows([], 'Loading the models…');
      return;
    }
    if (this.total !== null) {
      this.count.textContent = `${this.total} models (loading the list)`;
      if (this.search.value.trim() || this.showDisabled.checked) {
        this.table.showWaiting(`Loading all ${this.total} models…`);
      } else {
        // Room for every model: the disabled ones it will hide are not known yet.
        this.table.setFirstRows(
          visibleModels(this.models, '', false),
          this.total,
          'No models to show yet.'
        );
      }
      return;
    }
    const rows = visibleModels(this.models, this.search.value, this.showDisabled.checked);
    const hidden = this.models.filter(hiddenByDefault).length;
    let text = `${rows.length} of ${this.models.length} models`;
    if (!this.showDisabled.checked && hidden) {
      text += ` (${hidden} disabled or blocked hidden)`;
    }
    this.count.textContent = text;
    const empty = this.models.length
      ? this.search.value.trim()
        ? `No model matches “${this.search.value.trim()}”.`
        : 'No models to show. Tick “Show disabled” to see disabled and blocked ones.'
      : 'No models are available to you.';
    this.table.setRows(rows, empty);
  }
}
