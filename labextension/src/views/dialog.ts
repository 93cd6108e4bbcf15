/**
 * Modal dialogs on the native `<dialog>` element: the browser traps focus,
 * renders it above everything (out of any scrolling output area) and gives it
 * the dialog role; we add the title and description references, busy and
 * error states, and give focus back to the control that opened it.
 */

import { h, uid, type Child } from './dom';

export interface DialogButton {
  label: string;
  /** Return a promise to keep the dialog open (busy) until it settles. */
  action: () => void | Promise<unknown>;
  kind?: 'primary' | 'danger' | 'default';
  /** Close the dialog once the action has succeeded (default true). */
  closes?: boolean;
  name?: string;
}

export interface DialogOptions {
  title: string;
  body: Child[];
  buttons: DialogButton[];
  className?: string;
  /** What Escape does; default: close. `false` keeps the dialog open. */
  onEscape?: (() => void) | false;
  /** The element to focus first (default: the first button marked primary). */
  initialFocus?: HTMLElement;
  /**
   * The control that opened the dialog, focused again when it closes (default: the
   * focused element). Pass it when the control lost focus before the dialog opened
   * (e.g. a button disabled while a request ran).
   */
  opener?: HTMLElement | null;
}

export interface DialogHandle {
  el: HTMLDialogElement;
  close(): void;
  setError(message: string | null): void;
  readonly closed: boolean;
}

export function openDialog(host: HTMLElement, options: DialogOptions): DialogHandle {
  const titleId = uid('dialog-title');
  const bodyId = uid('dialog-body');
  const active = host.ownerDocument.activeElement as HTMLElement | null;
  const opener = options.opener ?? (active && active !== host.ownerDocument.body ? active : null);
  const returnTo = focusReturn(opener, host);
  const error = h('p', { class: 'lumen-dialog-error', attrs: { role: 'alert', hidden: true } });
  const buttonRow = h('div', { class: 'lumen-dialog-buttons' });
  const dialog = h(
    'dialog',
    {
      class: `lumen-dialog ${options.className ?? ''}`.trim(),
      attrs: { 'aria-labelledby': titleId, 'aria-describedby': bodyId }
    },
    h('h3', { class: 'lumen-dialog-title', text: options.title, attrs: { id: titleId } }),
    h('div', { class: 'lumen-dialog-body', attrs: { id: bodyId } }, ...options.body),
    error,
    buttonRow
  );
  let closed = false;
  let busy = false;

  const handle: DialogHandle = {
    el: dialog,
    get closed() {
      return closed;
    },
    close() {
      if (closed) {
        return;
      }
      closed = true;
      if (dialog.open) {
        dialog.close();
      }
      dialog.remove();
      returnTo();
    },
    setError(message: string | null) {
      error.textContent = message ?? '';
      error.hidden = !message;
    }
  };

  const buttons = options.buttons.map(spec => {
    const button = h('button', {
      class: `lumen-button lumen-button-${spec.kind ?? 'default'}`,
      text: spec.label,
      attrs: { type: 'button', name: spec.name },
      on: {
        click: () => {
          if (busy) {
            return;
          }
          handle.setError(null);
          let outcome: void | Promise<unknown>;
          try {
            outcome = spec.action();
          } catch (err) {
            handle.setError(messageOf(err));
            return;
          }
          if (outcome && typeof (outcome as Promise<unknown>).then === 'function') {
            setBusy(true);
            (outcome as Promise<unknown>).then(
              () => {
                setBusy(false);
                if (spec.closes !== false) {
                  handle.close();
                }
              },
              err => {
                setBusy(false);
                handle.setError(messageOf(err));
              }
            );
          } else if (spec.closes !== false) {
            handle.close();
          }
        }
      }
    });
    buttonRow.appendChild(button);
    return { spec, button };
  });

  function setBusy(value: boolean): void {
    busy = value;
    dialog.setAttribute('aria-busy', String(value));
    for (const { button } of buttons) {
      button.disabled = value;
    }
  }

  dialog.addEventListener('cancel', event => {
    event.preventDefault();
    if (busy || options.onEscape === false) {
      return;
    }
    if (options.onEscape) {
      options.onEscape();
    } else {
      handle.close();
    }
  });

  host.appendChild(dialog);
  if (typeof dialog.showModal === 'function') {
    dialog.showModal();
  } else {
    dialog.setAttribute('open', '');
  }
  const primary = buttons.find(b => b.spec.kind === 'primary')?.button;
  (options.initialFocus ?? primary ?? buttons[0]?.button)?.focus();
  return handle;
}

/** The element to focus in place of `opener` once the view has re-rendered it. */
function replacementOf(opener: HTMLElement, where: OpenerPlace): HTMLElement | null {
  if (opener.isConnected) {
    return opener;
  }
  const { table, row, column, name } = where;
  if (table?.isConnected && row !== undefined) {
    for (const tr of Array.from(table.tBodies[0]?.rows ?? [])) {
      if (tr.dataset.rowKey === row) {
        const cell = tr.querySelector<HTMLElement>(`td[data-column="${column ?? ''}"]`);
        return cell?.querySelector<HTMLElement>(FOCUSABLE) ?? null;
      }
    }
  }
  if (name && where.section?.isConnected) {
    return where.section.querySelector<HTMLElement>(`[data-focus-name="${name}"]`);
  }
  return null;
}

interface OpenerPlace {
  table: HTMLTableElement | null;
  row?: string;
  column?: string;
  name?: string;
  section: HTMLElement | null;
}

const FOCUSABLE = 'button:not([disabled]), a[href], input:not([disabled]), [tabindex]';
const WATCH_MS = 2000;

/**
 * How focus goes back to the control that opened a dialog. A save, discard, revoke or
 * consent re-renders the rows, so the opener itself may be gone: then the same control
 * of the same row (by row key and column) gets focus, or, when the row has no such
 * control any more (a revoked key), the section's heading; a re-render that comes
 * after the dialog closed is waited for briefly.
 */
function focusReturn(opener: HTMLElement | null, host: HTMLElement): () => void {
  if (!opener) {
    return () => undefined;
  }
  const place: OpenerPlace = {
    table: opener.closest('table'),
    row: opener.closest('tr')?.dataset.rowKey,
    column: opener.closest('td')?.dataset.column,
    name: opener.dataset.focusName,
    section: opener.closest<HTMLElement>('section') ?? host
  };
  return () => {
    const exact = replacementOf(opener, place);
    if (exact) {
      exact.focus();
      return;
    }
    const fallback = headingOf(place.section) ?? host;
    fallback.focus();
    const root = place.section?.isConnected ? place.section : host;
    const observer = new MutationObserver(() => {
      const doc = host.ownerDocument;
      if (doc.activeElement !== fallback && doc.activeElement !== doc.body) {
        observer.disconnect();
        return;
      }
      const found = replacementOf(opener, place);
      if (found) {
        observer.disconnect();
        found.focus();
      }
    });
    observer.observe(root, { childList: true, subtree: true });
    setTimeout(() => observer.disconnect(), WATCH_MS);
  };
}

function headingOf(section: HTMLElement | null): HTMLElement | null {
  const heading = section?.isConnected ? section.querySelector<HTMLElement>('h2, h3, h4') : null;
  if (heading && !heading.hasAttribute('tabindex')) {
    heading.setAttribute('tabindex', '-1');
  }
  return heading;
}

export function messageOf(err: unknown): string {
  if (err instanceof Error) {
    return err.message;
  }
  return typeof err === 'string' ? err : 'Something went wrong';
}

/** A yes/no question; resolves after `onConfirm` succeeded, or on cancel. */
export function confirmDialog(
  host: HTMLElement,
  options: {
    title: string;
    message: Child[];
    confirmLabel: string;
    danger?: boolean;
    onConfirm: () => Promise<unknown>;
  }
): DialogHandle {
  return openDialog(host, {
    title: options.title,
    body: options.message,
    className: 'lumen-confirm-dialog',
    buttons: [
      { label: 'Cancel', action: () => undefined, name: 'cancel' },
      {
        label: options.confirmLabel,
        kind: options.danger ? 'danger' : 'primary',
        action: options.onConfirm,
        name: 'confirm'
      }
    ]
  });
}
