/**
 * The JupyterLab extension of lumen-jupyter:
 * - "Lumen: Open Profile", "Lumen: New API Key", "Lumen: Refresh" in the
 *   palette (category Lumen) and in a "Lumen" main menu (from the settings schema);
 * - a live coin meter in the status bar (optional: Notebook 7 has no status bar),
 *   fed by the server-sent events of `lumen/api/events`;
 * - a notification when a model call is refused (consent needed, coins exhausted);
 * - when the server's lumen could not load its configuration: "Lumen: configuration
 *   error" in the status bar, the reason on hover, and "Lumen: Show Configuration Error";
 * - the profile panel comes back after a reload (layout restorer, optional).
 * The panel and the meter share one RestProfileController.
 */

import type { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ILayoutRestorer } from '@jupyterlab/application';
import {
  Dialog,
  ICommandPalette,
  MainAreaWidget,
  Notification,
  WidgetTracker,
  showDialog
} from '@jupyterlab/apputils';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { Widget } from '@lumino/widgets';
import { absoluteTime } from './views/format';
import { LumenEventStream, type RefusedEvent } from './lab/events';
import { LumenConfigError, LumenRestClient } from './lab/restClient';
import { RestProfileController } from './lab/restController';
import { ProfilePanel, REFRESH_SECONDS } from './lab/profilePanel';
import { CONFIG_ERROR_TEXT, CoinStatusItem, DEFAULT_LOW_FRACTION } from './lab/statusItem';

export const PLUGIN_ID = 'lumen-jupyter:plugin';
export const OPEN_PROFILE = 'lumen:open-profile';
export const NEW_API_KEY = 'lumen:new-api-key';
export const REFRESH = 'lumen:refresh';
export const REVIEW_CONSENT = 'lumen:review-consent';
export const SHOW_CONFIG_ERROR = 'lumen:show-config-error';
const CATEGORY = 'Lumen';

/** Resolve with `find()` once it returns something, or null after `timeout` ms. */
function waitFor<T>(find: () => T | null | undefined, timeout = 15_000): Promise<T | null> {
  const start = Date.now();
  return new Promise(resolve => {
    const poll = () => {
      const found = find();
      if (found) {
        resolve(found);
      } else if (Date.now() - start > timeout) {
        resolve(null);
      } else {
        window.setTimeout(poll, 100);
      }
    };
    poll();
  });
}

function buttonWithText(root: HTMLElement, text: string): HTMLButtonElement | null {
  for (const button of Array.from(root.querySelectorAll('button'))) {
    if ((button.textContent ?? '').trim() === text && !button.disabled) {
      return button;
    }
  }
  return null;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'The Lumen profile: a live coin meter, the profile panel, key and refresh commands.',
  autoStart: true,
  optional: [ICommandPalette, IStatusBar, ISettingRegistry, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    statusBar: IStatusBar | null,
    settingRegistry: ISettingRegistry | null,
    restorer: ILayoutRestorer | null
  ) => {
    const serverSettings = app.serviceManager.serverSettings;
    const restClient = new LumenRestClient(serverSettings);
    const controller = new RestProfileController(restClient);
    let configError: string | null = null;
    const events = new LumenEventStream(serverSettings);
    const tracker = new WidgetTracker<MainAreaWidget<ProfilePanel>>({ namespace: 'lumen-profile' });
    let refreshSeconds = REFRESH_SECONDS;
    let shell: MainAreaWidget<ProfilePanel> | null = null;

    const openProfile = (): MainAreaWidget<ProfilePanel> => {
      if (!shell || shell.isDisposed) {
        const content = new ProfilePanel(controller);
        content.refreshSeconds = refreshSeconds;
        shell = new MainAreaWidget({ content });
        shell.id = 'lumen-profile';
        shell.title.label = 'Lumen Profile';
        shell.title.caption = content.title.caption;
        shell.title.closable = true;
        void tracker.add(shell);
      }
      if (!shell.isAttached) {
        app.shell.add(shell, 'main');
      }
      if (!shell.isAttached) {
        // Notebook 7: a notebook page keeps its one main widget; use the right panel.
        shell.title.caption = shell.title.caption || 'Lumen Profile';
        app.shell.add(shell, 'right', { rank: 900 });
      }
      app.shell.activateById(shell.id);
      return shell;
    };

    app.commands.addCommand(OPEN_PROFILE, {
      label: 'Lumen: Open Profile',
      caption: 'Open your Lumen profile: balance, API keys, model access, spending',
      execute: () => openProfile()
    });

    app.commands.addCommand(NEW_API_KEY, {
      label: 'Lumen: New API Key',
      caption: 'Create a personal API key (shown once) in the Lumen profile',
      execute: async () => {
        const widget = openProfile();
        const button = await waitFor(() => buttonWithText(widget.content.node, '+ New API Key'));
        button?.click();
        return !!button;
      }
    });

    app.commands.addCommand(REFRESH, {
      label: 'Lumen: Refresh',
      caption: 'Reload the Lumen profile and the coin balance from the server',
      execute: async () => {
        await controller.refresh().catch(() => undefined);
        const pool = controller.state.profile?.pool;
        if (pool) {
          item?.setPool(pool);
        }
      }
    });

    app.commands.addCommand(REVIEW_CONSENT, {
      label: args =>
        args.model ? `Lumen: Review Consent for ${args.model}` : 'Lumen: Review Model Consent',
      caption: 'Open the consent notice of a model in the Lumen profile',
      execute: async args => {
        const widget = openProfile();
        const model = typeof args.model === 'string' ? args.model : '';
        if (!model) {
          return false;
        }
        await controller.refresh().catch(() => undefined);
        const badge = await waitFor(() => {
          for (const row of Array.from(
            widget.content.node.querySelectorAll('.lumen-models-table tr')
          )) {
            const name = row.querySelector("td[data-column='model']");
            if (name && (name.textContent ?? '').trim() === model) {
              row.scrollIntoView({ block: 'center' });
              return buttonWithText(row as HTMLElement, 'Need Consent');
            }
          }
          return null;
        });
        badge?.click();
        return !!badge;
      }
    });

    app.commands.addCommand(SHOW_CONFIG_ERROR, {
      label: 'Lumen: Show Configuration Error',
      caption: 'Why lumen is not running on this server',
      isEnabled: () => configError !== null,
      execute: async () => {
        if (configError === null) {
          return false;
        }
        const body = document.createElement('pre');
        body.className = 'lumen-config-error';
        body.textContent = configError;
        await showDialog({
          title: CONFIG_ERROR_TEXT,
          body: new Widget({ node: body }),
          buttons: [Dialog.okButton({ label: 'Close' })]
        });
        return true;
      }
    });

    if (palette) {
      for (const command of [OPEN_PROFILE, NEW_API_KEY, REFRESH, SHOW_CONFIG_ERROR]) {
        palette.addItem({ command, category: CATEGORY });
      }
    }

    if (restorer) {
      void restorer.restore(tracker, { command: OPEN_PROFILE, name: () => 'lumen-profile' });
    }

    // The coin meter (Lab only: Notebook 7 has no status bar).
    let item: CoinStatusItem | null = null;
    if (statusBar) {
      item = new CoinStatusItem(
        () => void app.commands.execute(configError === null ? OPEN_PROFILE : SHOW_CONFIG_ERROR)
      );
      item.id = 'lumen-coin-status';
      statusBar.registerStatusItem('lumen-jupyter:coins', { item, align: 'left', rank: 100 });
    }
    const meter = item;
    controller.subscribe(state => {
      if (meter && state.profile?.pool) {
        meter.setPool(state.profile.pool);
      }
    });

    events.subscribe({
      pool: pool => {
        meter?.setPool(pool);
        controller.applyPool(pool);
      },
      connection: connected => meter?.setConnected(connected),
      refused: event => notifyRefused(event)
    });

    const notifyRefused = (event: RefusedEvent): void => {
      const model = event.model ?? 'the model';
      if (event.code === 'consent_required') {
        Notification.warning(
          event.message || `${model} needs your consent before you can use it.`,
          {
            autoClose: false,
            actions: [
              {
                label: 'Review consent',
                caption: `Open the notice of ${model} in your Lumen profile`,
                displayType: 'accent',
                callback: () =>
                  void app.commands.execute(REVIEW_CONSENT, { model: event.model ?? '' })
              }
            ]
          }
        );
      } else if (event.code === 'coins_exhausted') {
        const refill = event.next_refill_at
          ? ` Next refill: ${absoluteTime(event.next_refill_at)}.`
          : '';
        Notification.warning((event.message || 'Your Lumen coins are used up.') + refill, {
          autoClose: 10_000,
          actions: [
            {
              label: 'Open profile',
              caption: 'See your balance and refill time',
              callback: () => void app.commands.execute(OPEN_PROFILE)
            }
          ]
        });
      } else {
        Notification.warning(event.message || `A call to ${model} was refused (${event.code}).`, {
          autoClose: 10_000,
          actions: [
            { label: 'Open profile', callback: () => void app.commands.execute(OPEN_PROFILE) }
          ]
        });
      }
    };

    const applySettings = (settings: ISettingRegistry.ISettings): void => {
      const composite = settings.composite as {
        refreshInterval?: number;
        lowBalanceFraction?: number;
        showStatusItem?: boolean;
      };
      refreshSeconds = composite.refreshInterval ?? REFRESH_SECONDS;
      if (shell && !shell.isDisposed) {
        shell.content.setRefreshSeconds(refreshSeconds);
      }
      meter?.setLowFraction(composite.lowBalanceFraction ?? DEFAULT_LOW_FRACTION);
      meter?.toggleClass('lumen-status-off', composite.showStatusItem === false);
    };
    if (settingRegistry) {
      // After the app is restored: loading earlier races the shortcuts plugin of Notebook 7.
      void app.restored
        .then(() => settingRegistry.load(PLUGIN_ID))
        .then(settings => {
          applySettings(settings);
          settings.changed.connect(applySettings);
        })
        .catch(err => console.warn('lumen-jupyter: settings not loaded', err));
    }

    const showConfigError = (message: string): void => {
      configError = message;
      meter?.setConfigError(message);
      app.commands.notifyCommandChanged(SHOW_CONFIG_ERROR);
      Notification.error(message, {
        autoClose: false,
        actions: [
          {
            label: 'Show',
            caption: 'Show the whole message',
            callback: () => void app.commands.execute(SHOW_CONFIG_ERROR)
          }
        ]
      });
    };

    // Live updates: only with something to show them (the meter or notifications); a
    // lumen whose configuration failed to load has none to give, and says why.
    void app.restored
      .then(() => restClient.profile())
      .then(
        profile => {
          if (profile?.pool) {
            meter?.setPool(profile.pool);
          }
          events.start();
        },
        err => {
          if (err instanceof LumenConfigError) {
            showConfigError(err.message);
          } else {
            events.start();
          }
        }
      );
  }
};

export default plugin;
