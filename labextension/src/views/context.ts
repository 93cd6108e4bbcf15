/** What every section of the page is given by the view that holds it. */

import type { ProfileActions } from './types';

export interface ViewContext {
  actions: ProfileActions;
  /** Where dialogs are attached (inside the view, so the host's CSS variables apply). */
  dialogHost: HTMLElement;
  /** Browser time in ms, for relative times ("5 min ago"). */
  now(): number;
}
