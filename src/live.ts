/**
 * Keeps a TaskStore in step with the server: the `/tasks/events` socket first
 * (a snapshot, then `seq`-numbered messages), reconnecting with backoff and
 * resynchronising over REST; polling `GET /tasks` only while the socket is down.
 */
import { ISignal, Signal } from '@lumino/signaling';

import type { TaskStore } from './store';
import type {
  EventMessage,
  ITask,
  ITaskEvent,
  ITaskPage,
  ITaskQuery
} from './types';

/** What LiveTasks needs from the service (an interface, so tests can fake it). */
export interface ITasksSource {
  list(query?: ITaskQuery): Promise<ITaskPage>;
  get(taskId: string): Promise<ITask>;
  openEvents(): WebSocket;
}

/**
 * `connecting`: no socket yet (or reconnecting after a short outage);
 * `live`: the socket is open; `polling`: the socket keeps failing, REST polls
 * fill in; `stopped`: disposed.
 */
export type ConnectionState = 'connecting' | 'live' | 'polling' | 'stopped';

/** Timing knobs; the defaults suit a browser. */
export interface ILiveOptions {
  /** Tasks per `GET /tasks` page. */
  pageSize?: number;
  /** First reconnect delay, doubled each failure up to `maxDelay` (ms). */
  baseDelay?: number;
  maxDelay?: number;
  /** Failed connects in a row before REST polling starts. */
  failuresBeforePolling?: number;
  /** Polling period while the socket is down (ms). */
  pollInterval?: number;
  /** A socket that neither opens nor closes within this is abandoned (ms). */
  connectTimeout?: number;
  /** Least time between two resyncs caused by `seq` gaps (ms). */
  gapResyncInterval?: number;
  /** Random source for jitter, in [0, 1). */
  random?: () => number;
}

/** How many unfinished-but-unlisted tasks one resync fetches one by one. */
const MAX_INDIVIDUAL_REFRESH = 50;

/** The WebSocket close code a browser reports for an abnormal closure. */
const ABNORMAL_CLOSURE = 1006;

/**
 * The reconnect delay after `attempt` failures: exponential, capped, with
 * jitter between half and all of it so that many browsers do not reconnect in
 * step after a server restart.
 */
export function backoffDelay(
  attempt: number,
  baseDelay: number,
  maxDelay: number,
  random: () => number = Math.random
): number {
  const ceiling = Math.min(maxDelay, baseDelay * 2 ** Math.max(0, attempt));
  return Math.round(ceiling * (0.5 + random() / 2));
}

/** Parse one socket message; null when it is not one we understand. */
export function parseMessage(data: unknown): EventMessage | null {
  if (typeof data !== 'string') {
    return null;
  }
  try {
    const message = JSON.parse(data) as EventMessage;
    if (
      message &&
      message.event === 'snapshot' &&
      Array.isArray(message.tasks)
    ) {
      return message;
    }
    if (
      message &&
      (message.event === 'transition' ||
        message.event === 'progress' ||
        message.event === 'deleted') &&
      typeof message.task_id === 'string'
    ) {
      return message;
    }
  } catch {
    // not JSON: ignore
  }
  return null;
}

/** Drives a TaskStore from the server. */
export class LiveTasks {
  constructor(
    readonly source: ITasksSource,
    readonly store: TaskStore,
    options: ILiveOptions = {}
  ) {
    this._options = {
      pageSize: options.pageSize ?? 200,
      baseDelay: options.baseDelay ?? 1000,
      maxDelay: options.maxDelay ?? 30000,
      failuresBeforePolling: options.failuresBeforePolling ?? 2,
      pollInterval: options.pollInterval ?? 5000,
      connectTimeout: options.connectTimeout ?? 10000,
      gapResyncInterval: options.gapResyncInterval ?? 10000,
      random: options.random ?? Math.random
    };
  }

  /** The connection state. */
  get state(): ConnectionState {
    return this._state;
  }

  /** Emitted when `state` or `lastError` changes. */
  get stateChanged(): ISignal<this, ConnectionState> {
    return this._stateChanged;
  }

  /** The last REST failure, or null after a success. */
  get lastError(): Error | null {
    return this._lastError;
  }

  /** True while older pages remain on the server. */
  get hasMore(): boolean {
    return this._cursor !== null;
  }

  /** True once disposed. */
  get isDisposed(): boolean {
    return this._state === 'stopped';
  }

  /** Page size for `GET /tasks`. */
  set pageSize(value: number) {
    this._options.pageSize = Math.max(1, Math.min(1000, Math.round(value)));
  }

  /** Load the first page and open the socket. */
  start(): void {
    if (this._started || this.isDisposed) {
      return;
    }
    this._started = true;
    void this.refresh();
    this._connect();
  }

  /**
   * Resynchronise over REST: the newest page, every unfinished task, and one
   * by one the tasks the store still holds as unfinished that neither listed.
   */
  refresh(): Promise<void> {
    if (!this._refreshing) {
      this._refreshing = this._refresh().finally(() => {
        this._refreshing = null;
      });
    }
    return this._refreshing;
  }

  /** Fetch the next older page. */
  async loadMore(): Promise<void> {
    if (this._cursor === null) {
      return;
    }
    try {
      const page = await this.source.list({
        limit: this._options.pageSize,
        cursor: this._cursor
      });
      this._cursor = page.next;
      this.store.merge(page.tasks, 'rest');
      this._setError(null);
    } catch (reason) {
      this._setError(reason as Error);
      throw reason;
    }
  }

  /** Close the socket and stop every timer. */
  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._setState('stopped');
    this._clearTimers();
    this._stopPolling();
    const socket = this._socket;
    this._socket = null;
    if (socket) {
      socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
      socket.close();
    }
    Signal.clearData(this);
  }

  private async _refresh(): Promise<void> {
    try {
      const [page, active] = await Promise.all([
        this.source.list({ limit: this._options.pageSize }),
        this.source.list({ status: ['created', 'running'], limit: 1000 })
      ]);
      if (this.isDisposed) {
        return;
      }
      if (!this._pagedOnce) {
        this._cursor = page.next;
        this._pagedOnce = true;
      }
      this.store.merge(page.tasks, 'rest');
      this.store.merge(active.tasks, 'rest');
      this.store.loaded = true;
      const listed = new Set(
        [...page.tasks, ...active.tasks].map(t => t.task_id)
      );
      await this._refreshEach(
        this.store.unfinishedIds().filter(id => !listed.has(id))
      );
      this._setError(null);
    } catch (reason) {
      this._setError(reason as Error);
    }
  }

  /** Fetch tasks one by one; forget those the server no longer knows. */
  private async _refreshEach(ids: string[]): Promise<void> {
    const tasks: ITask[] = [];
    await Promise.all(
      ids.slice(0, MAX_INDIVIDUAL_REFRESH).map(async id => {
        try {
          tasks.push(await this.source.get(id));
        } catch (reason) {
          if ((reason as { status?: number }).status === 404) {
            this.store.remove(id);
          }
        }
      })
    );
    if (!this.isDisposed) {
      this.store.merge(tasks, 'rest');
    }
  }

  private _connect(): void {
    if (this.isDisposed) {
      return;
    }
    if (this._state !== 'polling') {
      this._setState('connecting');
    }
    let socket: WebSocket;
    try {
      socket = this.source.openEvents();
    } catch {
      this._onSocketLost(false);
      return;
    }
    this._socket = socket;
    this._lastSeq = null;
    let opened = false;
    this._connectTimer = setTimeout(() => {
      if (!opened && this._socket === socket) {
        socket.onopen = socket.onmessage = socket.onclose = null;
        socket.onerror = null;
        socket.close();
        this._socket = null;
        this._onSocketLost(false);
      }
    }, this._options.connectTimeout);
    socket.onopen = () => {
      opened = true;
      this._clearConnectTimer();
      this._failures = 0;
      this._stopPolling();
      this._setState('live');
    };
    socket.onmessage = (event: MessageEvent) => {
      const message = parseMessage(event.data);
      if (message) {
        this._onMessage(message);
      }
    };
    socket.onclose = (event: CloseEvent) => {
      if (this._socket !== socket) {
        return;
      }
      this._socket = null;
      this._clearConnectTimer();
      this._onSocketLost(opened && event.code !== ABNORMAL_CLOSURE);
    };
  }

  private _onMessage(message: EventMessage): void {
    if (message.event === 'snapshot') {
      const reconnect = this._hadSnapshot;
      this._hadSnapshot = true;
      this._lastSeq = null;
      const stale = this.store.applySnapshot(message.tasks);
      if (reconnect) {
        // Tasks may have come and gone while the socket was down.
        void this.refresh();
      } else if (stale.length) {
        void this._refreshEach(stale);
      }
      return;
    }
    if (this._checkSeq(message)) {
      this.store.applyEvent(message);
    }
  }

  /**
   * False for a repeat (already applied). On a gap (a message may be lost), resync the unfinished
   * tasks, at most once per `gapResyncInterval`. Every message carries the
   * whole task, so a gap only matters for tasks that get no later message.
   */
  private _checkSeq(message: ITaskEvent): boolean {
    const seq = message.seq;
    if (typeof seq !== 'number') {
      return true;
    }
    const last = this._lastSeq;
    if (last !== null && seq <= last) {
      return false;
    }
    this._lastSeq = seq;
    if (last !== null && seq > last + 1 && this._gapTimer === null) {
      const wait = Math.max(
        0,
        this._lastGapResync + this._options.gapResyncInterval - Date.now()
      );
      this._gapTimer = setTimeout(() => {
        this._gapTimer = null;
        this._lastGapResync = Date.now();
        void this.refresh();
      }, wait);
    }
    return true;
  }

  /** The socket is gone: reconnect after a backoff; poll while it stays down. */
  private _onSocketLost(wasHealthy: boolean): void {
    if (this.isDisposed) {
      return;
    }
    this._failures = wasHealthy ? 0 : this._failures + 1;
    if (this._failures >= this._options.failuresBeforePolling) {
      this._startPolling();
    } else if (this._state !== 'polling') {
      this._setState('connecting');
    }
    const delay = backoffDelay(
      this._failures,
      this._options.baseDelay,
      this._options.maxDelay,
      this._options.random
    );
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      this._connect();
    }, delay);
  }

  private _startPolling(): void {
    this._setState('polling');
    if (this._pollTimer !== null) {
      return;
    }
    void this.refresh();
    this._pollTimer = setInterval(() => {
      void this.refresh();
    }, this._options.pollInterval);
  }

  private _stopPolling(): void {
    if (this._pollTimer !== null) {
      clearInterval(this._pollTimer);
      this._pollTimer = null;
    }
  }

  private _clearConnectTimer(): void {
    if (this._connectTimer !== null) {
      clearTimeout(this._connectTimer);
      this._connectTimer = null;
    }
  }

  private _clearTimers(): void {
    this._clearConnectTimer();
    for (const timer of [this._reconnectTimer, this._gapTimer]) {
      if (timer !== null) {
        clearTimeout(timer);
      }
    }
    this._reconnectTimer = this._gapTimer = null;
  }

  private _setState(state: ConnectionState): void {
    if (state !== this._state) {
      this._state = state;
      this._stateChanged.emit(state);
    }
  }

  private _setError(error: Error | null): void {
    const changed =
      (error?.message ?? null) !== (this._lastError?.message ?? null);
    this._lastError = error;
    if (changed) {
      this._stateChanged.emit(this._state);
    }
  }

  private _options: Required<ILiveOptions>;
  private _state: ConnectionState = 'connecting';
  private _stateChanged = new Signal<this, ConnectionState>(this);
  private _started = false;
  private _socket: WebSocket | null = null;
  private _failures = 0;
  private _lastSeq: number | null = null;
  private _hadSnapshot = false;
  private _cursor: string | null = null;
  private _pagedOnce = false;
  private _lastError: Error | null = null;
  private _refreshing: Promise<void> | null = null;
  private _lastGapResync = 0;
  private _connectTimer: ReturnType<typeof setTimeout> | null = null;
  private _reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private _gapTimer: ReturnType<typeof setTimeout> | null = null;
  private _pollTimer: ReturnType<typeof setInterval> | null = null;
}
