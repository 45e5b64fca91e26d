import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { requestAPI } from './handler';
import {
  IDeploymentInfo,
  IDeploymentsReply,
  IModelInfo,
  IModelsReply
} from './types';

/** What the model needs from the HTTP layer (tests pass a fake). */
export type Request = <T>(endPoint: string, init?: RequestInit) => Promise<T>;

export namespace DeployModel {
  export interface IOptions {
    request?: Request;
    /** Poll interval when everything answers, ms. */
    interval?: number;
    /** Longest interval after repeated failures (the poll backs off), ms. */
    maxInterval?: number;
    /** Clock for traffic rates (tests). */
    now?: () => number;
  }
}

/**
 * The panel's state: models and deployments, refreshed by a `Poll`.
 *
 * The poll backs off while requests fail, and stands by while the panel is hidden
 * (`active` false) or the browser tab is. Failures are kept in `error` for the view
 * to show; actions (`promote`, `rollback`, `stop`) reject with the server's message.
 */
export class DeployModel {
  constructor(options: DeployModel.IOptions = {}) {
    this._request = options.request ?? requestAPI;
    this._now = options.now ?? Date.now;
    this._poll = new Poll({
      auto: false,
      factory: () => this._fetch(),
      frequency: {
        interval: options.interval ?? 5000,
        backoff: true,
        max: options.maxInterval ?? 60000
      },
      name: 'nbdeploy:panel',
      standby: () => (this._active ? 'when-hidden' : true)
    });
  }

  /** Emitted whenever anything the views show changes. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get models(): readonly IModelInfo[] {
    return this._models;
  }

  get deployments(): readonly IDeploymentInfo[] {
    return this._deployments;
  }

  /** The last polling failure, null once a poll succeeds again. */
  get error(): string | null {
    return this._error;
  }

  /** Where the server's registry lives (`NBDEPLOY_HOME`). */
  get home(): string {
    return this._home;
  }

  /** Whether at least one poll has answered. */
  get loaded(): boolean {
    return this._loaded;
  }

  /** Time of the last successful poll (ms since the epoch), 0 before. */
  get updated(): number {
    return this._updated;
  }

  /** Predictions requests per second since the previous poll, by deployment. */
  rate(name: string): number | null {
    return this._rates.get(name) ?? null;
  }

  /** The panel is shown: poll (and refresh now); hidden: stand by. */
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

  /** Start polling (the first tick runs at once). */
  async start(): Promise<void> {
    await this._poll.start();
  }

  /** Poll now rather than at the next tick. */
  async refresh(): Promise<void> {
    await this._poll.refresh();
    await this._poll.tick;
  }

  /** Move `alias` onto `name`/`version`; `force` skips the test gate. */
  async promote(
    name: string,
    version: number,
    alias: string,
    force = false
  ): Promise<void> {
    await this._act(`models/${encodeURIComponent(name)}/promote`, {
      version,
      alias,
      force
    });
  }

  /** Move `alias` of `name` back to its previous holder. */
  async rollback(name: string, alias: string): Promise<void> {
    await this._act(`models/${encodeURIComponent(name)}/rollback`, { alias });
  }

  /** Stop the deployment `name`. */
  async stop(name: string): Promise<void> {
    await this._act(`deployments/${encodeURIComponent(name)}/stop`, {});
  }

  dispose(): void {
    this._poll.dispose();
    Signal.clearData(this);
  }

  private async _act(endPoint: string, body: object): Promise<void> {
    try {
      await this._request(endPoint, {
        method: 'POST',
        body: JSON.stringify(body)
      });
    } finally {
      // show the outcome (or what changed meanwhile) even when the action failed
      void this.refresh().catch(() => undefined);
    }
  }

  private async _fetch(): Promise<void> {
    try {
      const [models, deployments] = await Promise.all([
        this._request<IModelsReply>('models'),
        this._request<IDeploymentsReply>('deployments')
      ]);
      this._models = models.models;
      this._home = models.home;
      this._updateRates(deployments.deployments);
      this._deployments = deployments.deployments;
      this._error = null;
      this._loaded = true;
      this._updated = this._now();
    } catch (error) {
      this._error = (error as Error).message || String(error);
      this._changed.emit();
      throw error; // a rejected tick makes the poll back off
    }
    this._changed.emit();
  }

  private _updateRates(deployments: IDeploymentInfo[]): void {
    const now = this._now();
    const rates = new Map<string, number>();
    for (const dep of deployments) {
      const before = this._counts.get(dep.name);
      if (before && dep.requests !== null && dep.requests >= before.requests) {
        const seconds = (now - before.time) / 1000;
        if (seconds > 0) {
          rates.set(dep.name, (dep.requests - before.requests) / seconds);
        }
      }
    }
    this._counts = new Map(
      deployments
        .filter(dep => dep.requests !== null)
        .map(dep => [dep.name, { requests: dep.requests as number, time: now }])
    );
    this._rates = rates;
  }

  private _active = true;
  private _changed = new Signal<this, void>(this);
  private _counts = new Map<string, { requests: number; time: number }>();
  private _deployments: IDeploymentInfo[] = [];
  private _error: string | null = null;
  private _home = '';
  private _loaded = false;
  private _models: IModelInfo[] = [];
  private _now: () => number;
  private _poll: Poll;
  private _rates = new Map<string, number>();
  private _request: Request;
  private _updated = 0;
}
