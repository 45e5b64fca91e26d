import { shownDefault, typedValue } from '../fields';
import { IParameterField } from '../types';

function field(type: string, value: string): IParameterField {
  return { name: 'p', type, default: value, help: '' };
}

describe('schedule dialog values', () => {
  it('shows string defaults without their quotes', () => {
    expect(shownDefault(field('str', "'churn'"))).toBe('churn');
    expect(shownDefault(field('str', '"a b"'))).toBe('a b');
    expect(shownDefault(field('int', '100'))).toBe('100');
  });

  it('types what was typed as the notebook declared it', () => {
    expect(typedValue(field('int', '1'), ' 42 ', false)).toBe(42);
    expect(typedValue(field('float', '0.5'), '1e-3', false)).toBe(0.001);
    expect(typedValue(field('bool', 'False'), '', true)).toBe(true);
    expect(typedValue(field('str', "'x'"), '7', false)).toBe('7');
    expect(typedValue(field('None', 'None'), '[1, 2]', false)).toEqual([1, 2]);
    expect(typedValue(field('None', 'None'), 'data.csv', false)).toBe('data.csv');
  });

  it('leaves what does not parse as text, for the server to name the mistake', () => {
    expect(typedValue(field('int', '1'), 'many', false)).toBe('many');
    expect(typedValue(field('int', '1'), '1.5', false)).toBe('1.5');
    expect(typedValue(field('float', '0.5'), '', false)).toBe('');
  });
});
