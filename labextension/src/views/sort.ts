/**
 * Table sorting shared by the keys and model tables.
 *
 * A header click sorts by that column; text starts ascending, numbers and dates
 * start descending (the biggest or latest first); a second click flips. Empty
 * values (a key never used) stay at the bottom either way.
 */

export type SortDirection = 'ascending' | 'descending';
export type ColumnKind = 'text' | 'number' | 'date';

export interface SortState {
  column: string;
  direction: SortDirection;
}

export interface SortColumn<T> {
  id: string;
  kind: ColumnKind;
  value: (row: T) => string | number | null | undefined;
}

const COLLATOR = new Intl.Collator('en', { sensitivity: 'base', numeric: true });

export function firstDirection(kind: ColumnKind): SortDirection {
  return kind === 'text' ? 'ascending' : 'descending';
}

/** The sort after clicking `column`'s header. */
export function nextSort(current: SortState, column: SortColumn<unknown>): SortState {
  if (current.column === column.id) {
    return {
      column: column.id,
      direction: current.direction === 'ascending' ? 'descending' : 'ascending'
    };
  }
  return { column: column.id, direction: firstDirection(column.kind) };
}

function sortKey(
  kind: ColumnKind,
  raw: string | number | null | undefined
): string | number | null {
  if (raw === null || raw === undefined || raw === '') {
    return null;
  }
  if (kind === 'date') {
    const ms = typeof raw === 'number' ? raw : Date.parse(raw);
    return Number.isNaN(ms) ? null : ms;
  }
  if (kind === 'number') {
    return typeof raw === 'number' ? raw : Number(raw);
  }
  return String(raw);
}

function compareKeys(a: string | number, b: string | number): number {
  if (typeof a === 'number' && typeof b === 'number') {
    return a - b;
  }
  return COLLATOR.compare(String(a), String(b));
}

/**
 * A sorted copy of `rows`. `tieBreak` orders rows whose keys are equal (by
 * name, usually), always ascending so equal rows do not jump around.
 */
export function sortRows<T>(
  rows: readonly T[],
  columns: readonly SortColumn<T>[],
  state: SortState,
  tieBreak: (row: T) => string
): T[] {
  const column = columns.find(c => c.id === state.column) ?? columns[0];
  const sign = state.direction === 'ascending' ? 1 : -1;
  const decorated = rows.map(row => ({
    row,
    key: sortKey(column.kind, column.value(row)),
    tie: tieBreak(row)
  }));
  decorated.sort((a, b) => {
    if (a.key === null || b.key === null) {
      if (a.key === b.key) {
        return COLLATOR.compare(a.tie, b.tie);
      }
      return a.key === null ? 1 : -1;
    }
    const order = compareKeys(a.key, b.key) * sign;
    return order !== 0 ? order : COLLATOR.compare(a.tie, b.tie);
  });
  return decorated.map(d => d.row);
}

/** Case-insensitive substring match for the model search box. */
export function matchesSearch(name: string, query: string): boolean {
  const needle = query.trim().toLowerCase();
  return needle === '' || name.toLowerCase().includes(needle);
}
