/**
 * The submit dialog: a task type (from `GET /tasks/types`), its parameters
 * (a form built from the type's schema, or raw JSON), description, priority,
 * timeout, retries and tags. The server's validation message shows inline
 * and the dialog stays open until the task is accepted.
 */
import { Dialog } from '@jupyterlab/apputils';
import { ReactWidget } from '@jupyterlab/ui-components';
import React from 'react';

import { FormRow as Row, ParameterField } from './fields';
import {
  FieldValues,
  fieldsOf,
  IField,
  parametersOf,
  parseRawParameters,
  parseTags,
  unknownKeys,
  valuesOf
} from './schema';
import type { TasksService } from './service';
import type { ITask, ITaskRequest, ITaskType, JSONObject } from './types';

/** Types that only a kernel can submit (they carry pickled code). */
const KERNEL_ONLY_TYPES = new Set(['callable']);

/** What the form holds. */
interface IFormState {
  types: ITaskType[] | null;
  typesError: string | null;
  taskType: string;
  mode: 'form' | 'json';
  values: FieldValues;
  raw: string;
  description: string;
  priority: string;
  timeout: string;
  retries: string;
  tags: string;
  error: string | null;
  busy: boolean;
}

/** Initial values of the dialog. */
export interface ISubmitDefaults {
  task_type?: string;
  description?: string;
  parameters?: JSONObject;
  priority?: number;
  timeout_seconds?: number | null;
  max_retries?: number;
  tags?: string[];
}

/** The dialog's body: the form, and the call that submits it. */
export class SubmitForm extends ReactWidget {
  constructor(
    private readonly _service: TasksService,
    defaults: ISubmitDefaults = {}
  ) {
    super();
    this.addClass('jp-TasksSubmitForm');
    this._state = {
      types: null,
      typesError: null,
      taskType: defaults.task_type ?? '',
      mode: 'form',
      values: {},
      raw: JSON.stringify(defaults.parameters ?? {}, null, 2),
      description: defaults.description ?? '',
      priority: String(defaults.priority ?? 1),
      timeout:
        defaults.timeout_seconds === undefined ||
        defaults.timeout_seconds === null
          ? ''
          : String(defaults.timeout_seconds),
      retries: String(defaults.max_retries ?? 0),
      tags: (defaults.tags ?? []).join(', '),
      error: null,
      busy: false
    };
    this._defaults = defaults.parameters ?? {};
    void this._loadTypes();
  }

  /** Validate and `POST /tasks`; null (with an inline message) on any error. */
  async submit(): Promise<ITask | null> {
    if (this._state.busy) {
      return null;
    }
    const request = this._request();
    if (typeof request === 'string') {
      this._set({ error: request });
      return null;
    }
    this._set({ busy: true, error: null });
    try {
      const task = await this._service.submit(request);
      this._set({ busy: false });
      return task;
    } catch (reason) {
      this._set({ busy: false, error: (reason as Error).message });
      return null;
    }
  }

  protected render(): JSX.Element {
    const s = this._state;
    const type = s.types?.find(t => t.name === s.taskType);
    const fields = this._fields();
    return (
      <form
        className="jp-TasksForm"
        aria-label="Submit a task"
        onSubmit={event => event.preventDefault()}
      >
        <Row label="Task type" id="jp-tasks-type">
          <select
            id="jp-tasks-type"
            className="jp-mod-styled jp-TasksInput"
            value={s.taskType}
            disabled={!s.types}
            onChange={event => this._setType(event.target.value)}
          >
            {!s.types && <option value="">Loading{'\u2026'}</option>}
            {s.types?.map(t => (
              <option
                key={t.name}
                value={t.name}
                disabled={KERNEL_ONLY_TYPES.has(t.name)}
              >
                {KERNEL_ONLY_TYPES.has(t.name)
                  ? `${t.name} (from a kernel only)`
                  : t.name}
              </option>
            ))}
          </select>
        </Row>
        {s.typesError && (
          <p className="jp-TasksForm-error" role="alert">
            {s.typesError}
          </p>
        )}
        {type?.description && (
          <p className="jp-TasksForm-help">{type.description}</p>
        )}
        <Row label="Description" id="jp-tasks-description">
          <input
            id="jp-tasks-description"
            className="jp-mod-styled jp-TasksInput"
            value={s.description}
            required
            placeholder="What this task does"
            onChange={event => this._set({ description: event.target.value })}
          />
        </Row>
        <fieldset className="jp-TasksForm-parameters">
          <legend>
            Parameters
            <span
              className="jp-TasksForm-modes"
              role="radiogroup"
              aria-label="Parameters editor"
            >
              <label>
                <input
                  type="radio"
                  name="jp-tasks-mode"
                  checked={s.mode === 'form'}
                  onChange={() => this._setMode('form')}
                />
                Form
              </label>
              <label>
                <input
                  type="radio"
                  name="jp-tasks-mode"
                  checked={s.mode === 'json'}
                  onChange={() => this._setMode('json')}
                />
                JSON
              </label>
            </span>
          </legend>
          {s.mode === 'json' ? (
            <textarea
              className="jp-mod-styled jp-TasksInput jp-TasksForm-raw"
              aria-label="Parameters as JSON"
              spellCheck={false}
              rows={5}
              value={s.raw}
              onChange={event => this._set({ raw: event.target.value })}
            />
          ) : fields.length === 0 ? (
            <p className="jp-TasksForm-help">This type takes no parameters.</p>
          ) : (
            fields.map(field => (
              <ParameterField
                key={field.name}
                field={field}
                value={s.values[field.name]}
                onChange={value =>
                  this._set({
                    values: { ...this._state.values, [field.name]: value }
                  })
                }
              />
            ))
          )}
        </fieldset>
        <div className="jp-TasksForm-grid">
          <Row label="Priority (1-10)" id="jp-tasks-priority">
            <input
              id="jp-tasks-priority"
              className="jp-mod-styled jp-TasksInput"
              type="number"
              min={1}
              max={10}
              step={1}
              value={s.priority}
              onChange={event => this._set({ priority: event.target.value })}
            />
          </Row>
          <Row label="Timeout (s)" id="jp-tasks-timeout">
            <input
              id="jp-tasks-timeout"
              className="jp-mod-styled jp-TasksInput"
              type="number"
              min={1}
              step={1}
              placeholder="default"
              value={s.timeout}
              onChange={event => this._set({ timeout: event.target.value })}
            />
          </Row>
          <Row label="Retries (0-10)" id="jp-tasks-retries">
            <input
              id="jp-tasks-retries"
              className="jp-mod-styled jp-TasksInput"
              type="number"
              min={0}
              max={10}
              step={1}
              value={s.retries}
              onChange={event => this._set({ retries: event.target.value })}
            />
          </Row>
        </div>
        <Row label="Tags" id="jp-tasks-tags">
          <input
            id="jp-tasks-tags"
            className="jp-mod-styled jp-TasksInput"
            placeholder="comma separated"
            value={s.tags}
            onChange={event => this._set({ tags: event.target.value })}
          />
        </Row>
        <div className="jp-TasksForm-status" aria-live="polite">
          {s.error && (
            <p className="jp-TasksForm-error" role="alert">
              {s.error}
            </p>
          )}
          {s.busy && <p className="jp-TasksForm-help">Submitting{'\u2026'}</p>}
        </div>
      </form>
    );
  }

  private async _loadTypes(): Promise<void> {
    try {
      const types = await this._service.types();
      const usable = types.filter(t => !KERNEL_ONLY_TYPES.has(t.name));
      const current = usable.find(t => t.name === this._state.taskType);
      const taskType = current?.name ?? usable[0]?.name ?? '';
      this._set({
        types,
        typesError: usable.length
          ? null
          : 'This server allows no task type that can be submitted here.'
      });
      this._setType(taskType, this._defaults);
    } catch (reason) {
      this._set({
        types: [],
        typesError: `Could not load task types: ${(reason as Error).message}`
      });
    }
  }

  private _fields(): IField[] {
    const type = this._state.types?.find(t => t.name === this._state.taskType);
    return fieldsOf(type?.parameters_schema);
  }

  private _setType(taskType: string, parameters: JSONObject = {}): void {
    const type = this._state.types?.find(t => t.name === taskType);
    const fields = fieldsOf(type?.parameters_schema);
    const mode = unknownKeys(fields, parameters).length
      ? 'json'
      : this._state.mode;
    this._set({
      taskType,
      mode,
      values: valuesOf(fields, parameters),
      raw: JSON.stringify(parameters, null, 2),
      error: null
    });
  }

  /** Switch editors, carrying the parameters across when they parse. */
  private _setMode(mode: 'form' | 'json'): void {
    const s = this._state;
    if (mode === s.mode) {
      return;
    }
    const fields = this._fields();
    if (mode === 'json') {
      const read = parametersOf(fields, s.values);
      this._set({
        mode,
        raw: read.ok ? JSON.stringify(read.parameters, null, 2) : s.raw,
        error: null
      });
      return;
    }
    const read = parseRawParameters(s.raw);
    if (!read.ok) {
      this._set({ error: read.error });
      return;
    }
    const extra = unknownKeys(fields, read.parameters);
    if (extra.length) {
      this._set({
        error: `The form has no field for ${extra.join(', ')}; edit them as JSON.`
      });
      return;
    }
    this._set({ mode, values: valuesOf(fields, read.parameters), error: null });
  }

  /** The request, or what is wrong with the form. */
  private _request(): ITaskRequest | string {
    const s = this._state;
    if (!s.taskType) {
      return 'Choose a task type.';
    }
    if (!s.description.trim()) {
      return 'Description is required.';
    }
    const read =
      s.mode === 'json'
        ? parseRawParameters(s.raw)
        : parametersOf(this._fields(), s.values);
    if (!read.ok) {
      return read.error;
    }
    const priority = Number(s.priority);
    if (!Number.isInteger(priority) || priority < 1 || priority > 10) {
      return 'Priority must be a whole number from 1 to 10.';
    }
    const retries = Number(s.retries || '0');
    if (!Number.isInteger(retries) || retries < 0 || retries > 10) {
      return 'Retries must be a whole number from 0 to 10.';
    }
    const request: ITaskRequest = {
      task_type: s.taskType,
      description: s.description.trim(),
      parameters: read.parameters,
      priority,
      max_retries: retries,
      tags: parseTags(s.tags)
    };
    if (s.timeout.trim()) {
      const timeout = Number(s.timeout);
      if (!Number.isInteger(timeout) || timeout <= 0) {
        return 'Timeout must be a whole number of seconds above 0.';
      }
      request.timeout_seconds = timeout;
    }
    return request;
  }

  private _set(patch: Partial<IFormState>): void {
    this._state = { ...this._state, ...patch };
    this.update();
  }

  private _state: IFormState;
  private _defaults: JSONObject;
}

/**
 * A dialog whose accept button submits the form and closes only when the
 * server has accepted the task.
 */
class SubmitDialog extends Dialog<ITask | null> {
  constructor(private readonly _form: SubmitForm) {
    super({
      title: 'Submit Task',
      body: _form,
      buttons: [
        Dialog.cancelButton(),
        Dialog.okButton({ label: 'Submit', ariaLabel: 'Submit task' })
      ],
      focusNodeSelector: '#jp-tasks-description'
    });
    this.addClass('jp-TasksSubmitDialog');
  }

  override resolve(index?: number): void {
    // The accept button is the last one, and the default.
    if (index !== undefined && index !== 1) {
      super.resolve(index);
      return;
    }
    if (this._task) {
      super.resolve(1);
      return;
    }
    void this._form.submit().then(task => {
      if (task && !this.isDisposed) {
        this._task = task;
        super.resolve(1);
      }
    });
  }

  /** The task the server accepted. */
  get task(): ITask | null {
    return this._task;
  }

  private _task: ITask | null = null;
}

/** Open the dialog; the accepted task, or null when cancelled. */
export async function openSubmitDialog(
  service: TasksService,
  defaults?: ISubmitDefaults
): Promise<ITask | null> {
  const dialog = new SubmitDialog(new SubmitForm(service, defaults));
  const result = await dialog.launch();
  return result.button.accept ? dialog.task : null;
}
