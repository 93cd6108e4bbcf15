/**
 * A new key's limits as typed in the New API Key dialog: a coin budget and a
 * lifetime. Checked here for a quick message; the gateway checks them again.
 */

import type { KeyLimits } from './types';

/** The lifetimes offered for a new key; the gateway reads them as `expires_in`. */
export const KEY_LIFETIMES: ReadonlyArray<[string, string]> = [
  ['', 'Never'],
  ['1d', '1 day'],
  ['7d', '7 days'],
  ['30d', '30 days'],
  ['90d', '90 days']
];

/** The limits typed in the dialog, or an error message for the person. */
export function readLimits(budget: string, lifetime: string): KeyLimits | string {
  const limits: KeyLimits = {};
  const text = budget.trim();
  if (text) {
    if (!/^\d+(\.\d{1,6})?$/.test(text) || Number(text) <= 0) {
      return 'A budget is a number of coins above 0, e.g. 5 or 0.5 (or leave it empty).';
    }
    limits.budget = text;
  }
  if (lifetime) {
    limits.expires_in = lifetime;
  }
  return limits;
}
