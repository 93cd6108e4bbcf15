/**
 * The Access and Status badges of the Model Access table, with the seed's words
 * and colours: Need Consent (warning), Consented and Allowed (green), Blocked
 * (red); ok (green), degraded (yellow), down (red), disabled (gray).
 */

import { h } from './dom';
import type { Access, ModelStatus } from './types';

export type Tone = 'success' | 'warning' | 'danger' | 'neutral';

export const ACCESS_LABEL: Record<Access, string> = {
  needs_ack: 'Need Consent',
  consented: 'Consented',
  allowed: 'Allowed',
  blocked: 'Blocked'
};

const ACCESS_TONE: Record<Access, Tone> = {
  needs_ack: 'warning',
  consented: 'success',
  allowed: 'success',
  blocked: 'danger'
};

const ACCESS_HELP: Record<Access, string> = {
  needs_ack: 'Needs a one-time acknowledgment: click to read the notice and enable it',
  consented: 'You have acknowledged this model and can use it',
  allowed: 'Fully available to you',
  blocked: 'Not available to you'
};

const STATUS_TONE: Record<ModelStatus, Tone> = {
  ok: 'success',
  degraded: 'warning',
  down: 'danger',
  disabled: 'neutral'
};

const STATUS_HELP: Record<ModelStatus, string> = {
  ok: 'All backends healthy',
  degraded: 'Some backends are down but at least one is working',
  down: 'No healthy backends',
  disabled: 'The model is turned off'
};

export function badge(text: string, tone: Tone, title?: string): HTMLSpanElement {
  return h('span', { class: `lumen-badge lumen-badge-${tone}`, text, title });
}

/**
 * The Access badge. "Need Consent" is a button when `onConsent` is given, so a
 * keyboard user reaches it with Tab and opens the notice with Enter or Space.
 */
export function accessBadge(access: Access, onConsent?: () => void): HTMLElement {
  const label = ACCESS_LABEL[access] ?? access;
  const tone = ACCESS_TONE[access] ?? 'neutral';
  if (access === 'needs_ack' && onConsent) {
    return h('button', {
      class: `lumen-badge lumen-badge-${tone} lumen-badge-button`,
      text: label,
      title: ACCESS_HELP[access],
      attrs: { type: 'button', 'aria-haspopup': 'dialog' },
      on: { click: onConsent }
    });
  }
  return badge(label, tone, ACCESS_HELP[access]);
}

export function statusBadge(status: ModelStatus): HTMLSpanElement {
  return badge(status, STATUS_TONE[status] ?? 'neutral', STATUS_HELP[status]);
}
