import { PolledModel } from './polled';
import {
  IDeploymentInfo,
  IDeploymentsReply,
  IModelInfo,
  IModelsReply
} from './types';

export type { Request } from './polled';

export namespace DeployModel {
  export interface IOptions extends PolledModel.IOptions {
    /** Clock for traffic rates (tests). */
    now?: () => number;
  }
}

/**
 * The panel's state: models and deployments, with traffic rates between polls.
 * Actions (`promote`, `rollback`, `stop`) reject with the server's message.
 */
export class DeployModel extends PolledModel {
  constructor(options: DeployModel.IOptions = {}) {
    super('nbdeploy:panel', options);
    this._now = options.now ?? Date.now;
  }

  get models(): readonly IModelInfo[] {
    return this._models;
  }

  get deployments(): readonly IDeploymentInfo[] {
    return this._deployments;
  }

  /** Where the server's registry lives (`NBDEPLOY_HOME`). */
  get home(): string {
    return this._home;
  }

  /** Time of the last successful poll (ms since the epoch), 0 before. */
  get updated(): number {
    return this._updated;
  }

  /** Predictions requests per second since the previous poll, by deployment. */
  rate(name: string): number | null {
    return this._rates.get(name) ?? null;
  }

  /** Move `alias` onto `name`/`version`; `force` skips the test gate. */
  async promote(
    name: string,
    version: number,
    alias: string,
    force = false
  ): Promise<void> {
    await this.post(`models/${encodeURIComponent(name)}/promote`, {
      version,
      alias,
      force
    });
  }

  /** Move `alias` of `name` back to its previous holder. */
  async rollback(name: string, alias: string): Promise<void> {
    await this.post(`models/${encodeURIComponent(name)}/rollback`, { alias });
  }

  /** Stop the deployment `name`. */
  async stop(name: string): Promise<void> {
    await this.post(`deployments/${encodeURIComponent(name)}/stop`);
  }

  protected async load(): Promise<void> {
    const [models, deployments] = await Promise.all([
      this.request<IModelsReply>('models'),
      this.request<IDeploymentsReply>('deployments')
    ]);
    this._models = models.models;
    this._home = models.home;
    this._updateRates(deployments.deployments);
    this._deployments = deployments.deployments;
    this._updated = this._now();
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

  private _counts = new Map<string, { requests: number; time: number }>();
  private _deployments: IDeploymentInfo[] = [];
  private _home = '';
  private _models: IModelInfo[] = [];
  private _now: () => number;
  private _rates = new Map<string, number>();
  private _updated = 0;
}
