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
  /** the job run whose notebook registered this version, if a job did */
  job_run: string | null;
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

/** A recurring job, as `GET /nbdeploy/api/jobs` lists it. */
export interface ISchedule {
  name: string;
  notebook: string;
  /** e.g. "30m", "6h", "1d"; null for cron schedules */
  every: string | null;
  cron: string | null;
  /** ISO time; null while paused */
  next_run: string | null;
  /** the status of its latest claimed time; null before the first */
  last_status: string | null;
  paused: boolean;
  catchup: boolean;
  parameters: { [name: string]: unknown };
}

/** One run of a job (or a skipped time: `run_id` null, status "skipped"). */
export interface IJobRun {
  run_id: string | null;
  job: string;
  /** running, succeeded, failed, skipped */
  status: string;
  started: string | null;
  scheduled_for: string | null;
  duration_s: number | null;
  output_path: string | null;
  /** the last line of the error of a failed run */
  error: string | null;
  failed_cell: number | null;
  produced: string[];
}

export interface IJobsReply {
  schedules: ISchedule[];
  /** newest first */
  runs: IJobRun[];
}

/** A parameter of a notebook's `parameters` cell, typed from its default. */
export interface IParameterField {
  name: string;
  /** int, float, bool, str, or None when the notebook decides */
  type: string;
  /** the default as written in the notebook */
  default: string;
  help: string;
}

export interface IParametersReply {
  notebook: string;
  /** a suggested job name */
  name: string;
  parameters: IParameterField[];
  /** what to do when the notebook has no parameters cell */
  note: string | null;
}

/** The body of `POST /nbdeploy/api/schedules`. */
export interface IScheduleRequest {
  notebook: string;
  name: string;
  every?: string;
  cron?: string;
  parameters: { [name: string]: unknown };
}

export interface IOpenedRun {
  /** relative to the lab's folder */
  path: string;
  failed_cell: number | null;
}
