// The WebSocket feed: connects, parses, reconnects with backoff (1 s doubling
// to 10 s) and re-sends the subscription after every reconnect.

import { parseServerMessage, type ServerMessage, type Topic } from './protocol';

export const BACKOFF_FIRST_MS = 1000;
export const BACKOFF_MAX_MS = 10000;
/** No open socket this long after connecting: give up on that attempt. */
export const CONNECT_TIMEOUT_MS = 10000;
/** No frame at all this long (metrics come every second): the feed is dead. */
export const IDLE_TIMEOUT_MS = 20000;

/** Delay before reconnection attempt `attempt` (0 for the first). */
export function backoffDelay(attempt: number): number {
  const a = Math.max(0, Math.floor(attempt));
  return a >= 4 ? BACKOFF_MAX_MS : Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** a);
}

export type FeedStatus =
  | { status: 'connecting'; attempt: number }
  | { status: 'live' }
  | { status: 'reconnecting'; attempt: number; retryInMs: number };

/** The parts of the browser's WebSocket the client uses (a mock fits too). */
export interface SocketLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onclose: ((ev: unknown) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type SocketFactory = (url: string) => SocketLike;

export interface FeedOptions {
  url: string;
  onMessage: (msg: ServerMessage) => void;
  onStatus: (s: FeedStatus) => void;
  /** Each time the socket opens (first time and every reconnect). */
  onOpen?: () => void;
  socket?: SocketFactory;
  log?: (...args: unknown[]) => void;
  connectTimeoutMs?: number;
  idleTimeoutMs?: number;
}

const OPEN = 1;

export class FeedClient {
  private ws: SocketLike | null = null;
  private topics: Topic[] = [];
  private attempt = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private watchdog: ReturnType<typeof setTimeout> | null = null;
  private stopped = true;
  private readonly opts: FeedOptions;
  private readonly factory: SocketFactory;
  private readonly log: (...args: unknown[]) => void;

  constructor(opts: FeedOptions) {
    this.opts = opts;
    this.factory = opts.socket ?? ((url) => new WebSocket(url) as unknown as SocketLike);
    this.log = opts.log ?? ((...args) => console.warn(...args));
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.attempt = 0;
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    this.clearTimers();
    this.detach(true);
  }

  /** Replaces the subscribed topics; sent now if open, and after each reconnect. */
  setTopics(topics: Topic[]): void {
    this.topics = [...topics];
    if (this.isOpen()) this.send({ type: 'subscribe', topics: this.topics });
  }

  /** Starts a run over the feed; false when the socket is not open. */
  run(scenario: string, n?: number, repeat?: number): boolean {
    const msg: Record<string, unknown> = { type: 'run', scenario };
    if (n !== undefined) msg.n = n;
    if (repeat !== undefined) msg.repeat = repeat;
    return this.send(msg);
  }

  isOpen(): boolean {
    return this.ws !== null && this.ws.readyState === OPEN;
  }

  private send(obj: unknown): boolean {
    if (!this.isOpen()) return false;
    try {
      this.ws!.send(JSON.stringify(obj));
      return true;
    } catch (e) {
      this.log('rusm feed: send failed', e);
      return false;
    }
  }

  private connect(): void {
    this.retryTimer = null;
    if (this.stopped) return;
    this.opts.onStatus({ status: 'connecting', attempt: this.attempt });
    let ws: SocketLike;
    try {
      ws = this.factory(this.opts.url);
    } catch (e) {
      this.log('rusm feed: cannot connect', e);
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    this.arm(this.opts.connectTimeoutMs ?? CONNECT_TIMEOUT_MS, 'connect timeout');
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.attempt = 0;
      this.arm(this.opts.idleTimeoutMs ?? IDLE_TIMEOUT_MS, 'feed silent');
      this.opts.onStatus({ status: 'live' });
      if (this.topics.length > 0) this.send({ type: 'subscribe', topics: this.topics });
      this.opts.onOpen?.();
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.arm(this.opts.idleTimeoutMs ?? IDLE_TIMEOUT_MS, 'feed silent');
      const parsed = parseServerMessage(ev.data);
      if (!parsed.ok) {
        const text = typeof ev.data === 'string' ? ev.data.slice(0, 200) : typeof ev.data;
        this.log(`rusm feed: ignored a malformed message (${parsed.error}):`, text);
        return;
      }
      try {
        this.opts.onMessage(parsed.value);
      } catch (e) {
        this.log('rusm feed: message handler failed', e);
      }
    };
    ws.onerror = () => {
      // A close event follows; reconnection happens there.
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.detach(false);
      this.scheduleReconnect();
    };
  }

  /** (Re)starts the watchdog that drops a connection that went quiet. */
  private arm(ms: number, why: string): void {
    if (this.watchdog !== null) clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => {
      this.watchdog = null;
      this.log(`rusm feed: ${why}, reconnecting`);
      this.detach(true);
      this.scheduleReconnect();
    }, ms);
  }

  private detach(close: boolean): void {
    const ws = this.ws;
    this.ws = null;
    if (this.watchdog !== null) {
      clearTimeout(this.watchdog);
      this.watchdog = null;
    }
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    if (close) {
      try {
        ws.close();
      } catch {
        // Already closing: nothing to do.
      }
    }
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.retryTimer !== null) return;
    const delay = backoffDelay(this.attempt);
    this.attempt++;
    this.opts.onStatus({ status: 'reconnecting', attempt: this.attempt, retryInMs: delay });
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  private clearTimers(): void {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.watchdog !== null) clearTimeout(this.watchdog);
    this.watchdog = null;
  }
}

/** ws:// or wss:// URL of the feed on the page's own host. */
export function feedUrl(loc: { protocol: string; host: string }): string {
  return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}/ws`;
}
