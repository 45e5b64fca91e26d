import { ReactWidget, showErrorMessage, UseSignal } from '@jupyterlab/apputils';
import { refreshIcon } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import React, { useState } from 'react';

import { askPromote, confirm } from './dialogs';
import { nbdeployIcon } from './icon';
import { health, percent } from './format';
import { JobsSection } from './jobs';
import { JobsModel } from './jobsmodel';
import { DeployModel } from './model';
import {
  IAliasEvent,
  IDeploymentInfo,
  IModelInfo,
  IVersionInfo
} from './types';

/** The panel's widget id (tests and `app.shell.activateById` use it). */
export const PANEL_ID = 'nbdeploy-panel';

/** How many alias moves a model shows (newest first). */
const HISTORY_SHOWN = 8;

/**
 * The left-area panel: models as trees of versions, and deployments.
 *
 * All state lives in the `DeployModel`; this view renders it, asks for
 * confirmation before an action and shows every failure.
 */
export class DeployPanel extends ReactWidget {
  constructor(
    readonly model: DeployModel,
    private readonly _monitor: (name: string) => void,
    readonly jobs: JobsModel,
    private readonly _openRun: (runId: string) => void
  ) {
    super();
    this.id = PANEL_ID;
    this.addClass('jp-nbdeploy');
    this.title.icon = nbdeployIcon;
    this.title.caption = 'nbdeploy: models, deployments and jobs';
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.model.active = true;
    this.jobs.active = true;
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this.model.active = false;
    this.jobs.active = false;
  }

  render(): JSX.Element {
    return (
      <UseSignal signal={this.model.changed}>
        {() => (
          <Panel
            model={this.model}
            act={(title, action) => this._act(title, action)}
            monitor={this._monitor}
            jobs={this.jobs}
            openRun={this._openRun}
          />
        )}
      </UseSignal>
    );
  }

  private async _act(title: string, action: () => Promise<void>): Promise<void> {
    try {
      await action();
    } catch (error) {
      await showErrorMessage(title, (error as Error).message || String(error));
    }
  }
}

type Act = (title: string, action: () => Promise<void>) => void;

interface IPanelProps {
  model: DeployModel;
  act: Act;
  monitor: (name: string) => void;
  jobs: JobsModel;
  openRun: (runId: string) => void;
}

function Panel({ model, act, monitor, jobs, openRun }: IPanelProps): JSX.Element {
  return (
    <div className="jp-nbdeploy-body">
      <header className="jp-nbdeploy-header">
        <h2>nbdeploy</h2>
        <button
          className="jp-nbdeploy-icon-button"
          title="Refresh now"
          data-nbdeploy-action="refresh"
          onClick={() => void model.refresh()}
        >
          <refreshIcon.react tag="span" />
        </button>
      </header>
      {model.home && (
        <div className="jp-nbdeploy-home" title={model.home}>
          {model.home}
        </div>
      )}
      {model.error && (
        <div className="jp-nbdeploy-error" role="alert">
          {model.error}
          <div className="jp-nbdeploy-muted">retrying with backoff</div>
        </div>
      )}
      <section>
        <h3>Models ({model.models.length})</h3>
        {model.loaded && model.models.length === 0 && (
          <p className="jp-nbdeploy-muted">
            No registered models yet: <code>nd.register(model, "name", X, y)</code>
          </p>
        )}
        <ul className="jp-nbdeploy-tree">
          {model.models.map(m => (
            <ModelItem key={m.name} info={m} model={model} act={act} openRun={openRun} />
          ))}
        </ul>
      </section>
      <section>
        <h3>Deployments ({model.deployments.length})</h3>
        {model.loaded && model.deployments.length === 0 && (
          <p className="jp-nbdeploy-muted">
            Nothing served: <code>%deploy serve name@champion</code>
          </p>
        )}
        <ul className="jp-nbdeploy-deployments">
          {model.deployments.map(d => (
            <DeploymentItem
              key={d.name}
              info={d}
              rate={model.rate(d.name)}
              model={model}
              act={act}
              monitor={monitor}
            />
          ))}
        </ul>
      </section>
      <JobsSection jobs={jobs} act={act} openRun={openRun} />
      {model.updated > 0 && (
        <footer className="jp-nbdeploy-muted">
          updated {new Date(model.updated).toLocaleTimeString()}
        </footer>
      )}
    </div>
  );
}

interface IModelProps {
  info: IModelInfo;
  model: DeployModel;
  act: Act;
  openRun: (runId: string) => void;
}

function ModelItem({ info, model, act, openRun }: IModelProps): JSX.Element {
  const [open, setOpen] = useState(true);
  const [showHistory, setShowHistory] = useState(false);
  const promote = (version: IVersionInfo) =>
    act(`Could not promote ${info.name} v${version.version}`, async () => {
      const choice = await askPromote(
        info.name,
        version,
        Object.keys(info.aliases)[0] ?? 'champion'
      );
      if (choice) {
        await model.promote(info.name, version.version, choice.alias, choice.force);
      }
    });
  const rollback = (alias: string) =>
    act(`Could not roll back ${info.name}@${alias}`, async () => {
      const ok = await confirm(
        `Roll back ${info.name}@${alias}?`,
        `Move @${alias} from version ${info.aliases[alias]} back to the version that held it before.`,
        'Roll back'
      );
      if (ok) {
        await model.rollback(info.name, alias);
      }
    });
  return (
    <li className="jp-nbdeploy-model" data-nbdeploy-model={info.name}>
      <div className="jp-nbdeploy-row">
        <button
          className="jp-nbdeploy-toggle"
          aria-expanded={open}
          title={open ? 'Collapse' : 'Expand'}
          onClick={() => setOpen(!open)}
        >
          {open ? '▾' : '▸'}
        </button>
        <span className="jp-nbdeploy-name">{info.name}</span>
        {Object.entries(info.aliases).map(([alias, version]) => (
          <span key={alias} className="jp-nbdeploy-alias-group">
            <AliasBadge alias={alias} version={version} />
            <button
              className="jp-nbdeploy-link"
              title={`Roll @${alias} back to its previous version`}
              data-nbdeploy-action="rollback"
              data-nbdeploy-alias={alias}
              onClick={() => rollback(alias)}
            >
              ↶
            </button>
          </span>
        ))}
      </div>
      {open && (
        <ul className="jp-nbdeploy-versions">
          {info.versions.map(v => (
            <li
              key={v.version}
              className="jp-nbdeploy-version"
              data-nbdeploy-version={v.version}
            >
              <span className="jp-nbdeploy-vnum">v{v.version}</span>
              <span className="jp-nbdeploy-tags">
                {v.aliases.map(a => (
                  <AliasBadge key={a} alias={a} />
                ))}
                <TestChip test={v.test} />
              </span>
              {v.job_run && (
                <button
                  className="jp-nbdeploy-link"
                  data-nbdeploy-action="open-training-run"
                  title={`Trained by job run ${v.job_run}: open its executed notebook`}
                  onClick={() => openRun(v.job_run as string)}
                >
                  job
                </button>
              )}
              <button
                className="jp-nbdeploy-button"
                data-nbdeploy-action="promote"
                title={`Move an alias onto ${info.name}/${v.version}`}
                onClick={() => promote(v)}
              >
                Promote…
              </button>
            </li>
          ))}
          {info.history.length > 0 && (
            <li className="jp-nbdeploy-history">
              <button className="jp-nbdeploy-link" onClick={() => setShowHistory(!showHistory)}>
                {showHistory ? '▾' : '▸'} alias history ({info.history.length})
              </button>
              {showHistory && (
                <ol>
                  {info.history
                    .slice(-HISTORY_SHOWN)
                    .reverse()
                    .map((e, i) => (
                      <HistoryItem key={i} event={e} />
                    ))}
                </ol>
              )}
            </li>
          )}
        </ul>
      )}
    </li>
  );
}

function AliasBadge(props: { alias: string; version?: number }): JSX.Element {
  return (
    <span className="jp-nbdeploy-badge" data-nbdeploy-badge={props.alias}>
      @{props.alias}
      {props.version !== undefined ? ` v${props.version}` : ''}
    </span>
  );
}

function TestChip({ test }: { test: IVersionInfo['test'] }): JSX.Element {
  if (test === null || test.passed === null) {
    return <span className="jp-nbdeploy-chip jp-mod-unknown">not tested</span>;
  }
  const score =
    test.score !== null && test.metric ? ` ${test.metric} ${test.score.toFixed(3)}` : '';
  const failed = test.failed_checks.length ? `failed: ${test.failed_checks.join(', ')}` : '';
  return test.passed ? (
    <span className="jp-nbdeploy-chip jp-mod-ok" title={`last nd.test passed${score}`}>
      ✓{score}
    </span>
  ) : (
    <span className="jp-nbdeploy-chip jp-mod-bad" title={failed}>
      ✗ test failed
    </span>
  );
}

function HistoryItem({ event }: { event: IAliasEvent }): JSX.Element {
  const when = new Date(event.time * 1000).toLocaleString();
  const from = event.from_version === null ? '–' : `v${event.from_version}`;
  return (
    <li title={event.reason}>
      <span className="jp-nbdeploy-muted">{when}</span> @{event.alias} {from} → v
      {event.to_version} <span className="jp-nbdeploy-muted">({event.action}, {event.user})</span>
    </li>
  );
}

interface IDeploymentProps {
  info: IDeploymentInfo;
  rate: number | null;
  model: DeployModel;
  act: Act;
  monitor: (name: string) => void;
}

function DeploymentItem({ info, rate, model, act, monitor }: IDeploymentProps): JSX.Element {
  const state = health(info);
  const stop = () =>
    act(`Could not stop ${info.name}`, async () => {
      const ok = await confirm(
        `Stop ${info.name}?`,
        `The server at ${info.url} stops answering; its logged predictions stay in the audit log.`,
        'Stop',
        true
      );
      if (ok) {
        await model.stop(info.name);
      }
    });
  const title = [info.status, info.error, ...info.warnings].filter(Boolean).join('\n');
  const split = Object.entries(info.split);
  return (
    <li className="jp-nbdeploy-deployment" data-nbdeploy-deployment={info.name}>
      <div className="jp-nbdeploy-row">
        <span className={`jp-nbdeploy-dot jp-mod-${state}`} title={title} />
        <span className="jp-nbdeploy-name">{info.name}</span>
        <span className="jp-nbdeploy-muted">
          {info.ref}
          {info.version !== null ? ` → v${info.version}` : ''}
        </span>
      </div>
      <div className="jp-nbdeploy-detail">
        <a href={info.url} target="_blank" rel="noreferrer">
          {info.url}
        </a>
      </div>
      <div className="jp-nbdeploy-detail">
        <span title="requests answered since the server started">
          {info.requests ?? '–'} req
        </span>
        {rate !== null && <span> · {rate.toFixed(1)}/s</span>}
        <span title="rejected requests / requests"> · errors {percent(info.error_rate)}</span>
        <DriftChip drift={info.drift} />
      </div>
      {split.length > 0 && (
        <div className="jp-nbdeploy-detail jp-nbdeploy-muted">
          split:{' '}
          {split.map(([ref, s]) => `${ref} (v${s.version}) ${percent(s.fraction)}`).join(', ')}
        </div>
      )}
      {info.shadow.length > 0 && (
        <div className="jp-nbdeploy-detail jp-nbdeploy-muted">shadow: {info.shadow.join(', ')}</div>
      )}
      {info.alerts.map((alert, i) => (
        <div
          key={i}
          className="jp-nbdeploy-detail jp-nbdeploy-alert"
          title={new Date(alert.time * 1000).toLocaleString()}
        >
          ⚠ {alert.message}
        </div>
      ))}
      <div className="jp-nbdeploy-actions">
        <button
          className="jp-nbdeploy-button"
          data-nbdeploy-action="monitor"
          title={`Insert and run %deploy monitor ${info.name} in the active notebook`}
          onClick={() => monitor(info.name)}
        >
          Monitor
        </button>
        <button
          className="jp-nbdeploy-button jp-mod-warn"
          data-nbdeploy-action="stop"
          onClick={stop}
        >
          Stop…
        </button>
      </div>
    </li>
  );
}

function DriftChip({ drift }: { drift: boolean | null }): JSX.Element {
  if (drift === null) {
    return (
      <span
        className="jp-nbdeploy-chip jp-mod-unknown"
        title="no drift alert recorded in the alert window (Monitor shows the drift report)"
      >
        drift ?
      </span>
    );
  }
  return drift ? (
    <span className="jp-nbdeploy-chip jp-mod-bad" title="a drift alert fired recently">
      drift
    </span>
  ) : (
    <span className="jp-nbdeploy-chip jp-mod-ok">no drift</span>
  );
}
