/** The Profile panel of JupyterLab's main area: the shared views fed over REST. */

import { Widget } from '@lumino/widgets';
import { ProfileView } from '../views/profileView';
import type { RestProfileController } from './restController';

export const REFRESH_SECONDS = 60;

export class ProfilePanel extends Widget {
  private readonly view: ProfileView;
  private readonly unsubscribe: () => void;

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
    this.node.appendChild(this.view.el);
    this.unsubscribe = controller.subscribe(state => this.view.update(state));
  }

  protected onAfterAttach(): void {
    void this.controller.refresh().catch(() => undefined);
    this.controller.startPolling(this.refreshSeconds);
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
    this.unsubscribe();
    this.view.dispose();
    super.dispose();
  }
}
