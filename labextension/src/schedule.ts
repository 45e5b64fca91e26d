import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { JobsModel } from './jobsmodel';
import { shownDefault, typedValue } from './fields';
import { IParameterField, IParametersReply, IScheduleRequest } from './types';

/** What the dialog remembers between attempts (a refused attempt shows it again). */
interface IDraft {
  name: string;
  kind: 'every' | 'cron';
  when: string;
  /** only the fields the user changed: unchanged ones keep the notebook's default */
  values: { [name: string]: unknown };
}

class ScheduleBody extends Widget implements Dialog.IBodyWidget<IDraft> {
  constructor(
    info: IParametersReply,
    private readonly _model: JobsModel,
    draft: IDraft,
    error: string | null
  ) {
    super({ node: document.createElement('div') });
    this.addClass('jp-nbdeploy-dialog');
    this.addClass('jp-nbdeploy-schedule');
    this._values = { ...draft.values };
    if (error) {
      const alert = document.createElement('div');
      alert.className = 'jp-nbdeploy-error';
      alert.setAttribute('role', 'alert');
      alert.setAttribute('data-nbdeploy-field', 'error');
      alert.textContent = error;
      this.node.appendChild(alert);
    }
    this._name = this._input('Job name', draft.name, 'name');
    const notebook = document.createElement('p');
    notebook.className = 'jp-nbdeploy-muted';
    notebook.textContent = `Runs ${info.notebook} with papermill in its folder.`;
    this.node.appendChild(notebook);

    const when = document.createElement('fieldset');
    const legend = document.createElement('legend');
    legend.textContent = 'When';
    when.appendChild(legend);
    this._kind = document.createElement('select');
    this._kind.className = 'jp-mod-styled';
    this._kind.setAttribute('data-nbdeploy-field', 'kind');
    for (const [value, label] of [
      ['every', 'Every (e.g. 30m, 6h, 1d)'],
      ['cron', 'Cron (minute hour day month weekday)']
    ]) {
      const option = document.createElement('option');
      option.value = value;
      option.textContent = label;
      this._kind.appendChild(option);
    }
    this._kind.value = draft.kind;
    this._when = document.createElement('input');
    this._when.className = 'jp-mod-styled';
    this._when.value = draft.when;
    this._when.setAttribute('data-nbdeploy-field', 'when');
    this._next = document.createElement('ul');
    this._next.className = 'jp-nbdeploy-next-runs';
    this._next.setAttribute('data-nbdeploy-field', 'next-runs');
    when.append(this._kind, this._when, this._next);
    this.node.appendChild(when);
    this._kind.addEventListener('change', () => this._preview());
    this._when.addEventListener('input', () => this._preview());

    const params = document.createElement('fieldset');
    const title = document.createElement('legend');
    title.textContent = 'Parameters';
    params.appendChild(title);
    if (info.note) {
      const note = document.createElement('p');
      note.className = 'jp-nbdeploy-error';
      note.textContent = info.note;
      params.appendChild(note);
    }
    for (const field of info.parameters) {
      params.appendChild(this._field(field));
    }
    this.node.appendChild(params);
    void this._preview();
  }

  getValue(): IDraft {
    return {
      name: this._name.value.trim(),
      kind: this._kind.value === 'cron' ? 'cron' : 'every',
      when: this._when.value.trim(),
      values: this._values
    };
  }

  private _input(label: string, value: string, key: string): HTMLInputElement {
    const wrap = document.createElement('label');
    wrap.textContent = label;
    const input = document.createElement('input');
    input.className = 'jp-mod-styled';
    input.value = value;
    input.setAttribute('data-nbdeploy-field', key);
    wrap.appendChild(input);
    this.node.appendChild(wrap);
    return input;
  }

  private _field(field: IParameterField): HTMLElement {
    const wrap = document.createElement('label');
    wrap.className = 'jp-nbdeploy-param';
    const name = document.createElement('span');
    name.textContent = `${field.name} (${field.type === 'None' ? 'any' : field.type})`;
    name.title = field.help || `default: ${field.default}`;
    const input = document.createElement('input');
    input.setAttribute('data-nbdeploy-param', field.name);
    const given = this._values[field.name];
    if (field.type === 'bool') {
      input.type = 'checkbox';
      input.checked = given !== undefined ? given === true : field.default === 'True';
    } else {
      input.className = 'jp-mod-styled';
      input.type = 'text';
      input.inputMode = field.type === 'int' || field.type === 'float' ? 'decimal' : 'text';
      input.value =
        given !== undefined
          ? typeof given === 'string'
            ? given
            : JSON.stringify(given)
          : shownDefault(field);
    }
    const update = () => {
      this._values[field.name] = typedValue(field, input.value, input.checked);
    };
    input.addEventListener('input', update);
    input.addEventListener('change', update);
    wrap.append(name, input);
    return wrap;
  }

  private async _preview(): Promise<void> {
    const kind = this._kind.value === 'cron' ? 'cron' : 'every';
    const value = this._when.value.trim();
    const asked = ++this._asked;
    this._next.replaceChildren();
    if (!value) {
      return;
    }
    try {
      const times = await this._model.preview(kind, value);
      if (asked !== this._asked) {
        return; // the user typed on meanwhile
      }
      for (const time of times) {
        const item = document.createElement('li');
        item.textContent = new Date(time).toLocaleString();
        this._next.appendChild(item);
      }
    } catch (error) {
      if (asked === this._asked) {
        const item = document.createElement('li');
        item.className = 'jp-nbdeploy-error';
        item.textContent = (error as Error).message;
        this._next.appendChild(item);
      }
    }
  }

  private _asked = 0;
  private _kind: HTMLSelectElement;
  private _name: HTMLInputElement;
  private _next: HTMLUListElement;
  private _values: { [name: string]: unknown };
  private _when: HTMLInputElement;
}

/**
 * Ask how to schedule the notebook at `path` (relative to the lab's folder) and
 * create the schedule. A refused schedule (bad cron, unknown or mistyped parameter,
 * a taken name) shows the dialog again with the server's message and what was typed.
 *
 * @returns the created job's name, or null when cancelled
 */
export async function scheduleNotebook(model: JobsModel, path: string): Promise<string | null> {
  const info = await model.parameters(path);
  let draft: IDraft = { name: info.name, kind: 'every', when: '1d', values: {} };
  let error: string | null = null;
  for (;;) {
    const result = await showDialog<IDraft>({
      title: `Schedule ${info.notebook}`,
      body: new ScheduleBody(info, model, draft, error),
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Schedule' })],
      focusNodeSelector: 'input'
    });
    if (!result.button.accept || !result.value) {
      return null;
    }
    draft = result.value;
    const request: IScheduleRequest = {
      notebook: info.notebook,
      name: draft.name,
      parameters: draft.values,
      [draft.kind]: draft.when
    };
    try {
      const made = await model.create(request);
      return made.name;
    } catch (failure) {
      error = (failure as Error).message || String(failure);
    }
  }
}
