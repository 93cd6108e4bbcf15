/**
 * The Profile panel of JupyterLab's main area: the shared views fed over REST.
 *
 * Opening it paints the view's skeleton at once: the requests go out as the panel is
 * attached, and the view takes the controller's state once that frame has been
 * painted, so the work of filling it in never delays the frame that shows the panel.
 */

import { Widget } from '@lumino/widgets';
import { afterPaint } from '../views/dom';
import { ProfileView } from '../views/profileView';
import { emptyState } from '../views/types';
import type { RestProfileController } from './restController';

export const REFRESH_SECONDS = 60;

export class ProfilePanel extends Widget {
  private readonly view: ProfileView;
  private unsubscribe: (() => void) | null = null;
  private cancelFirstPaint: (() => void) | null = null;

  /** Seconds between refreshes while the panel shows (0: never). */
  refreshSeconds = REFRESH_SECONDS;

  constructor(private readonly controller: RestProfileController) {
    super();
    this.addClass('lumen-panel');
    this.id = 'lumen-profile-panel';
    this.title.label = 'Lumen Profile';
    this.title.caption = 'Your coin balance, API keys, model access and spending';
    this.title.closable = true;
    this.view = new ProfileView(controller);
    this.view.update({ ...emptyState(), loading: true });
    this.node.appendChild(this.view.el);
  }

  protected onAfterAttach(): void {
    void this.controller.refresh().catch(() => undefined);
    this.controller.startPolling(this.refreshSeconds);
    if (!this.unsubscribe && !this.cancelFirstPaint) {
      this.cancelFirstPaint = afterPaint(() => {
        this.cancelFirstPaint = null;
        performance.mark('lumen:panel-painted');
        if (!this.isDisposed) {
          this.unsubscribe = this.controller.subscribe(state => this.view.update(state));
        }
      });
    }
  }

  /** Change the refresh interval; restarts the timer when the panel shows. */
  setRefreshSeconds(seconds: number): void {
    this.refreshSeconds = seconds;
    if (this.isAttached) {
      this.controller.startPolling(seconds);
    }
  }

  protected onBeforeDetach(): void {
    this.controller.stopPolling();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.controller.stopPolling();
    this.cancelFirstPaint?.();
    this.unsubscribe?.();
    this.controller.forgetLists();
    this.view.dispose();
    super.dispose();
  }
}
