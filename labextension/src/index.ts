import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, showErrorMessage } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';

import { nbdeployIcon } from './icon';
import { DeployModel } from './model';
import { monitorCode } from './format';
import { insertAndRun } from './notebook';
import { DeployPanel, PANEL_ID } from './panel';

namespace CommandIDs {
  export const open = 'nbdeploy:open';
  export const refresh = 'nbdeploy:refresh';
  export const monitor = 'nbdeploy:monitor';
}

/** Wires the panel, its model and its commands into JupyterLab. */
const plugin: JupyterFrontEndPlugin<void> = {
  id: 'nbdeploy:plugin',
  description: 'Models, versions, aliases and deployments of nbdeploy at a glance.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ILayoutRestorer, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    notebooks: INotebookTracker,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null
  ) => {
    const model = new DeployModel();
    const panel = new DeployPanel(model, name =>
      void app.commands.execute(CommandIDs.monitor, { name })
    );
    app.shell.add(panel, 'left', { rank: 600 });
    restorer?.add(panel, PANEL_ID);

    app.commands.addCommand(CommandIDs.open, {
      label: 'nbdeploy: Show Models and Deployments',
      icon: nbdeployIcon,
      execute: () => app.shell.activateById(PANEL_ID)
    });
    app.commands.addCommand(CommandIDs.refresh, {
      label: 'nbdeploy: Refresh',
      execute: () => model.refresh()
    });
    app.commands.addCommand(CommandIDs.monitor, {
      label: args => `Monitor ${args.name ?? 'deployment'} in the notebook`,
      execute: async args => {
        const name = String(args.name ?? '');
        try {
          await insertAndRun(notebooks, sources => monitorCode(name, sources));
        } catch (error) {
          await showErrorMessage('nbdeploy: Monitor', (error as Error).message);
        }
      }
    });
    palette?.addItem({ command: CommandIDs.open, category: 'nbdeploy' });
    palette?.addItem({ command: CommandIDs.refresh, category: 'nbdeploy' });

    model.active = panel.isVisible;
    void model.start();
  }
};

export default plugin;
