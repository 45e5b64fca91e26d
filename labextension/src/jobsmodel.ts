import { ISignal, Signal } from '@lumino/signaling';

import { PolledModel } from './polled';
import {
  IJobRun,
  IJobsReply,
  IOpenedRun,
  IParametersReply,
  ISchedule,
  IScheduleRequest
} from './types';

export type { Request } from './polled';

export namespace JobsModel {
  export type IOptions = PolledModel.IOptions;
}

/**
 * The Jobs section's state: schedules and recent runs.
 *
 * `runFailed` fires once for each run seen running (or new) that is then seen
 * failed, so the lab can raise a notification; runs that had failed before the
 * first poll are history, not news.
 */
export class JobsModel extends PolledModel {
  constructor(options: JobsModel.IOptions = {}) {
    super('nbdeploy:jobs', options);
  }

  /** A run that failed since the last poll. */
  get runFailed(): ISignal<this, IJobRun> {
    return this._runFailed;
  }

  get schedules(): readonly ISchedule[] {
    return this._schedules;
  }

  /** Newest first. */
  get runs(): readonly IJobRun[] {
    return this._runs;
  }

  /** Start a run of the job now; resolves with its run id. */
  async runNow(name: string): Promise<string> {
    const reply = await this.post<{ run_id: string }>(`jobs/${encodeURIComponent(name)}/run`);
    return reply.run_id;
  }

  async pause(name: string): Promise<void> {
    await this.post(`jobs/${encodeURIComponent(name)}/pause`);
  }

  async resume(name: string): Promise<void> {
    await this.post(`jobs/${encodeURIComponent(name)}/resume`);
  }

  async unschedule(name: string): Promise<void> {
    await this.act(`jobs/${encodeURIComponent(name)}`, { method: 'DELETE' });
  }

  /** Create a schedule; rejects with the server's message when it is refused. */
  async create(body: IScheduleRequest): Promise<ISchedule> {
    return this.post<ISchedule>('schedules', body);
  }

  /** The typed fields of a notebook's `parameters` cell (path relative to the lab). */
  async parameters(path: string): Promise<IParametersReply> {
    return this.request<IParametersReply>(
      `notebooks/parameters?path=${encodeURIComponent(path)}`
    );
  }

  /** The next three times of an interval (`every`) or a cron expression. */
  async preview(kind: 'every' | 'cron', value: string): Promise<string[]> {
    const reply = await this.request<{ next_runs: string[] }>(
      `schedules/preview?${kind}=${encodeURIComponent(value)}`
    );
    return reply.next_runs;
  }

  /** Where the lab can open a run's executed notebook, and its failing cell. */
  async open(runId: string): Promise<IOpenedRun> {
    return this.request<IOpenedRun>(`runs/${encodeURIComponent(runId)}/open`, {
      method: 'POST',
      body: '{}'
    });
  }

  protected async load(): Promise<void> {
    const reply = await this.request<IJobsReply>('jobs');
    this._failed = this.loaded ? this._newlyFailed(reply.runs) : [];
    this._seen = new Map(
      reply.runs.filter(r => r.run_id !== null).map(r => [r.run_id as string, r.status])
    );
    this._schedules = reply.schedules;
    this._runs = reply.runs;
  }

  protected announced(): void {
    for (const run of this._failed) {
      this._runFailed.emit(run);
    }
    this._failed = [];
  }

  private _newlyFailed(runs: IJobRun[]): IJobRun[] {
    return runs.filter(
      run =>
        run.status === 'failed' &&
        run.run_id !== null &&
        this._seen.get(run.run_id) !== 'failed'
    );
  }

  /** failed since the previous poll, announced once the poll's state is shown */
  private _failed: IJobRun[] = [];
  private _runFailed = new Signal<this, IJobRun>(this);
  private _runs: IJobRun[] = [];
  private _schedules: ISchedule[] = [];
  /** run id -> status at the previous poll */
  private _seen = new Map<string, string>();
}
