/**
 * Pure helpers of the views: no JupyterLab imports, so they test fast.
 */
import { IDeploymentInfo } from './types';

/** nbdeploy's naming rule (nbdeploy/names.py): such a name carries nothing IPython expands. */
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/**
 * The code the Monitor button runs; loads the magic first if the notebook never did.
 *
 * IPython expands {expr} and $var in a magic's line and a newline starts a new
 * statement, so only a name that follows the naming rule goes into the magic. Any
 * other name (the server never makes one) is passed as a Python string literal.
 */
export function monitorCode(name: string, sources: string[]): string {
  if (!NAME.test(name)) {
    return `import nbdeploy\nnbdeploy.monitor(${pythonString(name)})`;
  }
  const loaded = sources.some(source => /%(re)?load_ext\s+nbdeploy\b/.test(source));
  const line = `%deploy monitor ${name}`;
  return loaded ? line : `%load_ext nbdeploy\n${line}`;
}

/**
 * A Python string literal of printable ASCII only: JSON escapes quotes, backslashes
 * and control characters; the rest of non-ASCII is escaped too, as IPython splits
 * lines at U+2028 and friends before Python reads the string.
 */
export function pythonString(text: string): string {
  return JSON.stringify(text).replace(
    /[^\x20-\x7e]/g,
    c => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0')
  );
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
