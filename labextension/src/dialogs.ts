import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { IVersionInfo } from './types';

/** What the promote dialog returns. */
export interface IPromoteChoice {
  alias: string;
  force: boolean;
}

class PromoteBody extends Widget implements Dialog.IBodyWidget<IPromoteChoice> {
  constructor(name: string, version: IVersionInfo, alias: string) {
    super({ node: document.createElement('div') });
    this.addClass('jp-nbdeploy-dialog');
    const label = document.createElement('label');
    label.textContent = `Alias to move onto ${name}/${version.version}`;
    this._alias = document.createElement('input');
    this._alias.className = 'jp-mod-styled';
    this._alias.value = alias;
    this._alias.setAttribute('data-nbdeploy-field', 'alias');
    label.appendChild(this._alias);
    this.node.appendChild(label);
    this._force = document.createElement('input');
    this._force.type = 'checkbox';
    if (version.test?.passed !== true) {
      const warn = document.createElement('label');
      warn.className = 'jp-nbdeploy-force';
      warn.appendChild(this._force);
      const state =
        version.test === null ? 'was never tested' : 'failed its last test';
      warn.appendChild(
        document.createTextNode(
          ` This version ${state}: promote it anyway (force)`
        )
      );
      this.node.appendChild(warn);
    }
    const note = document.createElement('p');
    note.textContent =
      'A running server that follows this alias switches to the new version without a restart.';
    this.node.appendChild(note);
  }

  getValue(): IPromoteChoice {
    return { alias: this._alias.value.trim(), force: this._force.checked };
  }

  protected onAfterAttach(): void {
    this._alias.focus();
    this._alias.select();
  }

  private _alias: HTMLInputElement;
  private _force: HTMLInputElement;
}

/** Ask which alias to move onto a version; null when cancelled. */
export async function askPromote(
  name: string,
  version: IVersionInfo,
  alias: string
): Promise<IPromoteChoice | null> {
  const result = await showDialog<IPromoteChoice>({
    title: `Promote ${name} v${version.version}`,
    body: new PromoteBody(name, version, alias),
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Promote' })],
    focusNodeSelector: 'input'
  });
  return result.button.accept && result.value?.alias ? result.value : null;
}

/** A yes/no confirmation; `danger` styles the accept button as destructive. */
export async function confirm(
  title: string,
  body: string,
  accept: string,
  danger = false
): Promise<boolean> {
  const button = danger
    ? Dialog.warnButton({ label: accept })
    : Dialog.okButton({ label: accept });
  const result = await showDialog({
    title,
    body,
    buttons: [Dialog.cancelButton(), button]
  });
  return result.button.accept;
}
