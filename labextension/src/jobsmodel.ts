import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { requestAPI } from './handler';
import {
  IJobRun,
  IJobsReply,
  IOpenedRun,
  IParametersReply,
  ISchedule,
  IScheduleRequest
} from './types';

/** What the model needs from the HTTP layer (tests pass a fake). */
export type Request = <T>(endPoint: string, init?: RequestInit) => Promise<T>;

export namespace JobsModel {
  export interface IOptions {
    request?: Request;
    /** Poll interval when everything answers, ms. */
    interval?: number;
    /** Longest interval after repeated failures (the poll backs off), ms. */
    maxInterval?: number;
  }
}

/**
 * The Jobs section's state: schedules and recent runs, refreshed by a `Poll` that
 * stands by while the panel (`active` false) or the browser tab is hidden.
 *
 * `runFailed` fires once for each run seen running (or new) that is then seen
 * failed, so the lab can raise a notification; runs that had failed before the
 * first poll are history, not news.
 */
export class JobsModel {
  constructor(options: JobsModel.IOptions = {}) {
    this._request = options.request ?? requestAPI;
    this._poll = new Poll({
      auto: false,
      factory: () => this._fetch(),
      frequency: {
        interval: options.interval ?? 5000,
        backoff: true,
        max: options.maxInterval ?? 60000
      },
      name: 'nbdeploy:jobs',
      standby: () => (this._active ? 'when-hidden' : true)
    });
  }

  get changed(): ISignal<this, void> {
    return this._changed;
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

  get error(): string | null {
    return this._error;
  }

  get loaded(): boolean {
    return this._loaded;
  }

  get active(): boolean {
    return this._active;
  }
  set active(value: boolean) {
    if (value === this._active) {
      return;
    }
    this._active = value;
    if (value) {
      void this.refresh();
    }
  }

  get isDisposed(): boolean {
    return this._poll.isDisposed;
  }

  async start(): Promise<void> {
    await this._poll.start();
  }

  async refresh(): Promise<void> {
    await this._poll.refresh();
    await this._poll.tick;
  }

  /** Start a run of the job now; resolves with its run id. */
  async runNow(name: string): Promise<string> {
    const reply = await this._act<{ run_id: string }>(`jobs/${encodeURIComponent(name)}/run`);
    return reply.run_id;
  }

  async pause(name: string): Promise<void> {
    await this._act(`jobs/${encodeURIComponent(name)}/pause`);
  }

  async resume(name: string): Promise<void> {
    await this._act(`jobs/${encodeURIComponent(name)}/resume`);
  }

  async unschedule(name: string): Promise<void> {
    try {
      await this._request(`jobs/${encodeURIComponent(name)}`, { method: 'DELETE' });
    } finally {
      void this.refresh().catch(() => undefined);
    }
  }

  /** Create a schedule; rejects with the server's message when it is refused. */
  async create(body: IScheduleRequest): Promise<ISchedule> {
    return this._act<ISchedule>('schedules', body);
  }

  /** The typed fields of a notebook's `parameters` cell (path relative to the lab). */
  async parameters(path: string): Promise<IParametersReply> {
    return this._request<IParametersReply>(
      `notebooks/parameters?path=${encodeURIComponent(path)}`
    );
  }

  /** The next three times of an interval (`every`) or a cron expression. */
  async preview(kind: 'every' | 'cron', value: string): Promise<string[]> {
    const reply = await this._request<{ next_runs: string[] }>(
      `schedules/preview?${kind}=${encodeURIComponent(value)}`
    );
    return reply.next_runs;
  }

  /** Where the lab can open a run's executed notebook, and its failing cell. */
  async open(runId: string): Promise<IOpenedRun> {
    return this._request<IOpenedRun>(`runs/${encodeURIComponent(runId)}/open`, {
      method: 'POST',
      body: '{}'
    });
  }

  dispose(): void {
    this._poll.dispose();
    Signal.clearData(this);
  }

  private async _act<T = unknown>(endPoint: string, body: object = {}): Promise<T> {
    try {
      return await this._request<T>(endPoint, {
        method: 'POST',
        body: JSON.stringify(body)
      });
    } finally {
      void this.refresh().catch(() => undefined);
    }
  }

  private async _fetch(): Promise<void> {
    let reply: IJobsReply;
    try {
      reply = await this._request<IJobsReply>('jobs');
    } catch (error) {
      this._error = (error as Error).message || String(error);
      this._changed.emit();
      throw error;
    }
    const failed = this._loaded ? this._newlyFailed(reply.runs) : [];
    this._seen = new Map(
      reply.runs.filter(r => r.run_id !== null).map(r => [r.run_id as string, r.status])
    );
    this._schedules = reply.schedules;
    this._runs = reply.runs;
    this._error = null;
    this._loaded = true;
    this._changed.emit();
    for (const run of failed) {
      this._runFailed.emit(run);
    }
  }

  private _newlyFailed(runs: IJobRun[]): IJobRun[] {
    return runs.filter(
      run =>
        run.status === 'failed' &&
        run.run_id !== null &&
        this._seen.get(run.run_id) !== 'failed'
    );
  }

  private _active = true;
  private _changed = new Signal<this, void>(this);
  private _error: string | null = null;
  private _loaded = false;
  private _poll: Poll;
  private _request: Request;
  private _runFailed = new Signal<this, IJobRun>(this);
  private _runs: IJobRun[] = [];
  private _schedules: ISchedule[] = [];
  /** run id -> status at the previous poll */
  private _seen = new Map<string, string>();
}
