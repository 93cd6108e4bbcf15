/**
 * The "+ New API Key" dialog: the new key, read-only, with a Copy button; a name
 * field, an optional coin budget and an expiry; Save Key or Discard.
 *
 * The raw key lives only in this dialog's input while it is open. It is not
 * put in any state, attribute or log, and the dialog removes itself (and the
 * key with it) when it closes.
 */

import type { ViewContext } from './context';
import { openDialog, type DialogHandle } from './dialog';
import { h, uid } from './dom';
import { KEY_LIFETIMES, readLimits } from './keyLimits';
import type { CreatedKey } from './types';

async function copyText(text: string, field: HTMLInputElement): Promise<boolean> {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    // fall through to the selection-based copy
  }
  field.focus();
  field.select();
  try {
    return document.execCommand('copy');
  } catch {
    return false;
  }
}

export function openNewKeyDialog(
  ctx: ViewContext,
  created: CreatedKey,
  opener: HTMLElement | null = null
): DialogHandle {
  const keyId = uid('new-key');
  const nameId = uid('key-name');
  const keyField = h('input', {
    class: 'lumen-input lumen-key-field',
    attrs: {
      id: keyId,
      type: 'text',
      readonly: true,
      spellcheck: 'false',
      autocomplete: 'off',
      'aria-describedby': `${keyId}-help`
    }
  });
  keyField.value = created.key;
  keyField.addEventListener('focus', () => keyField.select());
  const copied = h('span', {
    class: 'lumen-copy-status',
    attrs: { role: 'status', 'aria-live': 'polite' }
  });
  const copyButton = h('button', {
    class: 'lumen-button lumen-copy-button',
    text: 'Copy',
    attrs: { type: 'button' },
    on: {
      click: async () => {
        const ok = await copyText(keyField.value, keyField);
        copied.textContent = ok ? 'Copied' : 'Select the key and copy it by hand';
      }
    }
  });
  const nameField = h('input', {
    class: 'lumen-input lumen-key-name',
    attrs: {
      id: nameId,
      type: 'text',
      maxlength: 100,
      placeholder: 'e.g. my-research-script',
      autocomplete: 'off'
    }
  });
  const budgetId = uid('key-budget');
  const budgetField = h('input', {
    class: 'lumen-input lumen-key-budget',
    attrs: {
      id: budgetId,
      type: 'text',
      inputmode: 'decimal',
      placeholder: 'no budget of its own',
      autocomplete: 'off',
      'aria-describedby': `${budgetId}-help`
    }
  });
  const expiresId = uid('key-expires');
  const expiresField = h(
    'select',
    { class: 'lumen-input lumen-key-expires', attrs: { id: expiresId } },
    ...KEY_LIFETIMES.map(([value, label]) => h('option', { text: label, attrs: { value } }))
  );
  let handle: DialogHandle | null = null;
  const save = async () => {
    const name = nameField.value.trim();
    if (!name) {
      nameField.focus();
      throw new Error('Give the key a name before saving it.');
    }
    const limits = readLimits(budgetField.value, expiresField.value);
    if (typeof limits === 'string') {
      budgetField.focus();
      throw new Error(limits);
    }
    await ctx.actions.saveKey(created.id, name, limits);
  };
  const discard = async () => {
    await ctx.actions.discardKey(created.id);
  };
  nameField.addEventListener('keydown', event => {
    if (event.key === 'Enter') {
      event.preventDefault();
      (handle?.el.querySelector('button[name="save"]') as HTMLButtonElement | null)?.click();
    }
  });
  handle = openDialog(ctx.dialogHost, {
    title: 'New API Key',
    className: 'lumen-new-key-dialog',
    initialFocus: nameField,
    opener,
    // Escape must not lose a key the person may not have copied yet:
    // they choose Save Key or Discard.
    onEscape: false,
    body: [
      h(
        'p',
        { class: 'lumen-warning-text', attrs: { id: `${keyId}-help` } },
        'Copy this key now. It is shown only once and cannot be retrieved later.'
      ),
      h('label', { class: 'lumen-field-label', text: 'Your new key', attrs: { for: keyId } }),
      h('div', { class: 'lumen-key-row' }, keyField, copyButton),
      copied,
      h('label', { class: 'lumen-field-label', text: 'Name', attrs: { for: nameId } }),
      nameField,
      h('label', {
        class: 'lumen-field-label',
        text: 'Budget (coins, optional)',
        attrs: { for: budgetId }
      }),
      budgetField,
      h(
        'p',
        { class: 'lumen-field-help', attrs: { id: `${budgetId}-help` } },
        'The most this key may spend; calls beyond it are refused. Your pool still applies.'
      ),
      h('label', { class: 'lumen-field-label', text: 'Expires', attrs: { for: expiresId } }),
      expiresField
    ],
    buttons: [
      { label: 'Discard', action: discard, name: 'discard' },
      { label: 'Save Key', action: save, kind: 'primary', name: 'save' }
    ]
  });
  const clear = () => {
    keyField.value = '';
  };
  handle.el.addEventListener('close', clear);
  const close = handle.close.bind(handle);
  handle.close = () => {
    clear();
    close();
  };
  return handle;
}
