/**
 * The Web Chat Usage row: conversations, requests, tokens, coins and last use
 * of chat traffic only.
 */

import { h } from './dom';
import { absoluteTime, formatCoins, formatCount, relativeTime } from './format';
import type { WebChat } from './types';

export function timeCell(iso: string | null | undefined, now: number): HTMLElement {
  if (!iso) {
    return h('span', { class: 'lumen-muted', text: 'Never' });
  }
  return h('time', {
    text: relativeTime(iso, now),
    title: absoluteTime(iso),
    attrs: { datetime: iso }
  });
}

export function renderWebChatRow(chat: WebChat, now: number = Date.now()): HTMLElement {
  const columns: [string, Node | string][] = [
    ['Conversations', formatCount(chat.conversations)],
    ['Requests', formatCount(chat.requests)],
    ['Tokens', formatCount(chat.tokens)],
    ['Coins', formatCoins(chat.coins_micro ?? 0)],
    ['Last Used', timeCell(chat.last_used_at, now)]
  ];
  return h(
    'section',
    { class: 'lumen-section lumen-webchat', attrs: { 'aria-label': 'Web Chat Usage' } },
    h('h3', { class: 'lumen-section-title', text: 'Web Chat Usage' }),
    h(
      'table',
      { class: 'lumen-table lumen-webchat-table' },
      h(
        'thead',
        {},
        h('tr', {}, ...columns.map(([label]) => h('th', { text: label, attrs: { scope: 'col' } })))
      ),
      h(
        'tbody',
        {},
        h(
          'tr',
          {},
          ...columns.map(([label, value]) =>
            h('td', { dataset: { column: label.toLowerCase().replace(/ /g, '-') } }, value)
          )
        )
      )
    )
  );
}
