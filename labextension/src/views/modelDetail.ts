/**
 * A model's detail, opened from its name in the Model Access table:
 * description, prices, context window, capabilities, status, notice and your
 * usage. Rendered from the row already loaded; nothing is fetched.
 */

import { accessBadge, statusBadge } from './badges';
import { openConsentDialog } from './consentDialog';
import type { ViewContext } from './context';
import { openDialog, type DialogButton, type DialogHandle } from './dialog';
import { h, type Child } from './dom';
import { absoluteTime, coinsText, formatCoins, formatCount, microOf } from './format';
import type { Coins, ModelInfo } from './types';

function yesNo(value: boolean | null | undefined): string {
  if (value === null || value === undefined) {
    return 'Unknown';
  }
  return value ? 'Yes' : 'No';
}

function price(value: Coins): string {
  const micro = microOf(value);
  if (micro === 0) {
    return 'Free';
  }
  return `${coinsText(value)} ${micro === 1_000_000 ? 'coin' : 'coins'} / 1M tokens`;
}

function row(label: string, value: Child): Child[] {
  return [
    h('tr', {}, h('th', { text: label, attrs: { scope: 'row' } }), h('td', {}, value ?? '—'))
  ];
}

export function openModelDetail(ctx: ViewContext, model: ModelInfo): DialogHandle {
  const instances = model.instances
    ? ` (${model.instances.healthy} of ${model.instances.configured} backends healthy)`
    : '';
  const modalities = (list: string[] | null | undefined) =>
    list && list.length ? list.join(', ') : 'Unknown';
  const usage = model.usage;
  const details = h(
    'table',
    { class: 'lumen-details' },
    h('caption', { class: 'lumen-sr-only', text: `Details of ${model.name}` }),
    ...row('Access', accessBadge(model.access)),
    ...row('Status', h('span', {}, statusBadge(model.status), instances)),
    ...row('Input price', price(model.input_cost_per_million)),
    ...row('Output price', price(model.output_cost_per_million)),
    ...row(
      'Context window',
      model.max_model_len ? `${formatCount(model.max_model_len)} tokens` : 'Unknown'
    ),
    ...row(
      'Max output',
      model.max_output_tokens ? `${formatCount(model.max_output_tokens)} tokens` : 'Unknown'
    ),
    ...row('Function calling', yesNo(model.supports_function_calling)),
    ...row('Reasoning', yesNo(model.supports_reasoning)),
    ...row('Input', modalities(model.input_modalities)),
    ...row('Output', modalities(model.output_modalities)),
    ...(model.knowledge_cutoff ? row('Knowledge cutoff', model.knowledge_cutoff) : []),
    ...row(
      'Your usage',
      `${formatCount(usage.requests)} requests, ${formatCount(usage.tokens)} tokens, ${formatCoins(usage.coins_micro ?? 0)} coins` +
        (usage.last_used_at ? `, last ${absoluteTime(usage.last_used_at)}` : '')
    )
  );
  const body: Child[] = [
    h('p', { class: 'lumen-model-description', text: model.description || 'No description.' }),
    details
  ];
  if (model.notice) {
    body.push(
      h('h4', { text: 'Notice' }),
      h('blockquote', { class: 'lumen-notice', text: model.notice })
    );
  }
  const buttons: DialogButton[] = [
    {
      label: 'Close',
      action: () => undefined,
      name: 'close',
      kind: model.access === 'needs_ack' ? 'default' : 'primary'
    }
  ];
  if (model.access === 'needs_ack') {
    buttons.push({
      label: 'Review notice and consent',
      name: 'consent',
      kind: 'primary',
      action: () => {
        handle.close();
        openConsentDialog(ctx, model);
      }
    });
  }
  const handle = openDialog(ctx.dialogHost, {
    title: model.name,
    className: 'lumen-model-dialog',
    body,
    buttons
  });
  return handle;
}
