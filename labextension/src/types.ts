/**
 * The JSON shapes of the nbdeploy REST API (nbdeploy/labapi.py).
 */

/** The outcome of the last `nd.test` of a version. */
export interface ITestResult {
  passed: boolean | null;
  metric: string | null;
  score: number | null;
  time: number | null;
  failed_checks: string[];
}

export interface IVersionInfo {
  version: number;
  aliases: string[];
  created: number;
  flavor: string;
  task: string;
  description: string;
  /** null when the version was never tested. */
  test: ITestResult | null;
}

/** One alias move, as `nd.history` records it. */
export interface IAliasEvent {
  time: number;
  alias: string;
  from_version: number | null;
  to_version: number | null;
  user: string;
  reason: string;
  action: string;
}

export interface IModelInfo {
  name: string;
  /** alias -> version holding it */
  aliases: { [alias: string]: number };
  /** newest first */
  versions: IVersionInfo[];
  /** oldest first */
  history: IAliasEvent[];
}

export interface IModelsReply {
  home: string;
  models: IModelInfo[];
}

export interface IDeploymentInfo {
  name: string;
  ref: string;
  url: string;
  pid: number;
  /** running, unresponsive, unreachable or dead */
  status: string;
  error: string | null;
  version: number | null;
  alias: string | null;
  requests: number | null;
  rejected: number | null;
  predictions: number | null;
  error_rate: number | null;
  split: { [ref: string]: { version: number; fraction: number } };
  shadow: string[];
  warnings: string[];
  /** true: a drift alert was recorded within the alert window; null: none recorded */
  drift: boolean | null;
  /** alerts recorded within the alert window, newest first */
  alerts: IAlert[];
}

export interface IAlert {
  time: number;
  rule: string;
  message: string;
  drift: boolean;
}

export interface IDeploymentsReply {
  home: string;
  deployments: IDeploymentInfo[];
}
