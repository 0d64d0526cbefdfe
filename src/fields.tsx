/**
 * Form inputs of the submit dialog: one labelled row per parameter.
 */
import React from 'react';

import type { IField } from './schema';

/** Hints for the built-in types' parameters. */
const PLACEHOLDERS: Record<string, string> = {
  callable: 'package.module:function',
  command: 'program arg1 arg2, or ["program", "arg1"]',
  args: '[1, 2]',
  kwargs: '{"name": "value"}',
  env: '{"NAME": "value"}'
};

/** A label, an input and an optional help line. */
export function FormRow(props: {
  label: string;
  id: string;
  help?: string;
  children: React.ReactNode;
}): JSX.Element {
  return (
    <div className="jp-TasksForm-row">
      <label htmlFor={props.id}>{props.label}</label>
      {props.children}
      {props.help && <small className="jp-TasksForm-help">{props.help}</small>}
    </div>
  );
}

/** The input for one parameter, chosen by the field's kind. */
export function ParameterField(props: {
  field: IField;
  value: string | boolean | undefined;
  onChange: (value: string | boolean) => void;
}): JSX.Element {
  const { field, value, onChange } = props;
  const id = `jp-tasks-param-${field.name}`;
  const text = typeof value === 'string' ? value : '';
  let input: JSX.Element;
  switch (field.kind) {
    case 'boolean':
      input = (
        <input
          id={id}
          type="checkbox"
          checked={value === true}
          onChange={event => onChange(event.target.checked)}
        />
      );
      break;
    case 'enum':
      input = (
        <select
          id={id}
          className="jp-mod-styled jp-TasksInput"
          value={text}
          onChange={event => onChange(event.target.value)}
        >
          {!field.required && <option value="">{'\u2014'}</option>}
          {field.options.map(option => (
            <option key={JSON.stringify(option)} value={JSON.stringify(option)}>
              {typeof option === 'string' ? option : JSON.stringify(option)}
            </option>
          ))}
        </select>
      );
      break;
    case 'json':
      input = (
        <textarea
          id={id}
          className="jp-mod-styled jp-TasksInput"
          rows={2}
          spellCheck={false}
          placeholder={PLACEHOLDERS[field.name] ?? 'JSON'}
          value={text}
          onChange={event => onChange(event.target.value)}
        />
      );
      break;
    default:
      input = (
        <input
          id={id}
          className="jp-mod-styled jp-TasksInput"
          type={
            field.kind === 'integer' || field.kind === 'number'
              ? 'number'
              : 'text'
          }
          required={field.required}
          placeholder={PLACEHOLDERS[field.name] ?? ''}
          value={text}
          onChange={event => onChange(event.target.value)}
        />
      );
  }
  return (
    <FormRow
      label={`${field.label}${field.required ? ' *' : ''}`}
      id={id}
      help={field.description}
    >
      {input}
    </FormRow>
  );
}
