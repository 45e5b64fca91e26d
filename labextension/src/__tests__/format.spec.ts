import { health, monitorCode, percent } from '../format';
import { IDeploymentInfo } from '../types';

describe('monitorCode', () => {
  it('loads the magic first in a notebook that never did', () => {
    expect(monitorCode('churn', ['import pandas as pd'])).toBe(
      '%load_ext nbdeploy\n%deploy monitor churn'
    );
  });

  it('runs only the magic when the notebook loads nbdeploy', () => {
    expect(monitorCode('churn', ['%load_ext nbdeploy\nimport nbdeploy as nd'])).toBe(
      '%deploy monitor churn'
    );
  });
});

describe('panel helpers', () => {
  const base = { status: 'running', warnings: [], error_rate: 0 } as unknown as IDeploymentInfo;

  it('colours health by status, warnings and error rate', () => {
    expect(health(base)).toBe('ok');
    expect(health({ ...base, error_rate: 0.2 })).toBe('warn');
    expect(health({ ...base, warnings: ['version mismatch'] })).toBe('warn');
    expect(health({ ...base, status: 'unresponsive' })).toBe('warn');
    expect(health({ ...base, status: 'dead' })).toBe('down');
  });

  it('formats rates as percentages', () => {
    expect(percent(null)).toBe('–');
    expect(percent(0)).toBe('0%');
    expect(percent(0.0123)).toBe('1.2%');
    expect(percent(0.5)).toBe('50%');
  });
});
