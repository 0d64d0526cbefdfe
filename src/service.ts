/**
 * The one client of the `/tasks` REST API and of the `/tasks/events` socket.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import type {
  IHealth,
  ILogChunk,
  IResultPreview,
  ITask,
  ITaskPage,
  ITaskQuery,
  ITaskRequest,
  ITaskType,
  ITaskTypes
} from './types';

/** A failed call, carrying the HTTP status and the server's own message. */
export class TasksError extends Error {
  constructor(
    message: string,
    readonly status: number
  ) {
    super(message);
    this.name = 'TasksError';
  }

  /** True for `404 Not Found`. */
  get notFound(): boolean {
    return this.status === 404;
  }
}

/** Read the server's message out of an error response (`{"message": ...}`). */
async function errorFrom(response: Response): Promise<TasksError> {
  let message = response.statusText || `HTTP ${response.status}`;
  try {
    const text = await response.text();
    try {
      const body = JSON.parse(text) as { message?: unknown; reason?: unknown };
      if (typeof body.message === 'string' && body.message) {
        message = body.message;
      } else if (typeof body.reason === 'string' && body.reason) {
        message = body.reason;
      }
    } catch {
      if (text.trim() && text.length < 500) {
        message = text.trim();
      }
    }
  } catch {
    // keep the status text
  }
  return new TasksError(message, response.status);
}

/** REST calls under `{base_url}tasks`, typed after the server's models. */
export class TasksService {
  constructor(settings?: ServerConnection.ISettings) {
    this.serverSettings = settings ?? ServerConnection.makeSettings();
  }

  readonly serverSettings: ServerConnection.ISettings;

  /** `POST /tasks`. */
  submit(request: ITaskRequest): Promise<ITask> {
    return this._json<ITask>('', { method: 'POST', body: request });
  }

  /** `GET /tasks`, newest first. */
  list(query: ITaskQuery = {}): Promise<ITaskPage> {
    return this._json<ITaskPage>('', { query: queryOf(query) });
  }

  /** `GET /tasks/{id}`. */
  get(taskId: string): Promise<ITask> {
    return this._json<ITask>(idPath(taskId));
  }

  /** `POST /tasks/{id}/cancel`. */
  cancel(taskId: string): Promise<ITask> {
    return this._json<ITask>(idPath(taskId, 'cancel'), { method: 'POST' });
  }

  /** `POST /tasks/{id}/rerun`: a new task with the same request. */
  rerun(taskId: string): Promise<ITask> {
    return this._json<ITask>(idPath(taskId, 'rerun'), { method: 'POST' });
  }

  /** `DELETE /tasks/{id}`. */
  async remove(taskId: string): Promise<void> {
    await this._fetch(idPath(taskId), { method: 'DELETE' });
  }

  /** `GET /tasks/{id}/result`: the JSON preview. */
  result(taskId: string): Promise<IResultPreview> {
    return this._json<IResultPreview>(idPath(taskId, 'result'));
  }

  /** `GET /tasks/{id}/logs?offset=`: text from `offset` and where to go on. */
  async logs(taskId: string, offset = 0): Promise<ILogChunk> {
    const response = await this._fetch(idPath(taskId, 'logs'), {
      query: [['offset', String(offset)]]
    });
    const text = await response.text();
    const header = Number(response.headers.get('X-Next-Offset'));
    const nextOffset = Number.isFinite(header)
      ? header
      : offset + new TextEncoder().encode(text).length;
    return { text, nextOffset };
  }

  /** `GET /tasks/types`. */
  async types(): Promise<ITaskType[]> {
    const body = await this._json<ITaskTypes>('types');
    return body.types;
  }

  /** `GET /tasks/health`; a 503 still carries the same body. */
  async health(): Promise<IHealth> {
    const url = this._url('health');
    const response = await ServerConnection.makeRequest(
      url,
      {},
      this.serverSettings
    );
    if (response.ok || response.status === 503) {
      return (await response.json()) as IHealth;
    }
    throw await errorFrom(response);
  }

  /** Open `/tasks/events`, with the token when the settings ask for it. */
  openEvents(): WebSocket {
    const settings = this.serverSettings;
    let url = URLExt.join(settings.wsUrl, 'tasks', 'events');
    if (settings.appendToken && settings.token) {
      url += `?token=${encodeURIComponent(settings.token)}`;
    }
    return new settings.WebSocket(url);
  }

  private _url(path: string, query: [string, string][] = []): string {
    const base = URLExt.join(this.serverSettings.baseUrl, 'tasks', path);
    if (query.length === 0) {
      return base;
    }
    const search = query
      .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)
      .join('&');
    return `${base}?${search}`;
  }

  private async _fetch(
    path: string,
    options: IRequestOptions = {}
  ): Promise<Response> {
    const init: RequestInit = { method: options.method ?? 'GET' };
    if (options.body !== undefined) {
      init.body = JSON.stringify(options.body);
      init.headers = { 'Content-Type': 'application/json' };
    }
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(
        this._url(path, options.query),
        init,
        this.serverSettings
      );
    } catch (reason) {
      throw new TasksError(
        `Cannot reach the server: ${(reason as Error).message ?? reason}`,
        0
      );
    }
    if (!response.ok) {
      throw await errorFrom(response);
    }
    return response;
  }

  private async _json<T>(
    path: string,
    options: IRequestOptions = {}
  ): Promise<T> {
    const response = await this._fetch(path, options);
    return (await response.json()) as T;
  }
}

/** How a request to a ``/tasks`` route is made. */
interface IRequestOptions {
  method?: string;
  body?: unknown;
  query?: [string, string][];
}

/** The path of one task's route. */
function idPath(taskId: string, action?: string): string {
  const id = encodeURIComponent(taskId);
  return action ? `${id}/${action}` : id;
}

/** `ITaskQuery` as repeated query parameters. */
function queryOf(query: ITaskQuery): [string, string][] {
  const pairs: [string, string][] = [];
  for (const status of query.status ?? []) {
    pairs.push(['status', status]);
  }
  for (const key of ['task_type', 'group', 'tag', 'cursor'] as const) {
    const value = query[key];
    if (value) {
      pairs.push([key, value]);
    }
  }
  if (query.limit !== undefined) {
    pairs.push(['limit', String(query.limit)]);
  }
  return pairs;
}
