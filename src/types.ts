/**
 * REST and event shapes of the `/tasks` API, mirroring `jupyter_tasks/models.py`.
 *
 * Every other module imports these; nothing here depends on JupyterLab.
 */

/** Where a task is in its life; the three last are final. */
export type TaskStatus =
  'created' | 'running' | 'completed' | 'failed' | 'cancelled';

/** All statuses, in lifecycle order. */
export const TASK_STATUSES: readonly TaskStatus[] = [
  'created',
  'running',
  'completed',
  'failed',
  'cancelled'
];

/** The statuses a task never leaves. */
export const FINISHED_STATUSES: ReadonlySet<TaskStatus> = new Set<TaskStatus>([
  'completed',
  'failed',
  'cancelled'
]);

/** True when `status` is final. */
export function isFinished(status: TaskStatus): boolean {
  return FINISHED_STATUSES.has(status);
}

/** A JSON value as the server sends it. */
export type JSONValue =
  string | number | boolean | null | JSONValue[] | { [key: string]: JSONValue };

/** A JSON object. */
export type JSONObject = { [key: string]: JSONValue };

/** What a client submits (`POST /tasks`). */
export interface ITaskRequest {
  task_type: string;
  description: string;
  parameters?: JSONObject;
  /** 1..10; 10 runs first. */
  priority?: number;
  timeout_seconds?: number | null;
  /** 0..10. */
  max_retries?: number;
  tags?: string[];
}

/** Why a task failed. */
export interface ITaskError {
  type: string;
  message: string;
  traceback: string | null;
}

/** A task as the server reports it: the request plus its state. */
export interface ITask {
  task_id: string;
  task_type: string;
  description: string;
  parameters: JSONObject;
  priority: number;
  timeout_seconds: number | null;
  max_retries: number;
  tags: string[];
  status: TaskStatus;
  group: string | null;
  attempt: number;
  /** ISO 8601 UTC. */
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  /** 0..1 or null when the task reports none. */
  progress: number | null;
  message: string | null;
  error: ITaskError | null;
}

/** `GET /tasks` query. */
export interface ITaskQuery {
  status?: TaskStatus[];
  task_type?: string;
  group?: string;
  tag?: string;
  limit?: number;
  cursor?: string;
}

/** `GET /tasks` answer: newest first, `next` is the cursor of the following page. */
export interface ITaskPage {
  tasks: ITask[];
  next: string | null;
}

/** A JSON Schema, as much of it as the submit form reads. */
export interface IJSONSchema {
  type?: string | string[];
  title?: string;
  description?: string;
  properties?: { [name: string]: IJSONSchema };
  required?: string[];
  items?: IJSONSchema;
  anyOf?: IJSONSchema[];
  oneOf?: IJSONSchema[];
  enum?: JSONValue[];
  default?: JSONValue;
  minimum?: number;
  maximum?: number;
  [key: string]: unknown;
}

/** One entry of `GET /tasks/types`. */
export interface ITaskType {
  name: string;
  description: string;
  parameters_schema: IJSONSchema;
}

/** `GET /tasks/types` answer. */
export interface ITaskTypes {
  types: ITaskType[];
}

/** `GET /tasks/{id}/result` answer (JSON preview of the result). */
export interface IResultPreview {
  type: string;
  repr: string;
  /** Present only when the result is JSON-serialisable. */
  value?: JSONValue;
}

/** `GET /tasks/{id}/logs` answer, from the text body and the `X-Next-Offset` header. */
export interface ILogChunk {
  text: string;
  nextOffset: number;
}

/** `GET /tasks/health` answer. */
export interface IHealth {
  healthy: boolean;
  accepting: boolean;
  queued: number;
  running: number;
  workers: number;
}

/** First message on `/tasks/events`: the unfinished tasks. */
export interface ISnapshotEvent {
  event: 'snapshot';
  tasks: ITask[];
}

/** A live message on `/tasks/events`. */
export interface ITaskEvent {
  event: 'transition' | 'progress' | 'deleted';
  seq: number;
  task_id: string;
  status?: TaskStatus;
  progress?: number | null;
  message?: string | null;
  task?: ITask | null;
}

/** Anything `/tasks/events` sends. */
export type EventMessage = ISnapshotEvent | ITaskEvent;
