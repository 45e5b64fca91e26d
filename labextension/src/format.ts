/**
 * Pure helpers of the views: no JupyterLab imports, so they test fast.
 */
import { IDeploymentInfo } from './types';

/** The code the Monitor button runs; loads the magic first if the notebook never did. */
export function monitorCode(name: string, sources: string[]): string {
  const loaded = sources.some(source => /%(re)?load_ext\s+nbdeploy\b/.test(source));
  const line = `%deploy monitor ${name}`;
  return loaded ? line : `%load_ext nbdeploy\n${line}`;
}

/** green: answering; amber: answering with warnings or unresponsive; red: down. */
export function health(info: IDeploymentInfo): 'ok' | 'warn' | 'down' {
  if (info.status === 'running') {
    return info.warnings.length || (info.error_rate ?? 0) > 0.05 ? 'warn' : 'ok';
  }
  return info.status === 'dead' ? 'down' : 'warn';
}

/** 0.0123 -> "1.2%"; null -> "–". */
export function percent(value: number | null): string {
  if (value === null || Number.isNaN(value)) {
    return '–';
  }
  return `${(100 * value).toFixed(value < 0.1 && value > 0 ? 1 : 0)}%`;
}
