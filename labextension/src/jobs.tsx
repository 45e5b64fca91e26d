import { UseSignal } from '@jupyterlab/apputils';
import React from 'react';

import { JobsModel } from './jobsmodel';
import { IJobRun, ISchedule } from './types';

/** How many recent runs the section lists. */
const RUNS_SHOWN = 10;

type Act = (title: string, action: () => Promise<void>) => void;

export interface IJobsSectionProps {
  jobs: JobsModel;
  act: Act;
  /** open a run's executed notebook (at its failing cell) */
  openRun: (runId: string) => void;
}

/** The panel's Jobs section: schedules with their next run, and recent runs. */
export function JobsSection({ jobs, act, openRun }: IJobsSectionProps): JSX.Element {
  return (
    <UseSignal signal={jobs.changed}>
      {() => (
        <section id="nbdeploy-jobs">
          <h3>Jobs ({jobs.schedules.length})</h3>
          {jobs.error && (
            <div className="jp-nbdeploy-error" role="alert">
              {jobs.error}
            </div>
          )}
          {jobs.loaded && jobs.schedules.length === 0 && (
            <p className="jp-nbdeploy-muted">
              Nothing scheduled: open a notebook and press <b>Schedule</b> in its toolbar.
            </p>
          )}
          <ul className="jp-nbdeploy-jobs">
            {jobs.schedules.map(s => (
              <ScheduleItem key={s.name} info={s} jobs={jobs} act={act} />
            ))}
          </ul>
          {jobs.runs.length > 0 && <h4>Recent runs</h4>}
          <ul className="jp-nbdeploy-runs">
            {jobs.runs.slice(0, RUNS_SHOWN).map((r, i) => (
              <RunItem key={r.run_id ?? `skipped-${i}`} run={r} openRun={openRun} />
            ))}
          </ul>
        </section>
      )}
    </UseSignal>
  );
}

function ScheduleItem(props: { info: ISchedule; jobs: JobsModel; act: Act }): JSX.Element {
  const { info, jobs, act } = props;
  const when = info.cron ? `cron ${info.cron}` : `every ${info.every}`;
  const next = info.paused
    ? 'paused'
    : info.next_run
      ? `next ${new Date(info.next_run).toLocaleString()}`
      : '';
  return (
    <li className="jp-nbdeploy-job" data-nbdeploy-job={info.name}>
      <div className="jp-nbdeploy-row">
        <StatusDot status={info.paused ? 'paused' : info.last_status} />
        <span className="jp-nbdeploy-name">{info.name}</span>
        <span className="jp-nbdeploy-muted">{when}</span>
      </div>
      <div className="jp-nbdeploy-detail jp-nbdeploy-muted" title={info.notebook}>
        {next}
        {info.last_status ? ` · last ${info.last_status}` : ''}
      </div>
      <div className="jp-nbdeploy-actions">
        <button
          className="jp-nbdeploy-button"
          data-nbdeploy-action="run-now"
          title={`Run ${info.name} now, in a process of its own`}
          onClick={() => act(`Could not start ${info.name}`, async () => {
            await jobs.runNow(info.name);
          })}
        >
          Run now
        </button>
        <button
          className="jp-nbdeploy-button"
          data-nbdeploy-action={info.paused ? 'resume' : 'pause'}
          onClick={() =>
            act(`Could not ${info.paused ? 'resume' : 'pause'} ${info.name}`, () =>
              info.paused ? jobs.resume(info.name) : jobs.pause(info.name)
            )
          }
        >
          {info.paused ? 'Resume' : 'Pause'}
        </button>
      </div>
    </li>
  );
}

function RunItem(props: { run: IJobRun; openRun: (runId: string) => void }): JSX.Element {
  const { run, openRun } = props;
  const started = run.started ? new Date(run.started).toLocaleTimeString() : '';
  const took = run.duration_s !== null ? ` · ${run.duration_s.toFixed(1)} s` : '';
  return (
    <li
      className="jp-nbdeploy-run"
      data-nbdeploy-run={run.run_id ?? ''}
      data-nbdeploy-status={run.status}
    >
      <div className="jp-nbdeploy-row">
        <StatusDot status={run.status} />
        <span className="jp-nbdeploy-name">{run.job}</span>
        <span className="jp-nbdeploy-muted">
          {run.status} {started}
          {took}
        </span>
        {run.run_id && run.output_path && (
          <button
            className="jp-nbdeploy-link"
            data-nbdeploy-action="open-run"
            title={
              run.failed_cell !== null
                ? `Open the executed notebook at the failing cell (${run.failed_cell + 1})`
                : 'Open the executed notebook'
            }
            onClick={() => openRun(run.run_id as string)}
          >
            notebook
          </button>
        )}
      </div>
      {run.error && (
        <div className="jp-nbdeploy-detail jp-nbdeploy-alert" title={run.error}>
          {run.error}
        </div>
      )}
      {run.produced.length > 0 && (
        <div className="jp-nbdeploy-detail jp-nbdeploy-muted">
          registered {run.produced.join(', ')}
        </div>
      )}
    </li>
  );
}

function StatusDot({ status }: { status: string | null }): JSX.Element {
  const state =
    status === 'succeeded'
      ? 'ok'
      : status === 'failed' || status === 'abandoned'
        ? 'down'
        : status === 'running'
          ? 'busy'
          : 'unknown';
  return <span className={`jp-nbdeploy-dot jp-mod-${state}`} title={status ?? 'never run'} />;
}
