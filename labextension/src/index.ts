import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  ICommandPalette,
  Notification,
  showErrorMessage
} from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { CommandToolbarButton } from '@jupyterlab/ui-components';

import { nbdeployIcon } from './icon';
import { JobsModel } from './jobsmodel';
import { DeployModel } from './model';
import { monitorCode } from './format';
import { insertAndRun } from './notebook';
import { DeployPanel, PANEL_ID } from './panel';
import { scheduleNotebook } from './schedule';

namespace CommandIDs {
  export const open = 'nbdeploy:open';
  export const refresh = 'nbdeploy:refresh';
  export const monitor = 'nbdeploy:monitor';
  export const schedule = 'nbdeploy:schedule-notebook';
  export const openRun = 'nbdeploy:open-run';
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
    const jobs = new JobsModel();
    const panel = new DeployPanel(
      model,
      name => void app.commands.execute(CommandIDs.monitor, { name }),
      jobs,
      runId => void app.commands.execute(CommandIDs.openRun, { runId })
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
    app.commands.addCommand(CommandIDs.schedule, {
      label: 'Schedule',
      caption: 'Run this notebook on a schedule with nbdeploy (papermill)',
      icon: nbdeployIcon,
      isEnabled: () => notebooks.currentWidget !== null,
      execute: async () => {
        const current = notebooks.currentWidget;
        if (!current) {
          return;
        }
        try {
          if (current.context.model.dirty) {
            await current.context.save(); // the schedule runs the saved notebook
          }
          const name = await scheduleNotebook(jobs, current.context.path);
          if (name) {
            Notification.success(`Scheduled job ${name}: see the nbdeploy panel.`, {
              autoClose: 5000
            });
            app.shell.activateById(PANEL_ID);
          }
        } catch (error) {
          await showErrorMessage('nbdeploy: Schedule', (error as Error).message);
        }
      }
    });
    app.commands.addCommand(CommandIDs.openRun, {
      label: 'Open the executed notebook of a job run',
      execute: async args => {
        try {
          const opened = await jobs.open(String(args.runId ?? ''));
          const widget = await app.commands.execute('docmanager:open', {
            path: opened.path
          });
          if (opened.failed_cell !== null && widget instanceof NotebookPanel) {
            await widget.context.ready;
            const notebook = widget.content;
            notebook.activeCellIndex = opened.failed_cell;
            const cell = notebook.widgets[opened.failed_cell];
            if (cell) {
              await notebook.scrollToCell(cell);
            }
          }
        } catch (error) {
          await showErrorMessage('nbdeploy: Open run', (error as Error).message);
        }
      }
    });
    notebooks.widgetAdded.connect((_, notebook) => {
      notebook.toolbar.insertAfter(
        'cellType',
        'nbdeploy-schedule',
        new CommandToolbarButton({
          commands: app.commands,
          id: CommandIDs.schedule,
          label: 'Schedule'
        })
      );
    });
    jobs.runFailed.connect((_, run) => {
      Notification.error(`nbdeploy job ${run.job} failed: ${run.error ?? 'see its notebook'}`, {
        autoClose: false,
        actions: run.run_id
          ? [
              {
                label: 'Open notebook',
                callback: () =>
                  void app.commands.execute(CommandIDs.openRun, { runId: run.run_id })
              }
            ]
          : []
      });
    });
    palette?.addItem({ command: CommandIDs.open, category: 'nbdeploy' });
    palette?.addItem({ command: CommandIDs.schedule, category: 'nbdeploy' });
    palette?.addItem({ command: CommandIDs.refresh, category: 'nbdeploy' });

    model.active = panel.isVisible;
    jobs.active = panel.isVisible;
    void model.start();
    void jobs.start();
  }
};

export default plugin;
