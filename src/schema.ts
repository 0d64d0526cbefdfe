/**
 * A task type's `parameters_schema` as form fields, and form values back to
 * a `parameters` object. Anything the form cannot express as a plain input
 * (objects, lists) is a JSON field; the raw JSON mode covers the rest.
 */
import type { IJSONSchema, JSONObject, JSONValue } from './types';

/** How a field is edited. */
export type FieldKind =
  | 'string'
  | 'integer'
  | 'number'
  | 'boolean'
  | 'enum'
  /** A string, or JSON when it starts with `[`, `{` or `"` (e.g. a command or argv). */
  | 'text-or-json'
  | 'json';

/** One form field. */
export interface IField {
  name: string;
  label: string;
  kind: FieldKind;
  required: boolean;
  description: string;
  /** For `enum`: the allowed values. */
  options: JSONValue[];
  default?: JSONValue;
}

/** Form state: text for inputs, a boolean for checkboxes. */
export type FieldValues = Record<string, string | boolean>;

/** The outcome of reading a form. */
export type ParametersResult =
  { ok: true; parameters: JSONObject } | { ok: false; error: string };

/** Follow a local `$ref` (`#/$defs/X` or `#/definitions/X`). */
function resolve(schema: IJSONSchema, root: IJSONSchema): IJSONSchema {
  const ref = schema['$ref'];
  if (typeof ref !== 'string' || !ref.startsWith('#/')) {
    return schema;
  }
  let target: unknown = root;
  for (const part of ref.slice(2).split('/')) {
    target =
      target && typeof target === 'object'
        ? (target as Record<string, unknown>)[part]
        : undefined;
  }
  return target && typeof target === 'object'
    ? { ...(target as IJSONSchema), ...schema, $ref: undefined }
    : schema;
}

/** The non-null alternatives of a schema (`anyOf`, `oneOf`, a type list). */
function alternatives(schema: IJSONSchema, root: IJSONSchema): IJSONSchema[] {
  const list = schema.anyOf ?? schema.oneOf;
  if (list) {
    return list.map(s => resolve(s, root)).filter(s => s.type !== 'null');
  }
  if (Array.isArray(schema.type)) {
    return schema.type.filter(t => t !== 'null').map(type => ({ type }));
  }
  return [schema];
}

/** The editing kind of one property schema. */
function kindOf(schema: IJSONSchema, root: IJSONSchema): FieldKind {
  const resolved = resolve(schema, root);
  if (Array.isArray(resolved.enum) && resolved.enum.length > 0) {
    return 'enum';
  }
  const alts = alternatives(resolved, root);
  if (alts.length === 1 && alts[0] !== resolved) {
    return kindOf(alts[0], root);
  }
  if (alts.length > 1) {
    return alts.some(s => s.type === 'string') ? 'text-or-json' : 'json';
  }
  switch (resolved.type) {
    case 'string':
    case 'integer':
    case 'number':
    case 'boolean':
      return resolved.type;
    default:
      return 'json';
  }
}

/** The fields of a parameters schema, required ones first. */
export function fieldsOf(schema: IJSONSchema | null | undefined): IField[] {
  if (!schema || typeof schema !== 'object') {
    return [];
  }
  const root = schema;
  const object = resolve(schema, root);
  const required = new Set(object.required ?? []);
  const fields = Object.entries(object.properties ?? {}).map(
    ([name, raw]): IField => {
      const prop = resolve(raw, root);
      return {
        name,
        label: prop.title ?? name,
        kind: kindOf(prop, root),
        required: required.has(name),
        description: prop.description ?? '',
        options: Array.isArray(prop.enum) ? prop.enum : [],
        default: prop.default
      };
    }
  );
  return [
    ...fields.filter(f => f.required),
    ...fields.filter(f => !f.required)
  ];
}

/** Form values showing `parameters` (or the fields' defaults). */
export function valuesOf(
  fields: readonly IField[],
  parameters: JSONObject = {}
): FieldValues {
  const values: FieldValues = {};
  for (const field of fields) {
    const value =
      field.name in parameters ? parameters[field.name] : field.default;
    values[field.name] = toText(field, value);
  }
  return values;
}

function toText(field: IField, value: JSONValue | undefined): string | boolean {
  if (field.kind === 'boolean') {
    return value === true;
  }
  if (value === undefined || value === null) {
    return '';
  }
  if (field.kind === 'enum') {
    return JSON.stringify(value);
  }
  if (typeof value === 'string' && field.kind !== 'json') {
    return value;
  }
  if (typeof value === 'number' && field.kind !== 'json') {
    return String(value);
  }
  return JSON.stringify(value);
}

/** Read the form into a `parameters` object, or say which field is wrong. */
export function parametersOf(
  fields: readonly IField[],
  values: FieldValues
): ParametersResult {
  const parameters: JSONObject = {};
  for (const field of fields) {
    const raw = values[field.name];
    if (field.kind === 'boolean') {
      if (raw === true || field.default === true || field.required) {
        parameters[field.name] = raw === true;
      }
      continue;
    }
    const text = typeof raw === 'string' ? raw : '';
    if (text.trim() === '') {
      if (field.required) {
        return { ok: false, error: `${field.label} is required.` };
      }
      continue;
    }
    const parsed = parseField(field, text);
    if ('error' in parsed) {
      return { ok: false, error: parsed.error };
    }
    parameters[field.name] = parsed.value;
  }
  return { ok: true, parameters };
}

function parseField(
  field: IField,
  text: string
): { value: JSONValue } | { error: string } {
  const trimmed = text.trim();
  switch (field.kind) {
    case 'string':
      return { value: text };
    case 'integer':
    case 'number': {
      const value = Number(trimmed);
      if (!Number.isFinite(value)) {
        return { error: `${field.label} must be a number.` };
      }
      if (field.kind === 'integer' && !Number.isInteger(value)) {
        return { error: `${field.label} must be a whole number.` };
      }
      return { value };
    }
    case 'text-or-json':
      if (!/^[[{"]/.test(trimmed)) {
        return { value: text };
      }
      return parseJSON(field, trimmed);
    default:
      return parseJSON(field, trimmed);
  }
}

function parseJSON(
  field: IField,
  text: string
): { value: JSONValue } | { error: string } {
  try {
    return { value: JSON.parse(text) as JSONValue };
  } catch (reason) {
    return {
      error: `${field.label} is not valid JSON: ${(reason as Error).message}`
    };
  }
}

/** Parse the raw JSON mode's text: it must be a JSON object. */
export function parseRawParameters(text: string): ParametersResult {
  if (text.trim() === '') {
    return { ok: true, parameters: {} };
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (reason) {
    return {
      ok: false,
      error: `Parameters are not valid JSON: ${(reason as Error).message}`
    };
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) {
    return { ok: false, error: 'Parameters must be a JSON object.' };
  }
  return { ok: true, parameters: value as JSONObject };
}

/** Keys of `parameters` that no field shows (the form would drop them). */
export function unknownKeys(
  fields: readonly IField[],
  parameters: JSONObject
): string[] {
  const names = new Set(fields.map(f => f.name));
  return Object.keys(parameters).filter(key => !names.has(key));
}

/** Tags typed as comma- or space-separated words. */
export function parseTags(text: string): string[] {
  const tags = text
    .split(/[,\s]+/)
    .map(t => t.trim())
    .filter(Boolean);
  return [...new Set(tags)];
}
