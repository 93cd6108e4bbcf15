/**
 * The JupyterLab extension: a "Lumen: Open Profile" command (palette) that opens
 * the profile views in the main area, fed from the REST API.
 *
 * Next (status bar issue): a status bar item with the balance and countdown that
 * opens this panel; it can share one RestProfileController with the panel.
 */

import type { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget } from '@jupyterlab/apputils';
import { LumenRestClient } from './lab/restClient';
import { RestProfileController } from './lab/restController';
import { ProfilePanel } from './lab/profilePanel';

export const OPEN_PROFILE = 'lumen:open-profile';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'lumen-jupyter:profile',
  description: 'The Lumen profile: coin balance, API keys, model access and spending.',
  autoStart: true,
  optional: [ICommandPalette],
  activate: (app: JupyterFrontEnd, palette: ICommandPalette | null) => {
    const controller = new RestProfileController(new LumenRestClient(app.serviceManager.serverSettings));
    let shell: MainAreaWidget<ProfilePanel> | null = null;
    app.commands.addCommand(OPEN_PROFILE, {
      label: 'Lumen: Open Profile',
      caption: 'Open your Lumen profile: balance, API keys, model access, spending',
      execute: () => {
        if (!shell || shell.isDisposed) {
          shell = new MainAreaWidget({ content: new ProfilePanel(controller) });
          shell.id = 'lumen-profile';
          shell.title.label = 'Lumen Profile';
          shell.title.closable = true;
        }
        if (!shell.isAttached) {
          app.shell.add(shell, 'main');
        }
        app.shell.activateById(shell.id);
        return shell;
      }
    });
    palette?.addItem({ command: OPEN_PROFILE, category: 'Lumen' });
  }
};

export default plugin;
