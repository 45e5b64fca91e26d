import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';

/**
 * Insert a code cell below the active one in the current notebook and run it.
 *
 * @throws Error when no notebook is open
 */
export async function insertAndRun(
  tracker: INotebookTracker,
  code: (sources: string[]) => string
): Promise<void> {
  const panel = tracker.currentWidget;
  if (!panel) {
    throw new Error('Open a notebook first: the cell is inserted into the active notebook.');
  }
  const notebook = panel.content;
  const sources: string[] = [];
  const cells = notebook.model?.cells;
  if (cells) {
    for (let i = 0; i < cells.length; i++) {
      sources.push(cells.get(i).sharedModel.getSource());
    }
  }
  NotebookActions.insertBelow(notebook);
  NotebookActions.changeCellType(notebook, 'code');
  const cell = notebook.activeCell;
  if (!cell) {
    throw new Error('Could not insert a cell into the notebook.');
  }
  cell.model.sharedModel.setSource(code(sources));
  await NotebookActions.run(notebook, panel.sessionContext);
}
