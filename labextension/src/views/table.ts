/**
 * A sortable table: header buttons (reachable with Tab, pressed with Enter or
 * Space) set `aria-sort` on their column.
 *
 * The table sits in its own scroll box (`.lumen-table-wrap`). Up to
 * `windowAbove` rows are all in the document; past that only the rows in and
 * near the visible part are, between two spacer rows that keep the scroll bar
 * true, so 1,000 keys cost what 40 do. `aria-rowcount`/`aria-rowindex` tell
 * assistive technology the full size. Column widths are fixed (`<col>`), so they
 * do not jump while scrolling.
 *
 * A link before the table, shown when focused, moves focus past it: a keyboard user
 * need not Tab through a thousand rows to reach what follows. Rows have a fixed
 * height in the style sheet; the first measured height is kept for every table of
 * the page, so the rows are laid out once instead of again after measuring. Rendering
 * reads no layout (the scroll position is the one the last scroll event saw), so the
 * browser lays the table out once, at its next frame.
 *
 * While only the first rows have arrived (`setFirstRows`: the first page of a list in
 * the table's first order), the table shows them with room for the rest, and a sort
 * asked for meanwhile waits for all of them (`showWaiting` says what it waits for).
 */

import { h, replaceChildren } from './dom';
import { nextSort, sortRows, type SortColumn, type SortState } from './sort';

export interface TableColumn<T> extends SortColumn<T> {
  label: string;
  cell: (row: T) => Node | string;
  numeric?: boolean;
  sortable?: boolean;
  /** CSS width of the column, e.g. "24%". */
  width?: string;
}

export interface TableOptions<T> {
  columns: TableColumn<T>[];
  sort: SortState;
  tieBreak: (row: T) => string;
  /** A stable identity of a row (focus returns to it after a re-render). */
  rowKey: (row: T) => string;
  caption: string;
  empty: string;
  rowAttrs?: (row: T) => { class?: string; data?: Record<string, string> };
  className?: string;
  /** Render every row up to this many; window the rows above it. */
  windowAbove?: number;
}

const DEFAULT_WINDOW_ABOVE = 100;
const OVERSCAN = 20;
/** The rows' height in the style sheet (`.lumen-table tbody tr`), until measured. */
const FALLBACK_ROW_HEIGHT = 36;
/** The row height measured by any table of this page (all share the style sheet). */
let measuredRowHeight = 0;
/** The scroll box's max-height (28rem) in px, until it has been measured. */
const FALLBACK_VIEW_HEIGHT = 448;

export class SortableTable<T> {
  /** The table with its skip link: put this in the page. */
  readonly el: HTMLElement;
  /** The scroll box holding the table. */
  readonly scroller: HTMLElement;
  private readonly skipLink: HTMLAnchorElement;
  readonly table: HTMLTableElement;
  private readonly body: HTMLTableSectionElement;
  private readonly headers = new Map<string, HTMLTableCellElement>();
  private rows: readonly T[] = [];
  private sorted: T[] = [];
  /** How many rows the table has room for: more than `sorted` while the rest is coming. */
  private total = 0;
  /** What the table waits for before it shows rows again (`showWaiting`), or null. */
  private waiting: string | null = null;
  /** The text shown instead of rows while waiting (for the caller, or to sort), or null. */
  private notice: string | null = null;
  private sortState: SortState;
  private emptyText: string;
  private rowHeight = measuredRowHeight;
  private viewHeight = 0;
  private scrollTop = 0;
  private rendered: [number, number] = [0, 0];
  private frame = 0;
  private measuring = 0;

  constructor(private readonly options: TableOptions<T>) {
    this.sortState = options.sort;
    this.emptyText = options.empty;
    const headRow = h('tr', { attrs: { 'aria-rowindex': 1 } });
    const colgroup = h('colgroup');
    for (const column of options.columns) {
      const col = h('col');
      if (column.width) {
        col.style.width = column.width;
      }
      colgroup.appendChild(col);
      const th = h('th', {
        class: column.numeric ? 'lumen-num' : undefined,
        attrs: { scope: 'col' },
        dataset: { column: column.id }
      });
      if (column.sortable === false) {
        th.textContent = column.label;
      } else {
        th.appendChild(
          h(
            'button',
            {
              class: 'lumen-sort-button',
              attrs: { type: 'button' },
              on: { click: () => this.sortBy(column.id) }
            },
            column.label,
            h('span', { class: 'lumen-sort-icon', attrs: { 'aria-hidden': 'true' } })
          )
        );
      }
      this.headers.set(column.id, th);
      headRow.appendChild(th);
    }
    this.body = h('tbody');
    this.table = h(
      'table',
      { class: `lumen-table ${options.className ?? ''}`.trim() },
      h('caption', { class: 'lumen-sr-only', text: options.caption }),
      colgroup,
      h('thead', {}, headRow),
      this.body
    );
    this.scroller = h('div', { class: 'lumen-table-wrap' }, this.table);
    this.scroller.addEventListener('scroll', () => this.onScroll(), { passive: true });
    const end = h('span', {
      class: 'lumen-sr-only lumen-table-end',
      text: `End of the table: ${options.caption}`,
      attrs: { tabindex: '-1' }
    });
    this.skipLink = h('a', {
      class: 'lumen-skip-link',
      text: `Skip the table: ${options.caption}`,
      attrs: { href: '#' },
      on: {
        click: event => {
          event.preventDefault();
          end.focus();
        }
      }
    });
    this.el = h('div', { class: 'lumen-table-block' }, this.skipLink, this.scroller, end);
    this.updateHeaders();
  }

  get sort(): SortState {
    return this.sortState;
  }

  /** How many rows the table holds (rendered or not; arrived or not). */
  get rowCount(): number {
    return this.total;
  }

  sortBy(columnId: string): void {
    const column = this.options.columns.find(c => c.id === columnId);
    if (!column || column.sortable === false) {
      return;
    }
    this.sortState = nextSort(this.sortState, column as SortColumn<unknown>);
    this.updateHeaders();
    this.resort();
  }

  setRows(rows: readonly T[], empty?: string): void {
    this.setFirstRows(rows, rows.length, empty);
  }

  /**
   * The first rows of `total`, in the table's first sort order (the rest is coming).
   * They show as long as that order is chosen; another sort waits for all of them.
   */
  setFirstRows(rows: readonly T[], total: number, empty?: string): void {
    this.rows = rows;
    this.total = Math.max(total, rows.length);
    this.waiting = null;
    if (empty !== undefined) {
      this.emptyText = empty;
    }
    this.resort();
  }

  /** Show only `text` (what the table waits for) until rows are set again. */
  showWaiting(text: string): void {
    this.rows = [];
    this.total = 0;
    this.waiting = text;
    this.resort();
  }

  private get partial(): boolean {
    return this.total > this.rows.length;
  }

  private get windowed(): boolean {
    return this.total > (this.options.windowAbove ?? DEFAULT_WINDOW_ABOVE);
  }

  private resort(): void {
    const initial = this.options.sort;
    const sortWaits =
      this.partial &&
      (this.sortState.column !== initial.column || this.sortState.direction !== initial.direction);
    this.notice =
      this.waiting ?? (sortWaits ? `Sorting when all ${this.total} rows have arrived…` : null);
    this.sorted = this.notice
      ? []
      : sortRows(this.rows, this.options.columns, this.sortState, this.options.tieBreak);
    const total = this.notice ? 0 : this.total;
    this.table.setAttribute('aria-rowcount', String(total + 1));
    this.table.setAttribute('aria-busy', String(this.partial || this.notice !== null));
    this.table.dataset.rows = String(this.sorted.length);
    this.skipLink.textContent = `Skip the table: ${this.options.caption} (${total} rows)`;
    this.renderBody(true);
  }

  private updateHeaders(): void {
    for (const [id, th] of this.headers) {
      const column = this.options.columns.find(c => c.id === id);
      if (column?.sortable === false) {
        continue;
      }
      th.setAttribute(
        'aria-sort',
        id === this.sortState.column ? this.sortState.direction : 'none'
      );
    }
  }

  /** The range of rows to have in the document for the current scroll position. */
  private range(): [number, number] {
    const total = this.total;
    if (!this.windowed) {
      return [0, total];
    }
    // Only cached sizes here: reading layout while rendering would force it early.
    const rowHeight = this.rowHeight || FALLBACK_ROW_HEIGHT;
    const view = this.viewHeight || FALLBACK_VIEW_HEIGHT;
    const first = Math.max(0, Math.floor(this.scrollTop / rowHeight) - OVERSCAN);
    const last = Math.min(total, Math.ceil((this.scrollTop + view) / rowHeight) + OVERSCAN);
    return [first, Math.max(last, Math.min(total, first + 2 * OVERSCAN))];
  }

  private onScroll(): void {
    this.scrollTop = this.scroller.scrollTop;
    if (!this.windowed || this.frame) {
      return;
    }
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.scrollTop = this.scroller.scrollTop;
      this.viewHeight = this.scroller.clientHeight;
      const [first, last] = this.range();
      const [shownFirst, shownLast] = this.rendered;
      if (first < shownFirst || last > shownLast) {
        this.renderBody(false);
      }
    });
  }

  /** Where focus is inside the body, so a re-render can put it back. */
  private focusedCell(): { row: string; column: string } | null {
    const active = this.body.ownerDocument.activeElement;
    if (!active || !this.body.contains(active)) {
      return null;
    }
    const td = active.closest('td');
    const tr = active.closest('tr');
    if (!td || !tr || !tr.dataset.rowKey) {
      return null;
    }
    return { row: tr.dataset.rowKey, column: td.dataset.column ?? '' };
  }

  private restoreFocus(at: { row: string; column: string } | null): void {
    if (!at) {
      return;
    }
    for (const tr of Array.from(this.body.rows)) {
      if (tr.dataset.rowKey === at.row) {
        const target = tr.querySelector<HTMLElement>(
          `td[data-column="${at.column}"] button, td[data-column="${at.column}"] a`
        );
        target?.focus();
        return;
      }
    }
  }

  private renderBody(resetMeasure: boolean): void {
    const focus = this.focusedCell();
    this.fillBody();
    if (resetMeasure && this.windowed && !measuredRowHeight && !this.measuring) {
      // Measure once it is laid out anyway (next frame), then fix the spacers.
      this.measuring = requestAnimationFrame(() => this.measure());
    }
    this.restoreFocus(focus);
  }

  private measure(): void {
    this.measuring = 0;
    const sample = Array.from(this.body.rows).find(tr => tr.dataset.rowKey !== undefined);
    const height = sample?.getBoundingClientRect().height ?? 0;
    this.viewHeight = this.scroller.clientHeight;
    if (height > 0) {
      const changed = Math.abs(height - (this.rowHeight || FALLBACK_ROW_HEIGHT)) > 0.5;
      measuredRowHeight = height;
      this.rowHeight = height;
      if (changed) {
        this.renderBody(false);
      }
    }
  }

  private spacer(height: number): HTMLTableRowElement {
    const tr = document.createElement('tr');
    tr.className = 'lumen-spacer';
    tr.setAttribute('aria-hidden', 'true');
    const td = document.createElement('td');
    td.colSpan = this.options.columns.length;
    td.style.height = `${height}px`;
    tr.appendChild(td);
    return tr;
  }

  private fillBody(): void {
    const { columns, rowAttrs, rowKey } = this.options;
    if (this.sorted.length === 0) {
      this.rendered = [0, 0];
      replaceChildren(
        this.body,
        h(
          'tr',
          { class: this.notice ? 'lumen-empty-row lumen-waiting-row' : 'lumen-empty-row' },
          h('td', { text: this.notice ?? this.emptyText, attrs: { colspan: columns.length } })
        )
      );
      return;
    }
    const [first, last] = this.range();
    this.rendered = [first, last];
    const rowHeight = this.rowHeight || FALLBACK_ROW_HEIGHT;
    const fragment = document.createDocumentFragment();
    if (first > 0) {
      fragment.appendChild(this.spacer(first * rowHeight));
    }
    // Rows past the ones that have arrived (while the rest is coming) are room only.
    const end = Math.max(first, Math.min(last, this.sorted.length));
    for (let index = first; index < end; index++) {
      const row = this.sorted[index];
      const tr = document.createElement('tr');
      tr.setAttribute('aria-rowindex', String(index + 2));
      const extra = rowAttrs?.(row);
      if (extra?.class) {
        tr.className = extra.class;
      }
      if (extra?.data) {
        Object.assign(tr.dataset, extra.data);
      }
      tr.dataset.rowKey = rowKey(row);
      for (const column of columns) {
        const td = document.createElement('td');
        td.dataset.column = column.id;
        if (column.numeric) {
          td.className = 'lumen-num';
        }
        const content = column.cell(row);
        if (typeof content === 'string') {
          td.textContent = content;
        } else {
          td.appendChild(content);
        }
        tr.appendChild(td);
      }
      fragment.appendChild(tr);
    }
    if (end < this.total) {
      fragment.appendChild(this.spacer((this.total - end) * rowHeight));
    }
    this.body.textContent = '';
    this.body.appendChild(fragment);
  }
}
