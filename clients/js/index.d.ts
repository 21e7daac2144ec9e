// Types of @sidecast/client (index.js). Hand-written: the package ships
// plain ES modules and no build step.

/** What the client is doing. */
export type State = 'connecting' | 'open' | 'reconnecting' | 'closed';

/** readyState values, as EventSource has them. */
export declare const CONNECTING: 0;
export declare const OPEN: 1;
export declare const CLOSED: 2;

/** An event published by the app. */
export interface SidecastEvent {
  /** The event's id (opaque): where a reopen resumes after it. */
  id: string;
  /** The event's name, or "message" for an unnamed event. */
  type: string;
  /** The payload as published: a string, or JSON text for any other value. */
  data: string;
}

/** `sidecast.reset`: what was missed is unknown; reload the state. */
export interface ResetInfo {
  /** The newest id issued: the stream goes on live from there. */
  id: string;
  /** Why replay was not possible. */
  reason?: string;
  /** The id the client asked to resume after. */
  lastEventId?: string;
}

/** Why the client is reconnecting. */
export type ReconnectReason =
  | 'network'
  | 'unavailable'
  | 'refused'
  | 'token'
  | 'protocol'
  | 'expired'
  | 'disconnect';

/** Details of a state change; which fields are set depends on the state. */
export interface StateInfo {
  /** connecting, open: the id the (re)open resumes after; null: live only. */
  cursor?: string | null;
  /** open: false when there was nothing to resume from, so events before
   * this moment may be missing: load the state now. */
  resumed?: boolean;
  /** open: the browser reconnected by itself (with Last-Event-ID). */
  native?: boolean;
  /** connecting, reconnecting: failures since the last healthy stream. */
  attempt?: number;
  /** reconnecting: what happened; closed: "closed" (close()) or
   * "disconnect" (the app said reconnect: false). */
  reason?: ReconnectReason | 'closed';
  /** reconnecting: ms until the client reopens; null: the browser
   * reconnects by itself after the server's `retry:`. */
  delay?: number | null;
  /** The server's reason text (sidecast.unavailable, sidecast.disconnect,
   * a poll's error body). */
  detail?: string;
  /** reconnecting after a poll answered with an error status. */
  status?: number;
}

export type ErrorKind = 'network' | 'unavailable' | 'refused' | 'token' | 'protocol';

/** What the client reports to `onError`. */
export declare class SidecastError extends Error {
  readonly name: 'SidecastError';
  readonly kind: ErrorKind;
  /** A poll's HTTP status, when it had one. */
  readonly status?: number;
  /** The server's reason text, when it gave one. */
  readonly reason?: string;
}

export interface SubscribeOptions {
  /** The events URL: sidecast's events path ("/events", the default) or
   * an events route; relative or absolute. */
  url?: string;
  /** Topics, each sent as `?topic=`; none for a route that names its own. */
  topics?: string[];
  /** Names of the named events to deliver. Unnamed events always are;
   * EventSource hears a named event only when it listens for its name, so
   * both modes deliver exactly these. */
  events?: string[];
  /** A token, sent as `?token=` (EventSource sends no headers) or, when
   * polling, as `Authorization: Bearer`. Leave out for cookie auth. */
  token?: string;
  /** Gets a token: before the first open when no `token` is given, once on
   * `sidecast.expired` (or a poll's 401), and before a reopen after a
   * refusal. Return nothing when the token travels as a cookie. */
  getToken?: () => string | null | undefined | Promise<string | null | undefined>;
  /** Resume after this id (one you kept), or "earliest" for all history. */
  lastEventId?: string;
  /** Send cookies cross-origin (EventSource withCredentials, fetch
   * credentials: "include"). */
  withCredentials?: boolean;
  /** "auto" (default): EventSource where there is one, else long-poll. */
  mode?: 'auto' | 'sse' | 'poll';
  /** Delays before reopening, ms: full jitter, a draw in
   * [0, min(max, initial * 2^attempt)]. Default {initial: 1000, max: 30000}. */
  backoff?: { initial?: number; max?: number };
  /** A stream open this long (ms) is healthy even without events: the next
   * failure starts the backoff again. Default 10000. */
  healthyAfter?: number;
  /** The random source of the jitter, in [0, 1] (tests: () => 1 waits
   * exactly the cap). Default Math.random. */
  random?: () => number;
  /** Each event of the app, once, in order. */
  onEvent: (event: SidecastEvent) => void;
  /** sidecast.reset: reload the state from the app. */
  onReset?: (reset: ResetInfo) => void;
  /** Each change of state. */
  onState?: (state: State, info: StateInfo) => void;
  /** Each failure, before the client reopens (call close() here to stop). */
  onError?: (error: SidecastError) => void;
}

export interface Subscription {
  /** Stops for good: no callback after the "closed" state. */
  close(): void;
  /** The id a reopen resumes after (keep it to resume on another page). */
  readonly lastEventId: string | null;
  readonly state: State;
  /** 0 connecting or reconnecting, 1 open, 2 closed, as EventSource. */
  readonly readyState: 0 | 1 | 2;
  /** The transport in use. */
  readonly mode: 'sse' | 'poll';
}

/** Subscribes; throws a TypeError naming the option when one is wrong. */
export declare function subscribe(options: SubscribeOptions): Subscription;
