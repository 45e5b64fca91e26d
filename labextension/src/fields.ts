import { IParameterField } from './types';

/** A parameter's default as the form shows it: the literal, quotes of strings removed. */
export function shownDefault(field: IParameterField): string {
  const text = field.default ?? '';
  const quoted = text.match(/^(['"])(.*)\1$/s);
  return field.type === 'str' && quoted ? quoted[2] : text;
}

/**
 * A field's value typed for the server. Numbers that do not parse stay text, so the
 * server's own check names the mistake; `None`-typed fields accept JSON.
 */
export function typedValue(field: IParameterField, text: string, checked: boolean): unknown {
  switch (field.type) {
    case 'bool':
      return checked;
    case 'int':
      return /^[-+]?\d+$/.test(text.trim()) ? parseInt(text, 10) : text;
    case 'float':
      return text.trim() !== '' && !isNaN(Number(text)) ? Number(text) : text;
    case 'str':
      return text;
    default:
      try {
        return JSON.parse(text);
      } catch {
        return text;
      }
  }
}
