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
  const opener = (host.ownerDocument.activeElement as HTMLElement | null) ?? null;
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
      if (opener && opener.isConnected) {
        opener.focus();
      }
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
