import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { requestAPI } from './handler';

/** What a model needs from the HTTP layer (tests pass a fake). */
export type Request = <T>(endPoint: string, init?: RequestInit) => Promise<T>;

export namespace PolledModel {
  export interface IOptions {
    request?: Request;
    /** Poll interval when everything answers, ms. */
    interval?: number;
    /** Longest interval after repeated failures (the poll backs off), ms. */
    maxInterval?: number;
  }
}

/**
 * State the lab shows from the server extension, refreshed by a `Poll`.
 *
 * The poll backs off while requests fail, and stands by while the section is hidden
 * (`active` false) or the browser tab is. A failed poll is kept in `error` for the view
 * to show; actions reject with the server's message and refresh either way, so the view
 * shows the outcome (or what changed meanwhile).
 */
export abstract class PolledModel {
  constructor(name: string, options: PolledModel.IOptions = {}) {
    this.request = options.request ?? requestAPI;
    this._poll = new Poll({
      auto: false,
      factory: () => this._tick(),
      frequency: {
        interval: options.interval ?? 5000,
        backoff: true,
        max: options.maxInterval ?? 60000
      },
      name,
      standby: () => (this._active ? 'when-hidden' : true)
    });
  }

  /** Emitted whenever anything the views show changes. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** The last polling failure, null once a poll succeeds again. */
  get error(): string | null {
    return this._error;
  }

  /** Whether at least one poll has answered. */
  get loaded(): boolean {
    return this._loaded;
  }

  /** The section is shown: poll (and refresh now); hidden: stand by. */
  get active(): boolean {
    return this._active;
  }
  set active(value: boolean) {
    if (value === this._active) {
      return;
    }
    this._active = value;
    if (value) {
      void this.refresh();
    }
  }

  get isDisposed(): boolean {
    return this._poll.isDisposed;
  }

  /** Start polling (the first tick runs at once). */
  async start(): Promise<void> {
    await this._poll.start();
  }

  /** Poll now rather than at the next tick. */
  async refresh(): Promise<void> {
    await this._poll.refresh();
    await this._poll.tick;
  }

  dispose(): void {
    this._poll.dispose();
    Signal.clearData(this);
  }

  /** Fetch and keep the state; a rejection counts as a failed poll. */
  protected abstract load(): Promise<void>;

  /** After a successful poll has been announced (e.g. to tell of news in it). */
  protected announced(): void {
    // nothing by default
  }

  /** `init` sent to `endPoint`, then a refresh whatever the outcome. */
  protected async act<T = unknown>(endPoint: string, init: RequestInit): Promise<T> {
    try {
      return await this.request<T>(endPoint, init);
    } finally {
      void this.refresh().catch(() => undefined);
    }
  }

  /** POST `body` as JSON to `endPoint`, then refresh. */
  protected post<T = unknown>(endPoint: string, body: object = {}): Promise<T> {
    return this.act<T>(endPoint, { method: 'POST', body: JSON.stringify(body) });
  }

  protected readonly request: Request;

  private async _tick(): Promise<void> {
    try {
      await this.load();
    } catch (error) {
      this._error = (error as Error).message || String(error);
      this._changed.emit();
      throw error; // a rejected tick makes the poll back off
    }
    this._error = null;
    this._loaded = true;
    this._changed.emit();
    this.announced();
  }

  private _active = true;
  private _changed = new Signal<this, void>(this);
  private _error: string | null = null;
  private _loaded = false;
  private _poll: Poll;
}
