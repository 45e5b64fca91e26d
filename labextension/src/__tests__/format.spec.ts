import { health, monitorCode, percent, pythonString } from '../format';
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

  const hostile = [
    '{__import__("os").system("id")}',
    '$HOME',
    'churn\nimport os',
    '../x',
    'x'.repeat(200),
    'modèle',
    'a\u2028!id',
    "it's",
    'back\\slash"quote',
    ''
  ];

  it.each(hostile)('never puts a name outside the naming rule into a magic: %j', name => {
    const code = monitorCode(name, ['%load_ext nbdeploy']);
    const lines = code.split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toBe('import nbdeploy');
    const call = /^nbdeploy\.monitor\((".*")\)$/.exec(lines[1]);
    expect(call).not.toBeNull();
    // one line of printable ASCII, and the literal reads back as exactly the name
    expect(lines[1]).toMatch(/^[\x20-\x7e]+$/);
    expect(JSON.parse(call![1])).toBe(name);
    expect(code).not.toContain('%deploy');
  });

  it('quotes text as a Python string of printable ASCII', () => {
    expect(pythonString('a"b\\c')).toBe('"a\\"b\\\\c"');
    expect(pythonString('é\u2028')).toBe('"\\u00e9\\u2028"');
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
